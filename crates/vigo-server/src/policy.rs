//! A published policy: the validated configuration of one version, and the
//! signed bundles built from it (once per distinct module set, kept as bytes).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vigo_model::assign::Assignments;
use vigo_model::{Diagnostic, Diagnostics, Loc};
use vigo_pki::SigningKey;

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
}

impl Policy {
    /// Validates a configuration directory into a policy; every problem at once on failure.
    pub fn compile_dir(config_dir: &Path, number: i64, key: Arc<SigningKey>) -> Result<Self, Diagnostics> {
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
        let snapshot = Payload { number, modules, templates: sources.templates.clone(), assignments, expires_at };
        match Self::from_snapshot(snapshot, key) {
            Ok(p) if diags.is_empty() => Ok(p),
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
        for (m, file) in config.modules.iter().zip(snapshot.modules.iter()) {
            let mut templates = Vec::new();
            for r in &m.resources {
                let common = vigo_model::catalog::Common { name: &r.name, when: r.when.as_deref() };
                let fields = serde_json::Value::Object(r.fields.clone());
                if let Ok(facts) = vigo_model::Catalog::inspect(&registry, &r.type_name, &fields, common) {
                    templates.extend(facts.templates);
                }
            }
            modules.insert(m.name.clone(), ModuleSource { file: file.clone(), templates });
        }
        Ok(Self {
            number: snapshot.number,
            assignments,
            modules,
            templates: snapshot.templates.clone(),
            key,
            bundles: Mutex::new(HashMap::new()),
            snapshot,
        })
    }

    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// The snapshot bundle (the whole configuration), signed like any bundle.
    pub fn snapshot_bundle(&self) -> SignedBundle {
        self.sign(&self.snapshot)
    }

    /// The bundle for a module set, built once and cached.
    pub fn bundle_for(&self, modules: &[String]) -> Arc<SignedBundle> {
        let key = set_key(modules);
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
        let payload = Payload {
            number: self.number,
            modules: files,
            templates,
            assignments: None,
            expires_at: self.snapshot.expires_at,
        };
        let bundle = Arc::new(self.sign(&payload));
        cache.insert(key, bundle.clone());
        bundle
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
