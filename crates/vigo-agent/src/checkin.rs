//! The check-in loop: report traits and queued results, receive the policy, converge.
//!
//! Every interval the agent checks in and then runs a full convergence pass,
//! whether or not the policy changed. A bundle is used only after its signature
//! verifies against the server's bundle key; it is cached on disk so a pass can
//! run from it when the server is unreachable. A bundle from an older publish than
//! the cached one is refused (a replayed or rolled-back bundle), and a cached bundle
//! past its `expires_at` is not used offline. Each pass's report goes to the durable
//! [`Queue`] and leaves it only once the server acknowledges storing it.

use base64::Engine as _;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigo_executors::{Mode, Registry};
use vigo_pki::{PublicKey, SigningKey};
use vigo_proto::{CheckInBody, QueuedReport, Signed, check_in_response};

use crate::client::{Connection, Credentials};
use crate::files::write_atomic;
use crate::paths::{AgentPaths, AgentSettings};
use crate::queue::{BATCH, Queue};
use crate::report::Report;
use crate::runner::Runner;
use vigo_swarm::order::SignedOrder;
use vigo_swarm::scan::Scanner;

/// Check-ins one cycle makes at most to drain a backlog of queued reports.
const MAX_DRAIN_ROUNDS: usize = 20;

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
    /// Written by older agents: their one undelivered report. Moved into the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_report: Option<(u64, String)>,
    /// Sequence number of the newest queued report.
    pub report_seq: u64,
    pub last_checkin: Option<i64>,
    /// When the last cycle ran, and why its check-in failed (`None`: it succeeded).
    #[serde(default)]
    pub last_cycle: Option<i64>,
    #[serde(default)]
    pub last_checkin_error: Option<String>,
    /// The summary of the last convergence pass and the policy version it ran.
    #[serde(default)]
    pub last_summary: Option<crate::report::Summary>,
    #[serde(default)]
    pub last_run_error: Option<String>,
    #[serde(default)]
    pub last_policy: Option<String>,
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
    /// `None` when no pass ran (no usable bundle, or an early check-in without a new policy).
    pub report: Option<Report>,
    pub interval_secs: u32,
    /// Transfers the server ordered to this envoy.
    pub orders: Vec<SignedOrder>,
    /// The server's certificate revocation list, when it sent one (it differed from
    /// the one held, which it now replaces): for the swarm peer port.
    pub revoked: Option<Vec<String>>,
    /// The vigosync scan this check-in reported.
    pub scan: crate::sync::Scan,
}

/// Why a cycle runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The interval elapsed (or `vigo run --once`): check in, then a full convergence pass.
    Interval,
    /// Something changed (a vigosync file, a push from the server): check in at once;
    /// converge only if the check-in brought a new policy.
    Early,
}

/// One check-in followed by a convergence pass (see [`Trigger`]).
pub async fn cycle(
    paths: &AgentPaths,
    conn: &mut Connection,
    scanner: &mut Scanner,
    trigger: Trigger,
) -> anyhow::Result<Cycle> {
    let mut settings = AgentSettings::load(paths)?;
    let mut state = RunState::load(paths);
    // Held for the whole cycle: one convergence pass at a time on this machine.
    let queue = Queue::open(paths)?;
    queue.adopt_legacy(state.report_seq, state.pending_report.take())?;
    let mut traits = crate::cli::traits::collect_all();
    let scan = crate::sync::scan(paths, scanner, &traits);
    if let Some(map) = traits.as_object_mut() {
        map.insert(vigo_swarm::sync::TRAIT.to_string(), serde_json::to_value(&scan.result.trait_)?);
        if !scan.result.overflow.is_empty() {
            // The server shows what this envoy left out of the report, and why.
            map.insert(vigo_swarm::sync::OVERFLOW_TRAIT.to_string(), serde_json::to_value(&scan.result.overflow)?);
        }
    }
    let traits_json = serde_json::to_vec(&traits)?;
    let digest: String = Sha256::digest(&traits_json).iter().map(|b| format!("{b:02x}")).collect();
    let mut checked_in = Ok(());
    let mut orders = Vec::new();
    let mut revoked = None;
    let mut new_policy = false;
    for _ in 0..MAX_DRAIN_ROUNDS {
        let cached = load_bundle(paths).ok();
        let sent = check_in(paths, conn, &settings, &mut state, &queue, (&traits_json, &digest), cached.as_ref()).await;
        if sent.is_err() {
            conn.reset();
        }
        match sent {
            Ok(reply) => {
                if reply.interval >= 15 && reply.interval != settings.interval_secs {
                    settings.interval_secs = reply.interval;
                    settings.save(paths)?;
                }
                new_policy |= reply.new_policy;
                orders = reply.orders;
                revoked = reply.revoked.or(revoked);
                if reply.more_queued {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "check-in failed; converging from the cached bundle");
                checked_in = Err(format!("{e:#}"));
            }
        }
        break;
    }
    let converge_now = trigger == Trigger::Interval || new_policy;
    let report = match usable_bundle(paths, checked_in.is_ok(), now()) {
        Ok(_) if !converge_now => None,
        Ok(bundle) => {
            state.last_policy = Some(bundle.version.clone());
            Some(converge(paths, &bundle, &traits).unwrap_or_else(|e| {
                tracing::error!(error = %format!("{e:#}"), "convergence pass could not run");
                Report::failed(Mode::Enforce, format!("{e:#}"))
            }))
        }
        Err(e) => {
            tracing::info!(reason = %format!("{e:#}"), "no usable policy bundle; nothing to converge");
            None
        }
    };
    if let Some(r) = &report {
        state.report_seq = queue.push(serde_json::to_value(r)?)?;
        state.last_summary = Some(r.summary.clone());
        state.last_run_error = r.error.clone();
    }
    if converge_now {
        state.last_cycle = Some(now());
    }
    state.last_checkin_error = checked_in.as_ref().err().cloned();
    state.save(paths)?;
    Ok(Cycle { checked_in, report, interval_secs: settings.interval_secs, orders, revoked, scan })
}

/// What a successful check-in told the agent.
struct Reply {
    interval: u32,
    /// A full batch was acknowledged and more reports wait: check in again now.
    more_queued: bool,
    /// A new bundle was accepted.
    new_policy: bool,
    orders: Vec<SignedOrder>,
    /// The server's revocation list, saved, when it sent one.
    revoked: Option<Vec<String>>,
}

async fn check_in(
    paths: &AgentPaths,
    conn: &mut Connection,
    settings: &AgentSettings,
    state: &mut RunState,
    queue: &Queue,
    (traits_json, digest): (&[u8], &str),
    cached: Option<&CachedBundle>,
) -> anyhow::Result<Reply> {
    let signing = SigningKey::load(&paths.signing_key())?;
    let queued = queue.oldest(BATCH)?;
    let sent_up_to = queued.last().map_or(0, |e| e.seq);
    let body = CheckInBody {
        envoy: settings.name.clone(),
        traits_digest: digest.to_string(),
        traits_json: (state.traits_sent.as_deref() != Some(digest)).then(|| traits_json.to_vec()),
        policy_version: cached.map(|b| b.version.clone()).unwrap_or_default(),
        reports: queued.iter().map(|e| QueuedReport { seq: e.seq, json: e.report.to_string().into_bytes() }).collect(),
        revocations_digest: crate::revoked::load(paths).digest(),
    };
    let bytes = body.encode_to_vec();
    let sig = vigo_pki::sign_request(&signing, "CheckIn", &bytes, now());
    let signed =
        Signed { body: bytes, timestamp: sig.timestamp, nonce: sig.nonce, signature: sig.signature.into_bytes() };
    let mut client =
        conn.get(&settings.server, settings.grpc_port, || Credentials::load(paths)?.client_config()).await?;
    let reply = client
        .check_in(signed)
        .await
        .map_err(|s| anyhow::anyhow!("server refused the check-in: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    state.last_checkin = Some(now());
    state.traits_sent = if reply.send_traits { None } else { Some(digest.to_string()) };
    // Never forget more than was sent, whatever the server claims.
    let acked = reply.acked_seq.min(sent_up_to);
    queue.ack(acked)?;
    let orders =
        reply.transfer_orders.into_iter().map(|o| SignedOrder { payload: o.payload, signature: o.signature }).collect();
    let revoked = match reply.revoked_certificates {
        Some(list) => Some(crate::revoked::save(paths, &list.sha256)?),
        None => None,
    };
    let new_policy = matches!(reply.policy, Some(check_in_response::Policy::Bundle(_)));
    if let Some(check_in_response::Policy::Bundle(b)) = reply.policy {
        let offered = CachedBundle {
            version: b.version,
            payload: base64::engine::general_purpose::STANDARD.encode(&b.payload),
            signature: String::from_utf8(b.signature).map_err(|_| anyhow::anyhow!("bundle signature is not text"))?,
        };
        accept_bundle(paths, cached, &offered)?;
    }
    let more_queued = queued.len() == BATCH && acked == sent_up_to && !queue.is_empty()?;
    Ok(Reply { interval: reply.interval_secs, more_queued, new_policy, orders, revoked })
}

/// Verifies a bundle the server sent and caches it, unless it comes from an older
/// publish than the cached one: a server must never be able to roll an envoy back.
pub fn accept_bundle(paths: &AgentPaths, cached: Option<&CachedBundle>, offered: &CachedBundle) -> anyhow::Result<()> {
    let meta = Meta::of(&verify(paths, offered)?, &offered.version)?;
    if let Some(current) = cached {
        let have = Meta::of(&verify(paths, current)?, &current.version)?;
        if meta.number < have.number {
            tracing::error!(
                offered = %offered.version,
                cached = %current.version,
                "refusing an older policy bundle; keeping the cached one"
            );
            anyhow::bail!(
                "policy bundle {} refused: it is from publish {}, older than the cached bundle {} (publish {})",
                offered.version,
                meta.number,
                current.version,
                have.number
            );
        }
    }
    write_atomic(&paths.bundle(), &serde_json::to_vec(offered)?, 0o600)?;
    tracing::info!(version = %offered.version, "new policy received");
    Ok(())
}

/// The cached bundle, if its signature verifies.
pub fn load_bundle(paths: &AgentPaths) -> anyhow::Result<CachedBundle> {
    let bytes = std::fs::read(paths.bundle()).map_err(|e| anyhow::anyhow!("{}: {e}", paths.bundle().display()))?;
    let b: CachedBundle =
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", paths.bundle().display()))?;
    verify(paths, &b)?;
    Ok(b)
}

/// The cached bundle if it may be converged from now: its signature verifies and,
/// when the server was not reached this cycle, it has not expired. Right after a
/// check-in the server has just vouched for it, whatever its age.
pub fn usable_bundle(paths: &AgentPaths, checked_in: bool, now: i64) -> anyhow::Result<CachedBundle> {
    let bundle = load_bundle(paths)?;
    if checked_in {
        return Ok(bundle);
    }
    let meta = Meta::of(&verify(paths, &bundle)?, &bundle.version)?;
    if let Some(at) = meta.expires_at.filter(|at| *at <= now) {
        tracing::error!(version = %bundle.version, expired_at = at, "cached policy bundle expired; not converging offline");
        anyhow::bail!(
            "cached policy bundle {} expired at {at} (unix seconds) and the server is unreachable: \
             not converging until a check-in succeeds",
            bundle.version
        );
    }
    Ok(bundle)
}

fn verify(paths: &AgentPaths, b: &CachedBundle) -> anyhow::Result<Vec<u8>> {
    let key_text = std::fs::read_to_string(paths.bundle_pub())
        .map_err(|e| anyhow::anyhow!("{}: {e}", paths.bundle_pub().display()))?;
    let key = PublicKey::from_b64(key_text.trim())?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&b.payload)
        .map_err(|e| anyhow::anyhow!("policy bundle {} refused: payload is not base64: {e}", b.version))?;
    vigo_pki::verify_bundle(&key, &payload, &b.signature)
        .map_err(|e| anyhow::anyhow!("policy bundle {} refused: {e}", b.version))?;
    Ok(payload)
}

/// The signed facts about a bundle that decide whether it may be used.
#[derive(Deserialize)]
struct Meta {
    number: i64,
    #[serde(default)]
    expires_at: Option<i64>,
}

impl Meta {
    fn of(payload: &[u8], version: &str) -> anyhow::Result<Self> {
        serde_json::from_slice(payload)
            .map_err(|e| anyhow::anyhow!("policy bundle {version}: payload has no publish number: {e}"))
    }
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

/// Runs a full convergence pass from a verified bundle; the report never holds a
/// secret value the bundle carried.
fn converge(paths: &AgentPaths, bundle: &CachedBundle, traits: &serde_json::Value) -> anyhow::Result<Report> {
    let payload = base64::engine::general_purpose::STANDARD.decode(&bundle.payload)?;
    let p: Payload = serde_json::from_slice(&payload)?;
    let secrets = crate::load::RunSecrets::from_payload(paths, &payload);
    let sources = vigo_model::source::Sources {
        root: std::path::PathBuf::new(),
        modules: p.modules.into_iter().map(|m| (m.file.into(), m.text)).collect(),
        templates: p.templates,
    };
    let registry = Registry::builtin();
    let (config, plan) = vigo_model::validate::compile(&sources, &registry)
        .map_err(|d| anyhow::anyhow!("policy {} does not validate here:\n{d}", bundle.version))?;
    let mut report =
        Runner { registry: &registry, traits, mode: Mode::Enforce }.run_with_secrets(&config, &plan, &secrets);
    report.scrub(&secrets.scrubber());
    Ok(report)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        paths: AgentPaths,
        key: SigningKey,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = AgentPaths { etc: dir.path().join("etc"), state: dir.path().join("state") };
        std::fs::create_dir_all(&paths.state).expect("state dir");
        let key = SigningKey::generate();
        std::fs::write(paths.bundle_pub(), key.public_key_b64()).expect("bundle.pub");
        Fixture { _dir: dir, paths, key }
    }

    fn bundle(key: &SigningKey, number: i64, expires_at: Option<i64>) -> CachedBundle {
        let payload = serde_json::json!({
            "number": number,
            "modules": [{"file": "m.yaml", "text": format!("name: m{number}\nresources: []\n")}],
            "templates": {},
            "expires_at": expires_at,
        });
        let bytes = serde_json::to_vec(&payload).expect("json");
        CachedBundle {
            version: format!("{number}-abc"),
            payload: base64::engine::general_purpose::STANDARD.encode(&bytes),
            signature: vigo_pki::sign_bundle(key, &bytes),
        }
    }

    fn cached_version(paths: &AgentPaths) -> String {
        load_bundle(paths).expect("cached bundle").version
    }

    #[test]
    fn newer_or_equal_publishes_replace_the_cache_and_older_ones_are_refused() {
        let f = fixture();
        let (v3, v5) = (bundle(&f.key, 3, None), bundle(&f.key, 5, None));
        accept_bundle(&f.paths, None, &v3).expect("first bundle");
        accept_bundle(&f.paths, Some(&v3), &v5).expect("newer");
        assert_eq!(cached_version(&f.paths), "5-abc");
        let err = accept_bundle(&f.paths, Some(&v5), &v3).expect_err("older").to_string();
        assert!(err.contains("3-abc refused") && err.contains("older than the cached bundle 5-abc"), "{err}");
        assert_eq!(cached_version(&f.paths), "5-abc", "the cache is kept");
        // The same publish built for another module set (traits changed) is fine.
        let mut other = bundle(&f.key, 5, None);
        other.version = "5-def".into();
        accept_bundle(&f.paths, Some(&v5), &other).expect("same publish");
        assert_eq!(cached_version(&f.paths), "5-def");
    }

    #[test]
    fn tampered_or_foreign_bundles_are_refused_and_nothing_is_cached() {
        let f = fixture();
        let good = bundle(&f.key, 2, None);
        let mut flipped = good.clone();
        let mut bytes = base64::engine::general_purpose::STANDARD.decode(&good.payload).expect("b64");
        bytes[10] ^= 0x01;
        flipped.payload = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let foreign = bundle(&SigningKey::generate(), 2, None);
        for (what, b) in [("flipped byte", &flipped), ("foreign key", &foreign)] {
            let err = accept_bundle(&f.paths, None, b).expect_err(what).to_string();
            assert!(err.contains("policy bundle 2-abc refused"), "{what}: {err}");
            assert!(!f.paths.bundle().exists(), "{what}: cached");
        }
        // The same bundles already on disk (a tampered cache) are refused too.
        for (what, b) in [("flipped byte", &flipped), ("foreign key", &foreign)] {
            std::fs::write(f.paths.bundle(), serde_json::to_vec(b).expect("json")).expect("write cache");
            let err = usable_bundle(&f.paths, false, now()).expect_err(what).to_string();
            assert!(err.contains("refused"), "{what}: {err}");
        }
    }

    #[test]
    fn an_expired_cache_is_refused_offline_only() {
        let f = fixture();
        let t = now();
        accept_bundle(&f.paths, None, &bundle(&f.key, 1, Some(t - 1))).expect("accept");
        let err = usable_bundle(&f.paths, false, t).expect_err("expired").to_string();
        assert!(err.contains("expired at") && err.contains("server is unreachable"), "{err}");
        assert!(usable_bundle(&f.paths, true, t).is_ok(), "the server just vouched for it");
        accept_bundle(&f.paths, None, &bundle(&f.key, 2, Some(t + 60))).expect("accept");
        assert!(usable_bundle(&f.paths, false, t).is_ok(), "not yet expired");
        accept_bundle(&f.paths, None, &bundle(&f.key, 3, None)).expect("accept");
        assert!(usable_bundle(&f.paths, false, i64::MAX).is_ok(), "no expiry by default");
    }
}
