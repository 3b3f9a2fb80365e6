//! Loading a configuration for a run: read, validate against the built-in types,
//! and the secret values a run may fill in.
//!
//! A local configuration (`vigo apply`) has no secret values: `secret:` references
//! are resolved by the server at publish, so a resource using one fails. A bundle
//! carries each secret its modules use sealed to this envoy's age key; they are
//! opened here, held as [`Secret`]s, and given to the runner only.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use vigo_executors::Registry;
use vigo_model::secretref::SecretPath;
use vigo_model::{Config, Diagnostics, Plan, Secret};

use crate::paths::AgentPaths;
use crate::report::Scrubber;

/// Reads and validates the configuration at `path` (a directory or one module file).
pub fn load(path: &Path, registry: &Registry) -> Result<(Config, Plan), Diagnostics> {
    let sources = vigo_model::source::read(path)?;
    vigo_model::validate::compile(&sources, registry)
}

/// The secret values a run may fill into resources, and why others are missing.
pub struct RunSecrets {
    values: BTreeMap<String, Secret>,
    /// Path → why this envoy has no value for it.
    missing: BTreeMap<String, String>,
    /// Why a reference has no value when nothing more specific is known.
    otherwise: String,
}

/// The secret part of a bundle payload.
#[derive(serde::Deserialize)]
struct Sealed {
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    #[serde(default)]
    secrets_withheld: BTreeMap<String, String>,
}

impl RunSecrets {
    /// A local run: nothing resolves references.
    pub fn local() -> Self {
        Self {
            values: BTreeMap::new(),
            missing: BTreeMap::new(),
            otherwise: "is resolved by the server at publish; `vigo apply` cannot resolve it".into(),
        }
    }

    /// The secrets a verified bundle payload carries, opened with this envoy's age key.
    /// Never fails: a secret that cannot be opened fails the resources that use it.
    pub fn from_payload(paths: &AgentPaths, payload: &[u8]) -> Self {
        let mut out = Self {
            values: BTreeMap::new(),
            missing: BTreeMap::new(),
            otherwise: "is not in this envoy's policy bundle".into(),
        };
        let sealed: Sealed = match serde_json::from_slice(payload) {
            Ok(s) => s,
            Err(e) => {
                out.otherwise = format!("cannot be read from the policy bundle: {e}");
                return out;
            }
        };
        for (path, why) in sealed.secrets_withheld {
            out.missing.insert(path, format!("was not sent to this envoy: {why}"));
        }
        if sealed.secrets.is_empty() {
            return out;
        }
        let identity = match vigo_pki::AgeIdentity::load(&paths.age_key()) {
            Ok(id) => id,
            Err(e) => {
                for path in sealed.secrets.into_keys() {
                    out.missing
                        .insert(path, format!("cannot be opened: {e} (re-enroll this envoy to get a key for secrets)"));
                }
                return out;
            }
        };
        for (path, b64) in sealed.secrets {
            match open(&identity, &b64) {
                Ok(value) => {
                    out.values.insert(path, value);
                }
                Err(why) => {
                    tracing::error!(secret = %format!("secret:{path}"), reason = %why, "secret in the policy bundle cannot be opened");
                    out.missing.insert(path, format!("cannot be opened: {why}"));
                }
            }
        }
        out
    }

    /// The value of `path`, or the whole message for a resource that needs it.
    pub fn value(&self, path: &SecretPath) -> Result<&Secret, String> {
        let key = path.as_str();
        self.values.get(key).ok_or_else(|| match self.missing.get(key) {
            Some(why) => format!("{path} {why}"),
            None => format!("{path} {}", self.otherwise),
        })
    }

    /// What a report or anything printed must not contain: every value this run holds.
    pub fn scrubber(&self) -> Scrubber {
        Scrubber::new(self.values.values().map(Secret::expose))
    }
}

fn open(identity: &vigo_pki::AgeIdentity, b64: &str) -> Result<Secret, String> {
    let sealed = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("not base64: {e}"))?;
    let opened = vigo_pki::seal::open(identity, &sealed).map_err(|e| e.to_string())?;
    String::from_utf8(opened.into_bytes()).map(Secret::new).map_err(|_| "the value is not UTF-8 text".to_string())
}

/// The scrubber for what `vigo status` prints: the values in the cached bundle (none
/// when there is no usable bundle).
pub fn cached_scrubber(paths: &AgentPaths) -> Scrubber {
    let Ok(bundle) = crate::checkin::load_bundle(paths) else { return Scrubber::default() };
    let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(&bundle.payload) else {
        return Scrubber::default();
    };
    RunSecrets::from_payload(paths, &payload).scrubber()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigo_executors::Mode;
    use vigo_model::source::Sources;

    use crate::report::Status;
    use crate::runner::Runner;

    fn compile(module: &str) -> Result<(Config, Plan), Diagnostics> {
        let sources = Sources {
            root: std::path::PathBuf::new(),
            modules: vec![("modules/m.yaml".into(), module.to_string())],
            templates: BTreeMap::new(),
        };
        vigo_model::validate::compile(&sources, &Registry::builtin())
    }

    #[test]
    fn malformed_references_are_reported_with_their_location() {
        let module = "name: m\nresources:\n  - name: f\n    type: file\n    target_path: /tmp/x\n    content: \"secret:../etc/shadow\"\n";
        let d = compile(module).expect_err("malformed").to_string();
        assert!(
            d.contains("modules/m.yaml:6:14: field `content`: invalid secret reference `secret:../etc/shadow`"),
            "{d}"
        );
        let module = "name: m\nvars:\n  pw: secret:db/pw\nresources: []\n";
        let d = compile(module).expect_err("in vars").to_string();
        assert!(d.contains("modules/m.yaml:3:") && d.contains("resolved in resource fields only"), "{d}");
        let module = "name: m\nresources:\n  - name: f\n    type: file\n    target_path: /tmp/x\n    content: \"secret:db/pw\"\n";
        compile(module).expect("a well-formed reference validates");
    }

    #[test]
    fn a_secret_path_that_looks_like_an_option_is_refused_with_its_location() {
        for (reference, component) in [("--help", "--help"), ("db/-ofile", "-ofile")] {
            let module = format!(
                "name: m\nresources:\n  - name: f\n    type: file\n    target_path: /tmp/x\n    content: \"secret:{reference}\"\n"
            );
            let d = compile(&module).expect_err("leading dash").to_string();
            let want = format!(
                "modules/m.yaml:6:14: field `content`: invalid secret reference `secret:{reference}`: component `{component}` starts with `-`"
            );
            assert!(d.contains(&want), "{d}");
            assert!(d.contains("hint: ") && d.contains("none starting with `-`"), "{d}");
        }
    }

    #[test]
    fn a_secret_on_an_exec_command_line_is_refused_at_validation() {
        let module = "name: m\nresources:\n  - name: load\n    type: exec\n    command: [mysql, -u, app, \"secret:db/pw\"]\n    creates: /x\n  - name: guard\n    type: exec\n    command: \"true\"\n    unless:\n      - check\n      - \"secret:db/pw\"\n";
        let d = compile(module).expect_err("secret in argv").to_string();
        assert!(d.contains("modules/m.yaml:5:14: `load`: `command` holds a secret reference"), "{d}");
        assert!(d.contains("modules/m.yaml:11:7: `guard`: `unless` holds a secret reference"), "{d}");
        assert!(d.contains("/proc/<pid>/cmdline") && d.contains("hint: pass the secret through `env`"), "{d}");
        let module = "name: m\nresources:\n  - name: load\n    type: exec\n    command: [mysql, -u, app]\n    env:\n      MYSQL_PWD: \"secret:db/pw\"\n    creates: /x\n";
        compile(module).expect("through the environment it is fine");
    }

    #[test]
    fn a_file_holding_a_secret_is_private_without_a_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, payload) = sealed_payload(dir.path());
        let secrets = RunSecrets::from_payload(&paths, &payload);
        let (new, old) = (dir.path().join("new.conf"), dir.path().join("old.conf"));
        std::fs::write(&old, "before\n").expect("old");
        std::fs::set_permissions(&old, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
        let module = format!(
            "name: m\nresources:\n  - name: new\n    type: file\n    target_path: {}\n    content: \"secret:app/db\"\n  - name: old\n    type: file\n    target_path: {}\n    content: \"secret:app/db\"\n",
            new.display(),
            old.display()
        );
        let (config, plan) = compile(&module).expect("valid");
        let registry = Registry::builtin();
        let traits = serde_json::json!({});
        let report = Runner { registry: &registry, traits: &traits, mode: Mode::Enforce }
            .run_with_secrets(&config, &plan, &secrets);
        for (r, path) in report.resources.iter().zip([&new, &old]) {
            assert_eq!(r.status, Status::Changed, "{r:?}");
            let meta = std::fs::metadata(path).expect("written");
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
                0o600,
                "{}",
                path.display()
            );
            assert_eq!(std::fs::read_to_string(path).expect("read"), "v4lue-db");
        }
    }

    #[test]
    fn a_multi_line_secret_is_redacted_on_every_line_of_another_resources_diff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = AgentPaths { etc: dir.path().join("etc"), state: dir.path().join("state") };
        std::fs::create_dir_all(&paths.state).expect("state");
        let id = vigo_pki::AgeIdentity::generate();
        id.save(&paths.age_key()).expect("save key");
        const KEY: &str = "Zm9vYmFyLWtleS1vbmU\nc2Vjb25kLWxpbmUtdHdv\nq7";
        let sealed = vigo_pki::seal::seal(&id.recipient(), KEY.as_bytes()).expect("seal");
        let payload =
            serde_json::json!({"secrets": {"tls/key": base64::engine::general_purpose::STANDARD.encode(sealed)}});
        let secrets = RunSecrets::from_payload(&paths, &serde_json::to_vec(&payload).expect("json"));
        let pem = dir.path().join("key.pem");
        // The second resource holds no reference, so only the scrubber stands between its
        // diff (whose context lines are the key's lines) and the report.
        let module = format!(
            "name: m\nresources:\n  - name: key\n    type: file\n    target_path: {0}\n    content: \"secret:tls/key\"\n  - name: mark\n    type: file_line\n    path: {0}\n    line: \"# managed\"\n    depends_on: [key]\n",
            pem.display()
        );
        let (config, plan) = compile(&module).expect("valid");
        let registry = Registry::builtin();
        let traits = serde_json::json!({});
        let mut report = Runner { registry: &registry, traits: &traits, mode: Mode::Enforce }
            .run_with_secrets(&config, &plan, &secrets);
        let diff = report.resources[1].diff.clone().expect("the edit has a diff");
        assert!(KEY.lines().all(|l| diff.contains(l)), "the unscrubbed diff shows the key's lines: {diff}");
        report.scrub(&secrets.scrubber());
        let json = serde_json::to_string(&report).expect("json");
        let diff = report.resources[1].diff.clone().expect("diff");
        for line in KEY.lines() {
            let shown = diff.lines().filter(|l| l.trim_start_matches(['+', '-', ' ']).trim() == line).count();
            assert_eq!(shown, 0, "{line:?} is still a line of the diff: {diff}");
        }
        assert!(!json.contains("Zm9vYmFy") && !json.contains("c2Vjb25k"), "{json}");
        assert!(diff.contains("+# managed"), "the rest of the diff stays readable: {diff}");
        assert_eq!(std::fs::read_to_string(&pem).expect("pem"), format!("{KEY}\n# managed\n"));
    }

    /// Paths with a sealed `app/db`, a withheld `app/gone` and an undecryptable `app/bad`.
    fn sealed_payload(dir: &Path) -> (AgentPaths, Vec<u8>) {
        let paths = AgentPaths { etc: dir.join("etc"), state: dir.join("state") };
        std::fs::create_dir_all(&paths.state).expect("state");
        let id = vigo_pki::AgeIdentity::generate();
        id.save(&paths.age_key()).expect("save key");
        let seal = |to: &str, v: &str| {
            base64::engine::general_purpose::STANDARD.encode(vigo_pki::seal::seal(to, v.as_bytes()).expect("seal"))
        };
        let other = vigo_pki::AgeIdentity::generate().recipient();
        let payload = serde_json::json!({
            "number": 1, "modules": [], "templates": {},
            "secrets": {"app/db": seal(&id.recipient(), "v4lue-db"), "app/bad": seal(&other, "x")},
            "secrets_withheld": {"app/gone": "envoy `web-1` registered no age key at enrollment: re-enroll it"},
        });
        (paths, serde_json::to_vec(&payload).expect("json"))
    }

    #[test]
    fn bundle_secrets_open_with_this_envoys_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, payload) = sealed_payload(dir.path());
        let s = RunSecrets::from_payload(&paths, &payload);
        let p = |x: &str| SecretPath::parse(x).expect("path");
        assert_eq!(s.value(&p("app/db")).expect("opens").expose(), "v4lue-db");
        let gone = s.value(&p("app/gone")).expect_err("withheld");
        assert!(gone.starts_with("secret:app/gone was not sent to this envoy") && gone.contains("re-enroll"), "{gone}");
        let bad = s.value(&p("app/bad")).expect_err("other key");
        assert!(bad.starts_with("secret:app/bad cannot be opened"), "{bad}");
        let none = s.value(&p("app/none")).expect_err("absent");
        assert_eq!(none, "secret:app/none is not in this envoy's policy bundle");
        // Without its key the envoy is told to re-enroll.
        std::fs::remove_file(paths.age_key()).expect("rm key");
        let s = RunSecrets::from_payload(&paths, &payload);
        let e = s.value(&p("app/db")).expect_err("no key");
        assert!(e.contains("age.key") && e.contains("re-enroll"), "{e}");
    }

    #[test]
    fn local_runs_fail_resources_that_use_secrets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("pw");
        let module = format!(
            "name: m\nresources:\n  - name: pw\n    type: file\n    target_path: {}\n    content: \"secret:db/pw\"\n  - name: after\n    type: file\n    target_path: {}/after\n    content: ok\n    depends_on: [pw]\n",
            target.display(),
            dir.path().display()
        );
        let (config, plan) = compile(&module).expect("valid");
        let registry = Registry::builtin();
        let traits = serde_json::json!({});
        let report = Runner { registry: &registry, traits: &traits, mode: Mode::Enforce }.run(&config, &plan);
        let pw = &report.resources[0];
        assert_eq!(pw.status, Status::Failed);
        assert_eq!(
            pw.error.as_deref(),
            Some("secret:db/pw is resolved by the server at publish; `vigo apply` cannot resolve it")
        );
        assert_eq!(report.resources[1].status, Status::Skipped, "dependents are skipped");
        assert!(!target.exists());
    }

    #[test]
    fn bundle_secrets_reach_the_file_and_never_the_report() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, payload) = sealed_payload(dir.path());
        let secrets = RunSecrets::from_payload(&paths, &payload);
        let target = dir.path().join("db.conf");
        let ini = dir.path().join("app.ini");
        std::fs::write(&ini, "[db]\npassword = old\n").expect("ini");
        let module = format!(
            "name: m\nresources:\n  - name: db\n    type: file\n    target_path: {}\n    content: \"secret:app/db\"\n    sensitive: false\n  - name: ini\n    type: ini\n    path: {}\n    section: db\n    option: password\n    value: \"secret:app/db\"\n  - name: gone\n    type: file\n    target_path: {}/gone\n    content: \"secret:app/gone\"\n",
            target.display(),
            ini.display(),
            dir.path().display()
        );
        let (config, plan) = compile(&module).expect("valid");
        let registry = Registry::builtin();
        let traits = serde_json::json!({});
        for mode in [Mode::NoOp, Mode::Enforce] {
            let mut report =
                Runner { registry: &registry, traits: &traits, mode }.run_with_secrets(&config, &plan, &secrets);
            report.scrub(&secrets.scrubber());
            let json = serde_json::to_string(&report).expect("json");
            assert!(!json.contains("v4lue-db"), "{mode:?}: the value is in the report: {json}");
            let db = &report.resources[0];
            assert_eq!(db.status, Status::Changed, "{mode:?}: {json}");
            assert!(db.changes.iter().all(|c| c.to.as_deref().is_none_or(|t| t == "[redacted]")), "{json}");
            assert_eq!(report.resources[1].status, Status::Changed, "{mode:?}: {json}");
            assert_eq!(report.resources[1].diff.as_deref(), Some("[redacted]"), "{json}");
            let gone = &report.resources[2];
            assert_eq!(gone.status, Status::Failed);
            assert!(gone.error.as_deref().is_some_and(|e| e.contains("was not sent to this envoy")), "{json}");
        }
        assert_eq!(std::fs::read_to_string(&target).expect("written"), "v4lue-db");
        assert!(std::fs::read_to_string(&ini).expect("ini").contains("password = v4lue-db"));
    }

    #[test]
    fn a_secret_cannot_steer_a_resource_into_vigo_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = AgentPaths { etc: dir.path().join("etc"), state: dir.path().join("state") };
        std::fs::create_dir_all(&paths.state).expect("state");
        let id = vigo_pki::AgeIdentity::generate();
        id.save(&paths.age_key()).expect("key");
        let sealed = vigo_pki::seal::seal(&id.recipient(), b"rm -rf /var/lib/vigo").expect("seal");
        let payload = serde_json::json!({"secrets": {"cmd": base64::engine::general_purpose::STANDARD.encode(sealed)}});
        let secrets = RunSecrets::from_payload(&paths, &serde_json::to_vec(&payload).expect("json"));
        let module = format!(
            "name: m\nresources:\n  - name: f\n    type: exec\n    command: \"true\"\n    creates: {}/done\n",
            dir.path().display()
        );
        let (mut config, plan) = compile(&module).expect("valid");
        // Validation refuses a secret on a command line; a bundle that got one past it
        // anyway (an older server) still meets the guardrail with the value in place.
        config.modules[0].resources[0].fields.insert("command".into(), "secret:cmd".into());
        let registry = Registry::builtin();
        let traits = serde_json::json!({});
        let report = Runner { registry: &registry, traits: &traits, mode: Mode::Enforce }
            .run_with_secrets(&config, &plan, &secrets);
        let r = &report.resources[0];
        assert_eq!(r.status, Status::Failed);
        assert!(r.error.as_deref().is_some_and(|e| e.contains("guardrail")), "{:?}", r.error);
    }
}
