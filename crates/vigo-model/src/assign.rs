//! Assignments: which modules apply to which envoys (`assignments.yaml`).
//!
//! ```yaml
//! assignments:
//!   - hosts: "web-*"                 # a glob or a list of globs; omitted = every envoy
//!     when: "os_family('debian')"    # optional condition over the envoy's traits
//!     modules: [webserver, base]
//! ```
//! An envoy gets the union of the modules of every assignment it matches, in
//! order of first appearance.

use std::path::Path;

use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::raw::{self, Entries, Pos};
use crate::when::{Condition, WhenEnv};

/// One rule of `assignments.yaml`.
#[derive(Clone)]
pub struct Assignment {
    pub hosts: Vec<glob::Pattern>,
    pub when: Option<Condition>,
    pub modules: Vec<String>,
}

/// The whole `assignments.yaml`.
#[derive(Clone, Default)]
pub struct Assignments {
    pub rules: Vec<Assignment>,
}

#[derive(serde::Deserialize)]
struct RawFile {
    #[serde(default)]
    assignments: Vec<serde_saphyr::Spanned<Entries>>,
}

impl Assignments {
    /// Parses and checks `text`; `modules` are the names that exist in the configuration
    /// (`None` when the modules themselves did not validate: names are then not checked,
    /// so one broken module does not also show up as a missing one).
    pub fn parse(file: &Path, text: &str, modules: Option<&[&str]>) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let raw: RawFile = match serde_saphyr::from_str_with_options(text, raw::options()) {
            Ok(r) => r,
            Err(e) => {
                let (pos, msg) = raw::yaml_error(&e);
                return Err(Diagnostics(vec![Diagnostic::new(at(file, pos), format!("invalid YAML: {msg}"))]));
            }
        };
        let mut rules = Vec::new();
        for item in raw.assignments {
            let loc = Loc::new(file, item.referenced.line(), item.referenced.column());
            let mut rule = Assignment { hosts: Vec::new(), when: None, modules: Vec::new() };
            let mut has_modules = false;
            for e in &item.value.entries {
                let here = at(file, e.value_pos);
                match e.key.as_str() {
                    "hosts" => match strings(&e.value) {
                        Some(globs) => {
                            for g in globs {
                                match glob::Pattern::new(&g) {
                                    Ok(p) => rule.hosts.push(p),
                                    Err(err) => {
                                        diags.push(Diagnostic::new(here.clone(), format!("bad host glob `{g}`: {err}")))
                                    }
                                }
                            }
                        }
                        None => diags.push(Diagnostic::new(here, "`hosts` must be a glob or a list of globs")),
                    },
                    "when" => match e.value.as_str().map(Condition::compile) {
                        Some(Ok(c)) => rule.when = Some(c),
                        Some(Err(err)) => diags.push(Diagnostic::new(here, format!("invalid `when` condition: {err}"))),
                        None => diags.push(Diagnostic::new(here, "`when` must be a string")),
                    },
                    "modules" => {
                        has_modules = true;
                        match strings(&e.value) {
                            Some(names) => {
                                for n in names {
                                    if let Some(modules) = modules.filter(|m| !m.contains(&n.as_str())) {
                                        let hint = match did_you_mean(&n, modules.iter().copied()) {
                                            Some(s) => format!("did you mean `{s}`?"),
                                            None => format!("known modules: {}", modules.join(", ")),
                                        };
                                        diags.push(
                                            Diagnostic::new(here.clone(), format!("module `{n}` does not exist"))
                                                .hint(hint),
                                        );
                                    }
                                    rule.modules.push(n);
                                }
                            }
                            None => {
                                diags.push(Diagnostic::new(here, "`modules` must be a module name or a list of names"))
                            }
                        }
                    }
                    other => {
                        let hint =
                            did_you_mean(other, ["hosts", "when", "modules"]).map(|s| format!("did you mean `{s}`?"));
                        let mut d =
                            Diagnostic::new(at(file, e.key_pos), format!("unknown field `{other}` in an assignment"));
                        d.hint = hint;
                        diags.push(d);
                    }
                }
            }
            if !has_modules {
                diags.push(Diagnostic::new(loc, "assignment has no `modules`").hint("add `modules: [name, …]`"));
            }
            rules.push(rule);
        }
        if diags.is_empty() { Ok(Self { rules }) } else { Err(diags) }
    }

    /// The modules for an envoy, in order of first appearance.
    pub fn modules_for(&self, hostname: &str, traits: &Value) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for rule in &self.rules {
            let host_ok = rule.hosts.is_empty() || rule.hosts.iter().any(|p| p.matches(hostname));
            let when_ok =
                rule.when.as_ref().is_none_or(|c| c.eval(WhenEnv { traits, changed: false }).unwrap_or(false));
            if host_ok && when_ok {
                for m in &rule.modules {
                    if !out.contains(m) {
                        out.push(m.clone());
                    }
                }
            }
        }
        out
    }
}

fn at(file: &Path, pos: Pos) -> Loc {
    Loc::new(file, pos.line, pos.col)
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::String(s) => Some(vec![s.clone()]),
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = "assignments:
  - hosts: \"web-*\"
    modules: [webserver, base]
  - hosts: [\"db-*\", \"web-1\"]
    when: \"os_family('debian')\"
    modules: [base, debian]
  - modules: everyone
";

    #[test]
    fn envoys_get_the_union_in_first_appearance_order() {
        let a =
            Assignments::parse(Path::new("assignments.yaml"), FILE, Some(&["webserver", "base", "debian", "everyone"]))
                .expect("valid");
        let deb = json!({"os": {"family": "debian"}});
        let rh = json!({"os": {"family": "redhat"}});
        assert_eq!(a.modules_for("web-1", &deb), ["webserver", "base", "debian", "everyone"]);
        assert_eq!(a.modules_for("web-2", &deb), ["webserver", "base", "everyone"]);
        assert_eq!(a.modules_for("db-1", &rh), ["everyone"]);
        assert_eq!(a.modules_for("db-1", &deb), ["base", "debian", "everyone"]);
    }

    #[test]
    fn module_names_are_not_checked_when_modules_did_not_validate() {
        let text = "assignments:\n  - modules: [web]\n";
        assert!(Assignments::parse(Path::new("a.yaml"), text, None).is_ok());
        assert!(Assignments::parse(Path::new("a.yaml"), text, Some(&[])).is_err());
    }

    #[test]
    fn unknown_modules_and_fields_are_located() {
        let text = "assignments:\n  - hosts: \"web-*\"\n    modules: [webservr]\n    whn: x\n";
        let d = Assignments::parse(Path::new("a.yaml"), text, Some(&["webserver"])).err().expect("invalid");
        let all = d.to_string();
        assert!(all.contains("a.yaml:3:14: module `webservr` does not exist"), "{all}");
        assert!(all.contains("did you mean `webserver`?"), "{all}");
        assert!(all.contains("a.yaml:4:5: unknown field `whn`"), "{all}");
    }
}
