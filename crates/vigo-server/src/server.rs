//! The server's shared state and the operations the gRPC and REST layers call.
//!
//! Both front ends are thin: they translate wire formats and call these methods.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use vigo_model::Diagnostics;
use vigo_pki::{RevocationList, SigningKey, Verifier};
use vigo_store::{EnvoyRow, Store, TokenRow, VersionRow};

use crate::fleet::{Envoy, FleetIndex};
use crate::policy::{self, Policy, SignedBundle};
use crate::settings::Settings;
use crate::state_dir::{StateDir, admin_token_hash};
use crate::writer::Writer;

/// bcrypt cost for enrollment tokens.
pub const TOKEN_COST: u32 = 10;

/// Errors of admin operations, each with a stable code for the REST API.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("configuration is invalid: {} problem(s)", .0.len())]
    InvalidConfig(Diagnostics),
    #[error("storage: {0}")]
    Store(#[from] vigo_store::StoreError),
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    pub fn code(&self) -> &'static str {
        match self {
            OpError::NotFound(_) => "not_found",
            OpError::Invalid(_) => "invalid_request",
            OpError::Conflict(_) => "conflict",
            OpError::InvalidConfig(_) => "invalid_config",
            OpError::Store(_) | OpError::Internal(_) => "internal",
        }
    }
}

/// A token just created; `token` is shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    pub id: String,
    pub token: String,
    pub hosts: String,
    pub expires_at: Option<i64>,
}

/// What a publish did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Published {
    pub number: i64,
    pub modules: usize,
    pub envoys: usize,
}

/// Fleet summary.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetStatus {
    pub envoys: usize,
    pub active: usize,
    pub offline: usize,
    pub never_checked_in: usize,
    pub revoked: usize,
    pub policy_number: Option<i64>,
    pub interval_secs: u32,
    pub states: std::collections::BTreeMap<String, usize>,
}

pub struct Inner {
    pub state: StateDir,
    pub config_dir: PathBuf,
    pub settings: Settings,
    pub store: Store,
    /// Shared with vigosync, which names the envoys' certificates in transfer orders.
    pub fleet: Arc<FleetIndex>,
    pub verifier: Verifier,
    /// Checks request signatures in batches.
    pub signatures: crate::signatures::SignatureChecker,
    pub revoked: RevocationList,
    pub bundle_key: Arc<SigningKey>,
    pub ca: vigo_pki::FleetCa,
    /// The fleet CA's endorsement of `bundle_key`, handed to enrolling agents.
    pub bundle_key_endorsement: Vec<u8>,
    /// Every name the server certificate answers to; no envoy may enroll as one.
    pub server_names: Vec<String>,
    pub writer: Writer,
    pub audit: crate::audit::AuditLog,
    /// Resolves `secret:` references at publish (and when the policy is rebuilt).
    pub secrets: Arc<dyn crate::secrets::SecretProvider>,
    pub vigosync: crate::vigosync::Vigosync,
    /// Open `Events` streams, to ask envoys to check in now.
    pub events: Arc<crate::events::Hub>,
    admin_hashes: std::sync::RwLock<Vec<String>>,
    publish_lock: tokio::sync::Mutex<()>,
}

/// Cheap to clone; shared by every task.
#[derive(Clone)]
pub struct Server(pub Arc<Inner>);

impl std::ops::Deref for Server {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Server {
    /// Loads state from the store into memory and starts the writer.
    pub async fn open(
        state: StateDir,
        config_dir: PathBuf,
        settings: Settings,
        store: Store,
    ) -> anyhow::Result<(Self, crate::writer::WriterHandle)> {
        let ca = vigo_pki::FleetCa::load(&state.ca_dir())?;
        let bundle_key = Arc::new(SigningKey::load(&state.bundle_key())?);
        let bundle_key_endorsement = ca.endorse_bundle_key(&bundle_key.public_key())?;
        let server_names = crate::state_dir::check_server_cert(&state)?;
        let fleet = Arc::new(FleetIndex::default());
        let revoked = RevocationList::new();
        for row in store.envoys().await? {
            if row.revoked_at.is_some() {
                let _ = revoked.revoke(&row.cert_fingerprint);
            }
            fleet.insert(envoy_from_row(row)?);
        }
        let secrets = crate::secrets::from_settings(&settings.secrets, &state);
        if let Some(active) = store.active_version().await? {
            let policy = restore_policy(&store, &active, bundle_key.clone(), secrets.clone()).await?;
            fleet.set_policy(Arc::new(policy));
        }
        let admin_hashes = store.admin_tokens().await?.into_iter().map(|t| t.sha256).collect();
        let vigosync = restore_vigosync(&store, &fleet, bundle_key.clone()).await?.with_certificates(fleet.clone());
        let (writer, handle) = Writer::start(store.clone());
        let audit = crate::audit::AuditLog::open(&store, state.audit_signer()?).await?;
        let inner = Inner {
            state,
            config_dir,
            settings,
            store,
            fleet,
            verifier: Verifier::default(),
            signatures: crate::signatures::SignatureChecker::start(),
            revoked,
            bundle_key,
            ca,
            bundle_key_endorsement,
            server_names,
            writer,
            audit,
            secrets,
            vigosync,
            events: Arc::default(),
            admin_hashes: std::sync::RwLock::new(admin_hashes),
            publish_lock: tokio::sync::Mutex::new(()),
        };
        Ok((Self(Arc::new(inner)), handle))
    }

    pub fn is_admin(&self, token: &str) -> bool {
        let hash = admin_token_hash(token.trim());
        let hashes = self.admin_hashes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        hashes.iter().any(|h| constant_time_eq(h.as_bytes(), hash.as_bytes()))
    }

    pub async fn create_token(&self, hosts: &str, ttl_secs: Option<u64>) -> Result<CreatedToken, OpError> {
        if hosts.trim().is_empty() {
            return Err(OpError::Invalid("`hosts` must be a hostname glob such as `web-*`".into()));
        }
        glob::Pattern::new(hosts).map_err(|e| OpError::Invalid(format!("bad hosts glob `{hosts}`: {e}")))?;
        let new = vigo_pki::NewToken::generate(TOKEN_COST).map_err(|e| OpError::Internal(e.to_string()))?;
        let now = crate::now();
        let expires_at = ttl_secs.map(|t| now + i64::try_from(t).unwrap_or(i64::MAX / 2));
        let row = TokenRow {
            id: new.id.clone(),
            hash: new.hash,
            hosts: hosts.to_string(),
            created_at: now,
            expires_at,
            used_at: None,
            used_by: None,
            revoked: false,
        };
        self.store.insert_token(&row).await?;
        tracing::info!(token = %row.id, hosts, "enrollment token created");
        self.audit("token.create", &row.id, serde_json::json!({"hosts": hosts, "expires_at": expires_at})).await;
        Ok(CreatedToken { id: new.id, token: new.secret, hosts: hosts.to_string(), expires_at })
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRow>, OpError> {
        Ok(self.store.tokens().await?)
    }

    pub async fn revoke_token(&self, id: &str) -> Result<(), OpError> {
        if self.store.revoke_token(id).await? {
            tracing::info!(token = id, "enrollment token revoked");
            self.audit("token.revoke", id, serde_json::json!({})).await;
            Ok(())
        } else {
            Err(OpError::NotFound(format!("no token `{id}`")))
        }
    }

    pub fn envoys(&self) -> Vec<Envoy> {
        self.fleet.all()
    }

    pub fn envoy(&self, name: &str) -> Result<Envoy, OpError> {
        self.fleet.get(name).ok_or_else(|| OpError::NotFound(format!("no envoy `{name}`")))
    }

    /// Cuts an envoy off at once: its certificate is refused at the next handshake
    /// and its signature at the next request.
    pub async fn revoke_envoy(&self, name: &str) -> Result<(), OpError> {
        let now = crate::now();
        let fp = self
            .fleet
            .update(name, |e| {
                e.revoked_at.get_or_insert(now);
                e.cert_fingerprint.clone()
            })
            .ok_or_else(|| OpError::NotFound(format!("no envoy `{name}`")))?;
        let _ = self.revoked.revoke(&fp);
        self.events.disconnect(name);
        for target in self.vigosync.revoke(name) {
            self.events.poke(&target, crate::events::REASON_ORDERS);
        }
        self.store.revoke_envoy(name, now).await?;
        tracing::warn!(envoy = name, "envoy revoked");
        self.audit("envoy.revoke", name, serde_json::json!({"cert_fingerprint": fp})).await;
        Ok(())
    }

    /// Validates the configuration directory and, if it is valid, activates it.
    pub async fn publish(&self, message: &str) -> Result<Published, OpError> {
        let _guard = self.publish_lock.lock().await;
        let number = self.store.versions().await?.first().map_or(1, |v| v.number + 1);
        let dir = self.config_dir.clone();
        let key = self.bundle_key.clone();
        let provider = self.secrets.clone();
        let compiled = tokio::task::spawn_blocking(move || Policy::compile_dir(&dir, number, key, &*provider))
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let policy = match compiled {
            Ok(policy) => policy,
            Err(d) => {
                tracing::warn!(problems = d.len(), "publish refused: invalid configuration");
                self.audit(
                    "publish.failed",
                    "configuration",
                    serde_json::json!({"message": message, "problems": d.len()}),
                )
                .await;
                return Err(OpError::InvalidConfig(d));
            }
        };
        let envoys = self.fleet.all();
        for e in &envoys {
            let empty = serde_json::Value::Object(Default::default());
            let traits = e.traits.as_deref().unwrap_or(&empty);
            let modules = policy.assignments.modules_for(&e.name, traits);
            policy.bundle_for(&modules, &e.name, e.age_recipient.as_deref());
        }
        let mut rows = vec![bundle_row(number, policy::SNAPSHOT_KEY, &policy.snapshot_bundle())];
        rows.extend(policy.built().iter().map(|(k, b)| bundle_row(number, k, b)));
        let version = VersionRow { number, message: message.to_string(), created_at: crate::now(), active: true };
        self.store.insert_version(&version, &rows).await?;
        let modules = policy.module_count();
        let secrets = policy.secret_count();
        self.fleet.set_policy(Arc::new(policy));
        // Connected daemons fetch the new bundle now rather than at their next interval.
        self.events.poke_all(crate::events::REASON_PUBLISH);
        tracing::info!(number, modules, secrets, "configuration published");
        self.audit("publish", &number.to_string(), serde_json::json!({"message": message, "modules": modules})).await;
        Ok(Published { number, modules, envoys: envoys.len() })
    }

    pub async fn versions(&self) -> Result<Vec<VersionRow>, OpError> {
        Ok(self.store.versions().await?)
    }

    pub fn status(&self) -> FleetStatus {
        let now = crate::now();
        let interval = i64::from(self.settings.interval_secs);
        let all = self.fleet.all();
        let live: Vec<&Envoy> = all.iter().filter(|e| e.revoked_at.is_none()).collect();
        let fresh = |e: &&&Envoy| e.last_checkin.is_some_and(|t| now - t <= 3 * interval);
        let mut states = std::collections::BTreeMap::new();
        for e in &all {
            *states.entry(crate::convergence::state_of(e, now, interval).as_str().to_string()).or_insert(0) += 1;
        }
        FleetStatus {
            envoys: live.len(),
            active: live.iter().filter(fresh).count(),
            offline: live.iter().filter(|e| e.last_checkin.is_some_and(|t| now - t > 3 * interval)).count(),
            never_checked_in: live.iter().filter(|e| e.last_checkin.is_none()).count(),
            revoked: all.len() - live.len(),
            policy_number: self.fleet.policy().map(|p| p.number),
            interval_secs: self.settings.interval_secs,
            states,
        }
    }
}

fn bundle_row(number: i64, set_key: &str, b: &SignedBundle) -> vigo_store::BundleRow {
    vigo_store::BundleRow {
        number,
        set_key: set_key.to_string(),
        version: b.version.clone(),
        payload: b.payload.clone(),
        signature: b.signature.clone(),
    }
}

async fn restore_policy(
    store: &Store,
    active: &VersionRow,
    key: Arc<SigningKey>,
    secrets: Arc<dyn crate::secrets::SecretProvider>,
) -> anyhow::Result<Policy> {
    let rows = store.bundles(active.number).await?;
    let snapshot = rows
        .iter()
        .find(|r| r.set_key == policy::SNAPSHOT_KEY)
        .ok_or_else(|| anyhow::anyhow!("version {} has no snapshot bundle", active.number))?;
    let payload: policy::Payload = serde_json::from_slice(&snapshot.payload)?;
    let mut policy = Policy::from_snapshot(payload, key)
        .map_err(|d| anyhow::anyhow!("stored version {} no longer validates:\n{d}", active.number))?;
    // Values are never stored: they come from the provider again. Stored bundles keep
    // what they sealed; a failure only affects bundles built from now on.
    let (policy, failed) = tokio::task::spawn_blocking(move || {
        let failed = policy.resolve_secrets(&*secrets);
        (policy, failed)
    })
    .await
    .map_err(|e| anyhow::anyhow!("resolving secrets: {e}"))?;
    for u in failed {
        tracing::error!(
            version = active.number,
            secret = %u.path,
            reason = %u.reason,
            "secret could not be resolved; bundles built now go without it"
        );
    }
    for r in rows.into_iter().filter(|r| r.set_key != policy::SNAPSHOT_KEY) {
        policy.seed(r.set_key, SignedBundle { version: r.version, payload: r.payload, signature: r.signature });
    }
    Ok(policy)
}

/// vigosync's state from the stored traits and seen versions.
async fn restore_vigosync(
    store: &Store,
    fleet: &FleetIndex,
    key: Arc<SigningKey>,
) -> anyhow::Result<crate::vigosync::Vigosync> {
    let seen = store.vigosync_seen().await?;
    let envoys = fleet.all();
    let restored = envoys.iter().filter_map(|e| {
        Some(crate::vigosync::Restored {
            name: &e.name,
            traits: e.traits.as_deref()?,
            revoked: e.revoked_at.is_some(),
            enrolled_at: e.enrolled_at,
            last_checkin: e.last_checkin,
        })
    });
    Ok(crate::vigosync::Vigosync::new(key, restored, seen))
}

pub fn envoy_from_row(row: EnvoyRow) -> anyhow::Result<Envoy> {
    use base64::Engine as _;
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(&row.signing_key);
    let key = vigo_pki::PublicKey::from_b64(&key_b64).map_err(|e| anyhow::anyhow!("envoy {}: {e}", row.name))?;
    let traits = row.traits_json.as_deref().and_then(|t| serde_json::from_str(t).ok()).map(Arc::new);
    Ok(Envoy {
        traits_digest: row.traits_json.as_deref().map(crate::digest_hex),
        name: row.name,
        key,
        cert_fingerprint: row.cert_fingerprint,
        enrolled_at: row.enrolled_at,
        revoked_at: row.revoked_at,
        last_checkin: row.last_checkin,
        traits,
        policy_version: row.policy_version,
        reports: crate::fleet::ReportProgress::loaded(
            row.last_report_json.as_deref().map(|json| crate::runs::Streak {
                seq: u64::try_from(row.report_seq).unwrap_or(0),
                outcome: crate::runs::stored_outcome(json),
                repeats: row.repeats,
            }),
            u64::try_from(row.reports_stored).unwrap_or(0),
        ),
        last_report: row.last_report_json.map(Arc::new),
        bundle: None,
        age_recipient: row.age_recipient,
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
