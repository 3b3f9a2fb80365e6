//! The server's state directory: keys, certificates, database, first admin token.
//!
//! `vigosrv init` creates what is missing and keeps what exists, so running it
//! twice changes nothing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use vigo_pki::{FleetCa, SigningKey};

/// Paths inside a state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn bundle_key(&self) -> PathBuf {
        self.root.join("bundle.key")
    }
    /// The key that signs the audit chain; never in the database.
    pub fn audit_key(&self) -> PathBuf {
        self.root.join("audit.key")
    }
    /// The newest signed link of the audit chain.
    pub fn audit_head(&self) -> PathBuf {
        self.root.join("audit.head")
    }
    /// The audit key with its head file.
    pub fn audit_signer(&self) -> anyhow::Result<crate::audit::AuditKey> {
        use anyhow::Context as _;
        crate::audit::AuditKey::load(&self.audit_key(), &self.audit_head()).with_context(|| {
            format!(
                "{}: cannot load the audit key (`vigosrv init` creates what is missing)",
                self.audit_key().display()
            )
        })
    }
    pub fn admin_token(&self) -> PathBuf {
        self.root.join("admin.token")
    }
    /// The file secret provider's directory: one file per `secret:<path>`.
    pub fn secrets_dir(&self) -> PathBuf {
        self.root.join("secrets")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("vigo.db")
    }
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.database().display())
    }
}

/// What `init` did.
#[derive(Debug)]
pub struct InitOutcome {
    pub ca_fingerprint: String,
    /// The first admin token, when this run created it.
    pub admin_token: Option<String>,
    pub created: Vec<String>,
}

/// SHA-256 (hex) of an admin token: admin tokens are 32 random bytes, so a plain hash suffices.
pub fn admin_token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random admin token.
pub fn new_admin_token() -> (String, String) {
    use base64::Engine as _;
    use rand_core::RngCore as _;
    let mut id = [0u8; 4];
    let mut secret = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut id);
    rand_core::OsRng.fill_bytes(&mut secret);
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    (id.clone(), format!("vga_{id}_{secret}"))
}

/// Creates whatever of the state directory is missing. `names` go into the server
/// certificate besides the host name, `localhost` and the loopback addresses.
pub async fn init(dir: &StateDir, names: &[String], store_url: Option<&str>) -> anyhow::Result<InitOutcome> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&dir.root).with_context(|| format!("{}: cannot create", dir.root.display()))?;
    restrict(&dir.root)?;
    let mut created = Vec::new();
    let ca = if dir.ca_dir().join(vigo_pki::ca::CA_CERT_FILE).exists() {
        FleetCa::load(&dir.ca_dir())?
    } else {
        let ca = FleetCa::generate("Vigo fleet CA")?;
        ca.save(&dir.ca_dir())?;
        created.push("fleet CA".to_string());
        ca
    };
    // A server certificate without the fleet server purpose (issued before it
    // existed) is issued anew: clients accept only a certificate that carries it.
    let unmarked = std::fs::read_to_string(dir.server_cert())
        .ok()
        .and_then(|pem| vigo_pki::tls::pem_fingerprint(&pem).ok().map(|_| pem))
        .is_some_and(|pem| !vigo_pki::is_fleet_server_pem(&pem));
    if unmarked || !dir.server_cert().exists() || !dir.server_key().exists() {
        let mut all = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        if let Ok(h) = nix::unistd::gethostname() {
            all.push(h.to_string_lossy().to_string());
        }
        all.extend(names.iter().cloned());
        all.dedup();
        let (cert, key) = ca.issue_server_cert(&all)?;
        write_private(&dir.server_key(), key.as_bytes())?;
        write_private(&dir.server_cert(), cert.as_bytes())?;
        created.push("server certificate".to_string());
    }
    if !dir.bundle_key().exists() {
        SigningKey::generate().save(&dir.bundle_key())?;
        created.push("bundle signing key".to_string());
    }
    if !dir.audit_key().exists() {
        SigningKey::generate().save(&dir.audit_key())?;
        created.push("audit signing key".to_string());
    }
    if !dir.secrets_dir().exists() {
        std::fs::create_dir(dir.secrets_dir())
            .with_context(|| format!("{}: cannot create", dir.secrets_dir().display()))?;
        restrict(&dir.secrets_dir())?;
        created.push(format!("secrets directory ({})", dir.secrets_dir().display()));
    }
    let url = store_url.map(str::to_string).unwrap_or_else(|| dir.sqlite_url());
    let store = vigo_store::Store::open(&url).await?;
    let mut admin_token = None;
    if store.admin_tokens().await?.is_empty() {
        let (id, token) = new_admin_token();
        // The file is on disk (and its directory entry durable) before the database
        // knows the token: a crash in between leaves an unknown token in the file, and
        // the next `init` finds no token in the database and writes a new one. The other
        // order could leave a valid hash with no file, and no way back in.
        write_private(&dir.admin_token(), format!("{token}\n").as_bytes())?;
        store.insert_admin_token(&id, &admin_token_hash(&token), crate::now()).await?;
        let signer = dir.audit_signer()?;
        crate::audit::record(&store, &signer, crate::audit::SYSTEM, "admin_token.create", &id, &serde_json::json!({}))
            .await?;
        created.push(format!("admin token ({})", dir.admin_token().display()));
        admin_token = Some(token);
    }
    Ok(InitOutcome { ca_fingerprint: ca.fingerprint(), admin_token, created })
}

/// Checks the server certificate before serving: it must carry the fleet server
/// purpose (else no client accepts it). Returns every name it answers to.
pub fn check_server_cert(dir: &StateDir) -> anyhow::Result<Vec<String>> {
    let path = dir.server_cert();
    let pem = std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if !vigo_pki::is_fleet_server_pem(&pem) {
        anyhow::bail!(
            "{}: the server certificate lacks the fleet server purpose that clients require; \
             run `vigosrv init` to issue it anew",
            path.display()
        );
    }
    vigo_pki::cert_names(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn restrict(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| anyhow::anyhow!("{}: cannot restrict permissions: {e}", dir.display()))
}

/// Writes a file only root may read, atomically and durably (the file and its
/// directory entry are synced before this returns).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("{}: {e}", path.display());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| anyhow::anyhow!("{}: cannot sync directory: {e}", parent.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If `admin.token` cannot be written, `init` fails with nothing committed, so a
    /// later `init` still creates the first token: the admin is never locked out.
    #[tokio::test]
    async fn failed_token_write_commits_no_token_and_a_rerun_creates_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        std::fs::create_dir_all(&state.root).expect("state dir");
        // A directory where the token file belongs: the rename over it fails.
        std::fs::create_dir(state.admin_token()).expect("obstacle");
        std::fs::write(state.admin_token().join("keep"), b"x").expect("obstacle content");

        let err = init(&state, &[], None).await.expect_err("token write must fail");
        assert!(err.to_string().contains("admin.token"), "{err:#}");
        let store = vigo_store::Store::open(&state.sqlite_url()).await.expect("store");
        assert!(store.admin_tokens().await.expect("tokens").is_empty(), "a token hash without its file");
        let leftovers: Vec<_> = std::fs::read_dir(&state.root)
            .expect("read state dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind: {leftovers:?}");

        std::fs::remove_dir_all(state.admin_token()).expect("clear obstacle");
        let outcome = init(&state, &[], None).await.expect("second init");
        let token = outcome.admin_token.expect("a token on the rerun");
        let on_disk = std::fs::read_to_string(state.admin_token()).expect("token file");
        assert_eq!(on_disk.trim(), token);
        let rows = store.admin_tokens().await.expect("tokens");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sha256, admin_token_hash(&token));
    }
}
