//! The check-in loop: report traits and the last run, receive the policy, converge.
//!
//! Every interval the agent checks in and then runs a full convergence pass,
//! whether or not the policy changed. A bundle is used only after its signature
//! verifies against the server's bundle key; it is cached on disk so a pass can
//! run from it when nothing new arrives.

use std::time::Duration;

use base64::Engine as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigo_executors::{Mode, Registry};
use vigo_pki::{PublicKey, SigningKey};
use vigo_proto::{check_in_response, CheckInBody, Signed};

use crate::files::write_atomic;
use crate::paths::{AgentPaths, AgentSettings};
use crate::report::Report;
use crate::runner::Runner;

/// A bundle as cached on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedBundle {
    pub version: String,
    pub payload: String,
    pub signature: String,
}

/// What the agent remembers between check-ins.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Digest of the traits the server last received.
    pub traits_sent: Option<String>,
    /// The last report not yet delivered, with its sequence number.
    pub pending_report: Option<(u64, String)>,
    pub report_seq: u64,
    pub last_checkin: Option<i64>,
}

impl RunState {
    pub fn load(paths: &AgentPaths) -> Self {
        std::fs::read(paths.run_state()).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
    fn save(&self, paths: &AgentPaths) -> anyhow::Result<()> {
        write_atomic(&paths.run_state(), &serde_json::to_vec(self)?, 0o600)
    }
}

/// What one cycle did.
pub struct Cycle {
    pub checked_in: Result<(), String>,
    pub report: Option<Report>,
    pub interval_secs: u32,
}

/// One check-in followed by a convergence pass.
pub async fn cycle(paths: &AgentPaths) -> anyhow::Result<Cycle> {
    let mut settings = AgentSettings::load(paths)?;
    let mut state = RunState::load(paths);
    let traits = crate::cli::traits::collect_all();
    let traits_json = serde_json::to_vec(&traits)?;
    let digest: String = Sha256::digest(&traits_json).iter().map(|b| format!("{b:02x}")).collect();
    let cached = load_bundle(paths).ok();
    let checked_in = match check_in(paths, &settings, &mut state, &traits_json, &digest, cached.as_ref()).await {
        Ok(interval) => {
            if interval >= 15 && interval != settings.interval_secs {
                settings.interval_secs = interval;
                settings.save(paths)?;
            }
            Ok(())
        }
        Err(e) => {
            tracing::warn!(error = %e, "check-in failed; converging from the cached bundle");
            Err(e.to_string())
        }
    };
    let report = match load_bundle(paths) {
        Ok(bundle) => Some(converge(&bundle, &traits)?),
        Err(e) => {
            tracing::info!(reason = %e, "no usable policy bundle yet; nothing to converge");
            None
        }
    };
    if let Some(r) = &report {
        state.report_seq += 1;
        state.pending_report = Some((state.report_seq, serde_json::to_string(r)?));
    }
    state.save(paths)?;
    Ok(Cycle { checked_in, report, interval_secs: settings.interval_secs })
}

async fn check_in(
    paths: &AgentPaths,
    settings: &AgentSettings,
    state: &mut RunState,
    traits_json: &[u8],
    digest: &str,
    cached: Option<&CachedBundle>,
) -> anyhow::Result<u32> {
    let read = |p: std::path::PathBuf| std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let (ca, cert) = (read(paths.ca())?, read(paths.tls_cert())?);
    let key = vigo_pki::EnvoyTlsKey::load(&paths.tls_key())?.private_key_pem();
    let signing = SigningKey::load(&paths.signing_key())?;
    let tls = vigo_pki::client_config(&ca, Some((&cert, &key)))?;
    let body = CheckInBody {
        envoy: settings.name.clone(),
        traits_digest: digest.to_string(),
        traits_json: (state.traits_sent.as_deref() != Some(digest)).then(|| traits_json.to_vec()),
        policy_version: cached.map(|b| b.version.clone()).unwrap_or_default(),
        last_report_json: state.pending_report.as_ref().map(|(_, r)| r.clone().into_bytes()),
        report_seq: state.pending_report.as_ref().map_or(0, |(s, _)| *s),
    };
    let bytes = body.encode_to_vec();
    let sig = vigo_pki::sign_request(&signing, "CheckIn", &bytes, now());
    let signed = Signed { body: bytes, timestamp: sig.timestamp, nonce: sig.nonce, signature: sig.signature.into_bytes() };
    let mut client = crate::client::connect(&settings.server, settings.grpc_port, tls).await?;
    let reply = client
        .check_in(signed)
        .await
        .map_err(|s| anyhow::anyhow!("server refused the check-in: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    state.last_checkin = Some(now());
    state.traits_sent = if reply.send_traits { None } else { Some(digest.to_string()) };
    if body.last_report_json.is_some() {
        state.pending_report = None;
    }
    if let Some(check_in_response::Policy::Bundle(b)) = reply.policy {
        let cached = CachedBundle {
            version: b.version,
            payload: base64::engine::general_purpose::STANDARD.encode(&b.payload),
            signature: String::from_utf8(b.signature).map_err(|_| anyhow::anyhow!("bundle signature is not text"))?,
        };
        verify(paths, &cached)?;
        write_atomic(&paths.bundle(), &serde_json::to_vec(&cached)?, 0o600)?;
        tracing::info!(version = %cached.version, "new policy received");
    }
    Ok(reply.interval_secs)
}

/// The cached bundle, if its signature verifies.
pub fn load_bundle(paths: &AgentPaths) -> anyhow::Result<CachedBundle> {
    let bytes = std::fs::read(paths.bundle()).map_err(|e| anyhow::anyhow!("{}: {e}", paths.bundle().display()))?;
    let b: CachedBundle = serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", paths.bundle().display()))?;
    verify(paths, &b)?;
    Ok(b)
}

fn verify(paths: &AgentPaths, b: &CachedBundle) -> anyhow::Result<Vec<u8>> {
    let key_text = std::fs::read_to_string(paths.bundle_pub()).map_err(|e| anyhow::anyhow!("{}: {e}", paths.bundle_pub().display()))?;
    let key = PublicKey::from_b64(key_text.trim())?;
    let payload = base64::engine::general_purpose::STANDARD.decode(&b.payload)?;
    vigo_pki::verify_bundle(&key, &payload, &b.signature)
        .map_err(|e| anyhow::anyhow!("policy bundle {} refused: {e}", b.version))?;
    Ok(payload)
}

#[derive(Deserialize)]
struct Payload {
    modules: Vec<ModuleFile>,
    templates: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ModuleFile {
    file: String,
    text: String,
}

/// Runs a full convergence pass from a verified bundle.
fn converge(bundle: &CachedBundle, traits: &serde_json::Value) -> anyhow::Result<Report> {
    let payload = base64::engine::general_purpose::STANDARD.decode(&bundle.payload)?;
    let p: Payload = serde_json::from_slice(&payload)?;
    let sources = vigo_model::source::Sources {
        root: std::path::PathBuf::new(),
        modules: p.modules.into_iter().map(|m| (m.file.into(), m.text)).collect(),
        templates: p.templates,
    };
    let registry = Registry::builtin();
    let (config, plan) = vigo_model::validate::compile(&sources, &registry)
        .map_err(|d| anyhow::anyhow!("policy {} does not validate here:\n{d}", bundle.version))?;
    Ok(Runner { registry: &registry, traits, mode: Mode::Enforce }.run(&config, &plan))
}

/// Check in and converge every interval (plus up to 10% splay), until stopped.
pub async fn run_forever(paths: &AgentPaths) -> anyhow::Result<()> {
    loop {
        let interval = match cycle(paths).await {
            Ok(c) => {
                if let Some(r) = &c.report {
                    tracing::info!(changed = r.summary.changed, failed = r.summary.failed, "convergence pass done");
                }
                c.interval_secs
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cycle failed");
                AgentSettings::load(paths).map(|s| s.interval_secs).unwrap_or(60)
            }
        };
        let splay = rand_splay(interval);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(u64::from(interval)) + splay) => {}
            _ = terminate() => return Ok(()),
        }
    }
}

fn rand_splay(interval: u32) -> Duration {
    let max_ms = u64::from(interval) * 100;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    Duration::from_millis(u64::from(nanos) % max_ms.max(1))
}

async fn terminate() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut s) => {
            tokio::select! { _ = s.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        }
        Err(_) => std::future::pending().await,
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
