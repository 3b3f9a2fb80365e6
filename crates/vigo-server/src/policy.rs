//! A published policy: the validated configuration of one version, and the
//! signed bundles built from it (once per distinct module set, kept as bytes).
//!
//! `secret:<path>` references are resolved once per publish (and again when the
//! policy is rebuilt after a restart) into values held in memory only. A module set
//! that uses secrets gets one bundle per envoy instead, carrying only the secrets its
//! modules use, each sealed (age) to the recipient that envoy registered at enrollment.
//! The snapshot keeps the `secret:` text, never a value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigo_model::assign::Assignments;
use vigo_model::secretref::{self, SecretPath};
use vigo_model::{Diagnostic, Diagnostics, Loc, Secret};
use vigo_pki::SigningKey;

use crate::secrets::SecretProvider;

/// The key of the snapshot bundle: the whole published configuration, used to
/// rebuild the policy after a restart without re-reading (possibly edited) files.
pub const SNAPSHOT_KEY: &str = "*";

/// The assignments file, relative to the configuration directory (as problems name it).
pub const ASSIGNMENTS: &str = "assignments.yaml";

/// One module file as shipped in a bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ModuleFile {
    pub file: String,
    pub text: String,
}

/// What a bundle payload holds (JSON); the agent compiles it like a local config.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payload {
    pub number: i64,
    pub modules: Vec<ModuleFile>,
    pub templates: BTreeMap<String, String>,
    /// Only in the snapshot: the assignments file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignments: Option<String>,
    /// Unix seconds after which an agent must not converge from this bundle without a
    /// fresh check-in (publish time plus `bundle_expiry_secs`); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Per-envoy bundles only: each secret path the modules use, as standard base64 of
    /// the value sealed (age) to the envoy's recipient.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Per-envoy bundles only: secret paths the modules use that the envoy does not get,
    /// with the reason (e.g. it registered no age key at enrollment).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets_withheld: BTreeMap<String, String>,
}

/// A signed bundle, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBundle {
    pub version: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// The bundle version: publish number plus a digest of the content.
pub fn version_of(number: i64, payload: &[u8]) -> String {
    let digest: String = Sha256::digest(payload).iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{number}-{digest}")
}

struct ModuleSource {
    file: ModuleFile,
    templates: Vec<String>,
    /// The secret references its resources use.
    secrets: BTreeSet<SecretPath>,
}

/// A secret reference that could not be resolved, with the resources that use it.
#[derive(Debug)]
pub struct Unresolved {
    pub path: SecretPath,
    pub used_at: Vec<Loc>,
    pub reason: String,
    pub hint: String,
}

/// One published version.
pub struct Policy {
    pub number: i64,
    pub assignments: Assignments,
    modules: HashMap<String, ModuleSource>,
    templates: BTreeMap<String, String>,
    key: Arc<SigningKey>,
    bundles: Mutex<HashMap<String, Arc<SignedBundle>>>,
    snapshot: Payload,
    /// Every secret reference, with the resources that use it.
    secret_refs: BTreeMap<SecretPath, Vec<Loc>>,
    /// Resolved values: in memory only, never persisted or logged.
    secrets: BTreeMap<SecretPath, Secret>,
    /// References the provider could not resolve (after a restart), with the reason.
    unresolved: BTreeMap<SecretPath, String>,
}

impl Policy {
    /// Validates a configuration directory into a policy and resolves every secret it
    /// references; every problem at once on failure (an unresolvable secret included).
    pub fn compile_dir(
        config_dir: &Path,
        number: i64,
        key: Arc<SigningKey>,
        provider: &dyn SecretProvider,
    ) -> Result<Self, Diagnostics> {
        let sources = vigo_model::source::read(config_dir)?;
        let assignments_path = config_dir.join(ASSIGNMENTS);
        let assignments = match std::fs::read_to_string(&assignments_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(Diagnostics(vec![Diagnostic::new(
                    Loc::file(&assignments_path),
                    format!("cannot read: {e}"),
                )]));
            }
        };
        let mut diags = Diagnostics::default();
        let expiry = match crate::settings::Settings::load(config_dir) {
            Ok(s) => s.bundle_expiry_secs,
            Err(e) => {
                diags.push(Diagnostic::new(Loc::file(Path::new("server.yaml")), e.to_string()));
                None
            }
        };
        let expires_at = expiry.map(|secs| crate::now().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)));
        let modules: Vec<ModuleFile> = sources
            .modules
            .iter()
            .map(|(path, text)| ModuleFile {
                file: path.strip_prefix(&sources.root).unwrap_or(path).display().to_string(),
                text: text.clone(),
            })
            .collect();
        let snapshot = Payload {
            number,
            modules,
            templates: sources.templates.clone(),
            assignments,
            expires_at,
            secrets: BTreeMap::new(),
            secrets_withheld: BTreeMap::new(),
        };
        match Self::from_snapshot(snapshot, key) {
            Ok(mut p) if diags.is_empty() => {
                for u in p.resolve_secrets(provider) {
                    for loc in u.used_at {
                        diags.push(
                            Diagnostic::new(loc, format!("{} cannot be resolved: {}", u.path, u.reason))
                                .hint(u.hint.clone()),
                        );
                    }
                }
                if diags.is_empty() {
                    Ok(p)
                } else {
                    diags.sort();
                    Err(diags)
                }
            }
            Ok(_) => Err(diags),
            Err(mut d) => {
                d.0.extend(diags.0);
                d.sort();
                Err(d)
            }
        }
    }

    /// Rebuilds a policy from its snapshot payload (after a restart, or from a directory read).
    pub fn from_snapshot(snapshot: Payload, key: Arc<SigningKey>) -> Result<Self, Diagnostics> {
        let assignments_path = Path::new(ASSIGNMENTS);
        let sources = vigo_model::source::Sources {
            root: std::path::PathBuf::new(),
            modules: snapshot.modules.iter().map(|m| (m.file.clone().into(), m.text.clone())).collect(),
            templates: snapshot.templates.clone(),
        };
        let registry = vigo_executors::Registry::builtin();
        let compiled = vigo_model::validate::compile(&sources, &registry);
        let names: Option<Vec<&str>> = match &compiled {
            Ok((config, _)) => Some(config.modules.iter().map(|m| m.name.as_str()).collect()),
            Err(_) => None,
        };
        let assignments = match &snapshot.assignments {
            Some(text) => Assignments::parse(assignments_path, text, names.as_deref()),
            None => Ok(Assignments::default()),
        };
        let (config, assignments) = match (compiled, assignments) {
            (Ok((c, _)), Ok(a)) => (c, a),
            (c, a) => {
                let mut d = Diagnostics::default();
                if let Err(x) = c {
                    d.0.extend(x.0);
                }
                if let Err(x) = a {
                    d.0.extend(x.0);
                }
                d.sort();
                return Err(d);
            }
        };
        let mut modules = HashMap::new();
        let mut secret_refs: BTreeMap<SecretPath, Vec<Loc>> = BTreeMap::new();
        for (m, file) in config.modules.iter().zip(snapshot.modules.iter()) {
            let mut templates = Vec::new();
            let mut secrets = BTreeSet::new();
            for r in &m.resources {
                for path in secretref::refs(&r.fields) {
                    secret_refs.entry(path.clone()).or_default().push(r.loc.clone());
                    secrets.insert(path);
                }
                let common = vigo_model::catalog::Common { name: &r.name, when: r.when.as_deref() };
                let fields = serde_json::Value::Object(r.fields.clone());
                if let Ok(facts) = vigo_model::Catalog::inspect(&registry, &r.type_name, &fields, common) {
                    templates.extend(facts.templates);
                }
            }
            modules.insert(m.name.clone(), ModuleSource { file: file.clone(), templates, secrets });
        }
        Ok(Self {
            number: snapshot.number,
            assignments,
            modules,
            templates: snapshot.templates.clone(),
            key,
            bundles: Mutex::new(HashMap::new()),
            snapshot,
            secret_refs,
            secrets: BTreeMap::new(),
            unresolved: BTreeMap::new(),
        })
    }

    /// Resolves every secret reference through `provider`, once each; returns those that
    /// failed. Bundles built later withhold a failed one from envoys, with the reason.
    pub fn resolve_secrets(&mut self, provider: &dyn SecretProvider) -> Vec<Unresolved> {
        let mut failed = Vec::new();
        self.secrets.clear();
        self.unresolved.clear();
        for (path, used_at) in &self.secret_refs {
            match provider.resolve(path) {
                Ok(value) => {
                    self.secrets.insert(path.clone(), value);
                }
                Err(e) => {
                    self.unresolved.insert(path.clone(), e.to_string());
                    failed.push(Unresolved {
                        path: path.clone(),
                        used_at: used_at.clone(),
                        reason: e.to_string(),
                        hint: provider.describe(path),
                    });
                }
            }
        }
        failed
    }

    /// How many distinct secrets the policy references.
    pub fn secret_count(&self) -> usize {
        self.secret_refs.len()
    }

    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// The snapshot bundle (the whole configuration), signed like any bundle.
    pub fn snapshot_bundle(&self) -> SignedBundle {
        self.sign(&self.snapshot)
    }

    /// The bundle for a module set, built once and cached. When the set uses secrets,
    /// the bundle is `envoy`'s own (its secrets sealed to `recipient`), cached per envoy.
    pub fn bundle_for(&self, modules: &[String], envoy: &str, recipient: Option<&str>) -> Arc<SignedBundle> {
        let used: BTreeSet<&SecretPath> =
            modules.iter().filter_map(|m| self.modules.get(m)).flat_map(|m| m.secrets.iter()).collect();
        let key = if used.is_empty() { set_key(modules) } else { envoy_set_key(modules, envoy, recipient) };
        let mut cache = self.bundles.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = cache.get(&key) {
            return b.clone();
        }
        let mut files = Vec::new();
        let mut templates = BTreeMap::new();
        for name in modules {
            let Some(src) = self.modules.get(name) else { continue };
            files.push(src.file.clone());
            for t in &src.templates {
                if let Some(text) = self.templates.get(t) {
                    templates.insert(t.clone(), text.clone());
                }
            }
        }
        let (secrets, secrets_withheld) = self.seal_for(&used, envoy, recipient);
        let payload = Payload {
            number: self.number,
            modules: files,
            templates,
            assignments: None,
            expires_at: self.snapshot.expires_at,
            secrets,
            secrets_withheld,
        };
        let bundle = Arc::new(self.sign(&payload));
        cache.insert(key, bundle.clone());
        bundle
    }

    /// The sealed values of `used` for `envoy`, and the reasons for those it cannot get.
    fn seal_for(
        &self,
        used: &BTreeSet<&SecretPath>,
        envoy: &str,
        recipient: Option<&str>,
    ) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        use base64::Engine as _;
        let (mut sealed, mut withheld) = (BTreeMap::new(), BTreeMap::new());
        for path in used {
            let outcome = match (self.secrets.get(*path), recipient) {
                (_, None) => Err(format!(
                    "envoy `{envoy}` registered no age key at enrollment (it was enrolled before secrets \
                     were supported): re-enroll it to receive secrets"
                )),
                (None, Some(_)) => Err(format!(
                    "the server could not resolve it: {}",
                    self.unresolved.get(*path).map_or("not resolved", String::as_str)
                )),
                (Some(value), Some(to)) => vigo_pki::seal::seal(to, value.expose().as_bytes())
                    .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes))
                    .map_err(|e| format!("the server could not seal it to envoy `{envoy}`: {e}")),
            };
            match outcome {
                Ok(b64) => {
                    sealed.insert(path.as_str().to_string(), b64);
                }
                Err(why) => {
                    tracing::warn!(envoy, secret = %path, reason = %why, "secret withheld from an envoy's bundle");
                    withheld.insert(path.as_str().to_string(), why);
                }
            }
        }
        (sealed, withheld)
    }

    /// Bundles already built, by set key (to persist them).
    pub fn built(&self) -> Vec<(String, Arc<SignedBundle>)> {
        let cache = self.bundles.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// Seeds the cache with a stored bundle (after a restart).
    pub fn seed(&self, set_key: String, bundle: SignedBundle) {
        let mut cache = self.bundles.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(set_key, Arc::new(bundle));
    }

    fn sign(&self, payload: &Payload) -> SignedBundle {
        let bytes = serde_json::to_vec(payload).expect("a payload of strings always serializes");
        let signature = vigo_pki::sign_bundle(&self.key, &bytes).into_bytes();
        SignedBundle { version: version_of(self.number, &bytes), payload: bytes, signature }
    }
}

/// The cache key of a module set (order matters: it is the apply order).
pub fn set_key(modules: &[String]) -> String {
    modules.join("\n")
}

/// Separates the envoy and its recipient from the module set in the key of a per-envoy
/// bundle. Envoy names are host names and recipients bech32, so they never hold it;
/// module names would need a control character to.
const ENVOY_SEPARATOR: char = '\u{1e}';

/// The cache key of a module set built for one envoy (the set uses secrets). The
/// recipient is part of it: a re-enrolled envoy (same name, new key) never gets a
/// bundle sealed to its old key.
pub fn envoy_set_key(modules: &[String], envoy: &str, recipient: Option<&str>) -> String {
    format!("{}{ENVOY_SEPARATOR}{envoy}{ENVOY_SEPARATOR}{}", set_key(modules), recipient.unwrap_or("-"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use base64::Engine as _;

    use super::*;
    use crate::secrets::FileProvider;

    const WEB: &str = "name: web\nresources:\n  - name: db password\n    type: file\n    target_path: /srv/db.pw\n    content: \"secret:app/db\"\n    mode: \"0600\"\n";
    const PLAIN: &str =
        "name: plain\nresources:\n  - name: motd\n    type: file\n    target_path: /etc/motd\n    content: hello\n";

    /// A configuration directory and a state directory holding `secrets/app/db`.
    struct Fixture {
        config: tempfile::TempDir,
        state: tempfile::TempDir,
        key: Arc<SigningKey>,
    }

    impl Fixture {
        fn new(value: &str) -> Self {
            let config = tempfile::tempdir().expect("config");
            std::fs::create_dir_all(config.path().join("modules")).expect("modules");
            std::fs::write(config.path().join("modules/web.yaml"), WEB).expect("web");
            std::fs::write(config.path().join("modules/plain.yaml"), PLAIN).expect("plain");
            let state = tempfile::tempdir().expect("state");
            let app = state.path().join("secrets/app");
            std::fs::create_dir_all(&app).expect("secrets");
            for d in [state.path().join("secrets"), app] {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
            }
            let f = Self { config, state, key: Arc::new(SigningKey::generate()) };
            f.set(value);
            f
        }

        fn set(&self, value: &str) {
            let file = self.state.path().join("secrets/app/db");
            std::fs::write(&file, format!("{value}\n")).expect("secret");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }

        fn provider(&self) -> FileProvider {
            FileProvider::new(self.state.path().to_path_buf())
        }

        fn compile(&self, number: i64) -> Result<Policy, Diagnostics> {
            Policy::compile_dir(self.config.path(), number, self.key.clone(), &self.provider())
        }
    }

    fn payload(b: &SignedBundle) -> Payload {
        serde_json::from_slice(&b.payload).expect("payload")
    }

    fn opened(b: &SignedBundle, id: &vigo_pki::AgeIdentity) -> String {
        let sealed = payload(b).secrets.get("app/db").cloned().expect("app/db sealed in the bundle");
        let bytes = base64::engine::general_purpose::STANDARD.decode(sealed).expect("base64");
        String::from_utf8(vigo_pki::seal::open(id, &bytes).expect("opens").into_bytes()).expect("utf8")
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
    }

    #[test]
    fn secret_sets_get_one_sealed_bundle_per_envoy() {
        let f = Fixture::new("pw-one-1234");
        let p = f.compile(1).expect("valid");
        assert_eq!(p.secret_count(), 1);
        let (a, b) = (vigo_pki::AgeIdentity::generate(), vigo_pki::AgeIdentity::generate());
        let web = vec!["web".to_string(), "plain".to_string()];
        let for_a = p.bundle_for(&web, "web-1", Some(&a.recipient()));
        let for_b = p.bundle_for(&web, "web-2", Some(&b.recipient()));
        assert_eq!(opened(&for_a, &a), "pw-one-1234");
        assert_eq!(opened(&for_b, &b), "pw-one-1234");
        assert_ne!(for_a.version, for_b.version, "each envoy has its own bundle");
        assert!(
            vigo_pki::seal::open(
                &b,
                &base64::engine::general_purpose::STANDARD.decode(&payload(&for_a).secrets["app/db"]).expect("b64")
            )
            .is_err()
        );
        // Stable until the next publish: the same bytes at every check-in.
        assert!(Arc::ptr_eq(&for_a, &p.bundle_for(&web, "web-1", Some(&a.recipient()))));
        // Re-enrolled under the same name with a new key: sealed to the new key.
        let again = vigo_pki::AgeIdentity::generate();
        assert_eq!(opened(&p.bundle_for(&web, "web-1", Some(&again.recipient())), &again), "pw-one-1234");
        // The value is never in clear: not in bundles, not in the snapshot.
        let snapshot = p.snapshot_bundle();
        assert!(contains(&snapshot.payload, "secret:app/db"), "the snapshot keeps the reference");
        for bytes in [&for_a.payload, &for_b.payload, &snapshot.payload] {
            assert!(!contains(bytes, "pw-one-1234"), "value in clear");
            assert!(!contains(bytes, &base64::engine::general_purpose::STANDARD.encode("pw-one-1234")));
        }
        // A set without secrets is shared, and carries none.
        let plain = vec!["plain".to_string()];
        let shared = p.bundle_for(&plain, "web-1", Some(&a.recipient()));
        assert!(Arc::ptr_eq(&shared, &p.bundle_for(&plain, "web-2", None)));
        assert!(payload(&shared).secrets.is_empty() && payload(&shared).secrets_withheld.is_empty());
        let keys: BTreeSet<String> = p.built().into_iter().map(|(k, _)| k).collect();
        let want: BTreeSet<String> = [
            envoy_set_key(&web, "web-1", Some(&a.recipient())),
            envoy_set_key(&web, "web-1", Some(&again.recipient())),
            envoy_set_key(&web, "web-2", Some(&b.recipient())),
            set_key(&plain),
        ]
        .into_iter()
        .collect();
        assert_eq!(keys, want);
    }

    #[test]
    fn an_envoy_without_a_recipient_is_told_to_re_enroll() {
        let f = Fixture::new("pw-two");
        let p = f.compile(1).expect("valid");
        let b = p.bundle_for(&["web".to_string()], "old-1", None);
        let pl = payload(&b);
        assert!(pl.secrets.is_empty());
        let why = pl.secrets_withheld.get("app/db").expect("withheld");
        assert!(why.contains("old-1") && why.contains("re-enroll"), "{why}");
        assert!(!contains(&b.payload, "pw-two"));
    }

    #[test]
    fn an_unresolvable_secret_fails_the_publish_at_the_resource() {
        let f = Fixture::new("x");
        std::fs::remove_file(f.state.path().join("secrets/app/db")).expect("rm");
        let d = f.compile(1).err().expect("refused").to_string();
        assert!(d.contains("modules/web.yaml:3:") && d.contains("secret:app/db cannot be resolved"), "{d}");
        assert!(d.contains("secrets/app/db: no such file") && d.contains("hint: put the value in"), "{d}");
        f.set("x");
        std::fs::set_permissions(f.state.path().join("secrets/app/db"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let d = f.compile(1).err().expect("refused").to_string();
        assert!(d.contains("secrets/app/db: mode 0644"), "{d}");
    }

    #[test]
    fn a_publish_re_resolves_so_rotation_changes_the_bundle() {
        let f = Fixture::new("before-rotation");
        let id = vigo_pki::AgeIdentity::generate();
        let web = vec!["web".to_string()];
        let one = f.compile(1).expect("valid").bundle_for(&web, "web-1", Some(&id.recipient()));
        f.set("after-rotation");
        let two = f.compile(2).expect("valid").bundle_for(&web, "web-1", Some(&id.recipient()));
        assert_eq!((opened(&one, &id).as_str(), opened(&two, &id).as_str()), ("before-rotation", "after-rotation"));
        assert_ne!(one.version, two.version);
    }

    #[test]
    fn a_rebuilt_policy_resolves_again_and_withholds_what_fails() {
        let f = Fixture::new("pw-three");
        let snapshot = payload(&f.compile(1).expect("valid").snapshot_bundle());
        let mut p = Policy::from_snapshot(snapshot.clone(), f.key.clone()).expect("rebuilds");
        assert!(p.resolve_secrets(&f.provider()).is_empty());
        let id = vigo_pki::AgeIdentity::generate();
        assert_eq!(opened(&p.bundle_for(&["web".to_string()], "web-1", Some(&id.recipient())), &id), "pw-three");
        std::fs::remove_file(f.state.path().join("secrets/app/db")).expect("rm");
        let mut p = Policy::from_snapshot(snapshot, f.key.clone()).expect("rebuilds");
        let failed = p.resolve_secrets(&f.provider());
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].path.to_string(), "secret:app/db");
        let b = p.bundle_for(&["web".to_string()], "web-1", Some(&id.recipient()));
        let why = payload(&b).secrets_withheld.get("app/db").cloned().expect("withheld");
        assert!(why.starts_with("the server could not resolve it") && why.contains("no such file"), "{why}");
    }
}
