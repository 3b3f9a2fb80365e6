//! The validation pipeline: sources → every problem at once, or a config and its plan.
//!
//! Steps: YAML syntax; module shape; per resource the common fields, the type,
//! unknown and missing fields (with did-you-mean hints), the typed spec, `when:`
//! compilation, templates, guardrails and type lints; then names, references and
//! dependency cycles across the whole configuration. Nothing stops at the first
//! problem.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::catalog::{Catalog, Common};
use crate::config::{Config, Module, Resource};
use crate::diag::{Diagnostic, Diagnostics, Loc, did_you_mean};
use crate::plan::{self, Plan};
use crate::raw::{self, Entries, Entry, Pos, RawModule, ResourceItem};
use crate::source::Sources;
use crate::{guard, secretref, template, when};

/// Fields every resource may carry, whatever its type.
pub const COMMON_FIELDS: &[&str] = &["name", "type", "when", "notify", "depends_on", "description"];
const MODULE_FIELDS: &[&str] = &["name", "description", "vars", "resources"];
/// How to write a secret reference, shown under every malformed one.
const SECRET_PATH_HINT: &str = "write `secret:<path>`, the path being 1–8 components of letters, digits, `.`, `_` and `-` separated by `/`, none starting with `-`";

/// A reference from one resource to another, kept with its location until resolved.
struct PendingRef {
    from: usize,
    target: String,
    kind: plan::Edge,
    loc: Loc,
}

struct Compiler<'a> {
    catalog: &'a dyn Catalog,
    templates: &'a BTreeMap<String, String>,
    diags: Diagnostics,
    modules: Vec<Module>,
    refs: Vec<PendingRef>,
}

/// Validates `sources` against `catalog`; returns the config and its plan, or every problem.
pub fn compile(sources: &Sources, catalog: &dyn Catalog) -> Result<(Config, Plan), Diagnostics> {
    let mut c = Compiler {
        catalog,
        templates: &sources.templates,
        diags: Diagnostics::default(),
        modules: Vec::new(),
        refs: Vec::new(),
    };
    for (name, text) in &sources.templates {
        if let Err(e) = template::check(name, text) {
            c.diags.push(Diagnostic::new(Loc::file(&sources.root.join(name)), format!("template syntax: {e}")));
        }
    }
    let mut seen_modules: HashMap<String, Loc> = HashMap::new();
    for (file, text) in &sources.modules {
        if let Some(module) = c.module(file, text) {
            let loc = Loc::file(file);
            if let Some(first) = seen_modules.get(&module.name) {
                c.diags.push(
                    Diagnostic::new(loc, format!("module `{}` is defined twice", module.name))
                        .hint(format!("the first definition is in {}", first.file.display())),
                );
                continue;
            }
            seen_modules.insert(module.name.clone(), loc);
            c.modules.push(module);
        }
    }
    let config = Config { root: sources.root.clone(), modules: c.modules, templates: sources.templates.clone() };
    let plan = resolve(&config, c.refs, &mut c.diags);
    let mut diags = c.diags;
    if diags.is_empty() {
        let mut config = config;
        rewrite_refs(&mut config, &plan);
        Ok((config, plan))
    } else {
        diags.sort();
        Err(diags)
    }
}

fn at(file: &Path, pos: Pos) -> Loc {
    Loc::new(file, pos.line, pos.col)
}

impl Compiler<'_> {
    fn error(&mut self, loc: Loc, message: impl Into<String>, hint: Option<String>) {
        let mut d = Diagnostic::new(loc, message);
        d.hint = hint;
        self.diags.push(d);
    }

    fn module(&mut self, file: &Path, text: &str) -> Option<Module> {
        if text.trim().is_empty() {
            self.error(Loc::file(file), "empty module file", Some("a module needs `name:` and `resources:`".into()));
            return None;
        }
        let raw: RawModule = match serde_saphyr::from_str_with_options(text, raw::options()) {
            Ok(r) => r,
            Err(e) => {
                let (pos, msg) = raw::yaml_error(&e);
                self.error(at(file, pos), format!("invalid YAML: {msg}"), None);
                return None;
            }
        };
        for pos in &raw.bad_keys {
            self.error(at(file, *pos), "mapping keys must be plain strings", None);
        }
        let mut name = None;
        let mut vars = Value::Object(Map::new());
        for e in &raw.entries {
            match e.key.as_str() {
                "name" => name = self.string(file, e, "module name"),
                "description" => {
                    self.string(file, e, "description");
                }
                "vars" => match &e.value {
                    Value::Object(_) => {
                        self.no_secrets_in_vars(file, e);
                        vars = e.value.clone();
                    }
                    Value::Null => {}
                    _ => self.error(at(file, e.value_pos), "`vars` must be a mapping", None),
                },
                other => self.unknown(file, e.key_pos, other, "module", MODULE_FIELDS.iter().copied()),
            }
        }
        let Some(name) = name else {
            self.error(
                Loc::new(file, 1, 1),
                "module has no `name`",
                Some("add `name: <module name>` at the top".into()),
            );
            return None;
        };
        let mut module = Module { name, file: file.to_path_buf(), vars, resources: Vec::new() };
        let mut seen: HashMap<String, u64> = HashMap::new();
        for item in raw.resources.map(|(_, items)| items).unwrap_or_default() {
            let Some(res) = self.resource(file, &module, item) else { continue };
            if let Some(line) = seen.get(&res.name) {
                let hint =
                    format!("the first `{}` is at line {line}; resource names are unique within a module", res.name);
                self.error(res.loc.clone(), format!("duplicate resource name `{}`", res.name), Some(hint));
                continue;
            }
            seen.insert(res.name.clone(), res.loc.line);
            module.resources.push(res);
        }
        Some(module)
    }

    fn string(&mut self, file: &Path, e: &Entry, what: &str) -> Option<String> {
        match &e.value {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.error(at(file, e.value_pos), format!("{what} is empty"), None);
                None
            }
            other => {
                self.error(at(file, e.value_pos), format!("{what} must be a string, found {}", kind(other)), None);
                None
            }
        }
    }

    fn names(&mut self, file: &Path, e: &Entry) -> Vec<String> {
        match &e.value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) if items.iter().all(Value::is_string) => {
                items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
            }
            Value::Null => Vec::new(),
            _ => {
                let hint = Some(format!("write `{}: [Resource name, …]`", e.key));
                self.error(
                    at(file, e.value_pos),
                    format!("`{}` must be a resource name or a list of names", e.key),
                    hint,
                );
                Vec::new()
            }
        }
    }

    fn unknown<'c>(
        &mut self,
        file: &Path,
        pos: Pos,
        key: &str,
        owner: &str,
        known: impl Iterator<Item = &'c str> + Clone,
    ) {
        let hint = match did_you_mean(key, known.clone()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("known fields: {}", known.collect::<Vec<_>>().join(", ")),
        };
        self.error(at(file, pos), format!("unknown field `{key}` in {owner}"), Some(hint));
    }

    fn resource(&mut self, file: &Path, module: &Module, item: Spanned<ResourceItem>) -> Option<Resource> {
        let loc = Loc::new(file, item.referenced.line(), item.referenced.column());
        let entries: Entries = match item.value {
            ResourceItem::Map(e) => e,
            ResourceItem::NotAMap => {
                self.error(loc, "a resource must be a mapping", Some("start it with `- name: …` and `type: …`".into()));
                return None;
            }
        };
        for pos in &entries.bad_keys {
            self.error(at(file, *pos), "mapping keys must be plain strings", None);
        }
        let mut dup: HashMap<&str, Pos> = HashMap::new();
        for e in &entries.entries {
            if let Some(first) = dup.insert(&e.key, e.key_pos) {
                self.error(
                    at(file, e.key_pos),
                    format!("field `{}` appears twice", e.key),
                    Some(format!("first at line {}", first.line)),
                );
            }
        }
        let (mut name, mut type_name, mut when_src) = (None, None, None);
        let (mut notify, mut depends) = (Vec::new(), Vec::new());
        let mut type_entries: Vec<&Entry> = Vec::new();
        for e in &entries.entries {
            match e.key.as_str() {
                "name" => name = self.string(file, e, "resource name"),
                "type" => type_name = self.string(file, e, "resource type").map(|t| (t, e.value_pos)),
                "description" => {
                    self.string(file, e, "description");
                }
                "when" => when_src = self.string(file, e, "`when`").map(|w| (w, e.value_pos)),
                "notify" => notify = self.names(file, e).into_iter().map(|n| (n, e.value_pos)).collect(),
                "depends_on" => depends = self.names(file, e).into_iter().map(|n| (n, e.value_pos)).collect(),
                _ => type_entries.push(e),
            }
        }
        let Some(name) = name else {
            self.error(loc, "resource has no `name`", Some("add `name: <a unique name in this module>`".into()));
            return None;
        };
        let Some((type_name, type_pos)) = type_name else {
            let hint = format!("add `type:`; known types: {}", self.catalog.type_names().join(", "));
            self.error(loc, format!("resource `{name}` has no `type`"), Some(hint));
            return None;
        };
        if let Some((src, pos)) = &when_src
            && let Err(e) = when::Condition::compile(src)
        {
            self.error(at(file, *pos), format!("invalid `when` condition: {e}"), None);
        }
        let index = self.modules.iter().map(|m| m.resources.len()).sum::<usize>() + module.resources.len();
        for (target, pos) in &notify {
            self.refs.push(PendingRef {
                from: index,
                target: target.clone(),
                kind: plan::Edge::Notify,
                loc: at(file, *pos),
            });
        }
        for (target, pos) in &depends {
            self.refs.push(PendingRef {
                from: index,
                target: target.clone(),
                kind: plan::Edge::Depends,
                loc: at(file, *pos),
            });
        }
        for e in &type_entries {
            self.secret_refs(file, e);
        }
        let fields: Map<String, Value> = type_entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect();
        let resource = Resource {
            module: module.name.clone(),
            name,
            type_name,
            when: when_src.map(|(w, _)| w),
            notify: notify.into_iter().map(|(n, _)| n).collect(),
            depends_on: depends.into_iter().map(|(n, _)| n).collect(),
            fields,
            loc,
        };
        self.typed(file, &resource, type_pos, &type_entries);
        Some(resource)
    }

    /// Reports every malformed `secret:` reference in one field.
    fn secret_refs(&mut self, file: &Path, e: &Entry) {
        for found in secretref::find_in(&e.value, &e.key) {
            if let Err(why) = found.reference {
                self.error(
                    at(file, e.value_pos),
                    format!("field `{}`: invalid secret reference `{}`: {why}", found.field, found.text),
                    Some(SECRET_PATH_HINT.into()),
                );
            }
        }
    }

    /// Module variables feed templates on the agent, where nothing resolves references.
    fn no_secrets_in_vars(&mut self, file: &Path, e: &Entry) {
        for found in secretref::find_in(&e.value, "vars") {
            self.error(
                at(file, e.value_pos),
                format!(
                    "`{}` in `{}`: secret references are resolved in resource fields only",
                    found.text, found.field
                ),
                Some("put the reference in the resource field that needs the value (e.g. a file's `content`)".into()),
            );
        }
    }

    /// Checks the type-specific fields against the type's spec.
    fn typed(&mut self, file: &Path, res: &Resource, type_pos: Pos, entries: &[&Entry]) {
        let Some(fields) = self.catalog.fields(&res.type_name) else {
            let names = self.catalog.type_names();
            let hint = match did_you_mean(&res.type_name, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("known types: {}", names.join(", ")),
            };
            self.error(at(file, type_pos), format!("unknown resource type `{}`", res.type_name), Some(hint));
            return;
        };
        let known: Vec<&str> = fields.iter().map(|f| f.name.as_str()).chain(COMMON_FIELDS.iter().copied()).collect();
        let mut shape_ok = true;
        for e in entries {
            if !fields.iter().any(|f| f.name == e.key) {
                shape_ok = false;
                self.unknown(
                    file,
                    e.key_pos,
                    &e.key,
                    &format!("a `{}` resource", res.type_name),
                    known.iter().copied(),
                );
            }
        }
        for f in fields.iter().filter(|f| f.required) {
            if !res.fields.contains_key(&f.name) {
                shape_ok = false;
                let hint = if f.doc.is_empty() { None } else { Some(format!("`{}`: {}", f.name, f.doc)) };
                self.error(
                    res.loc.clone(),
                    format!("`{}` resource `{}` is missing required field `{}`", res.type_name, res.name, f.name),
                    hint,
                );
            }
        }
        if !shape_ok {
            return;
        }
        let field_loc = |name: Option<&str>| -> Loc {
            name.and_then(|n| entries.iter().find(|e| e.key == n))
                .map(|e| at(file, e.value_pos))
                .unwrap_or_else(|| res.loc.clone())
        };
        let common = Common { name: &res.name, when: res.when.as_deref() };
        let facts = match self.catalog.inspect(&res.type_name, &Value::Object(res.fields.clone()), common) {
            Ok(f) => f,
            Err(errors) => {
                for e in errors {
                    let msg = match &e.field {
                        Some(f) => format!("field `{f}`: {}", e.message),
                        None => e.message.clone(),
                    };
                    self.error(field_loc(e.field.as_deref()), msg, None);
                }
                return;
            }
        };
        for t in &facts.targets {
            if let Some(why) = guard::refuse(t) {
                self.error(
                    res.loc.clone(),
                    format!("resource `{}` is refused: {why}", res.name),
                    Some("this guardrail cannot be switched off".into()),
                );
            }
        }
        for name in &facts.templates {
            if !self.templates.contains_key(name) {
                let field = entries.iter().find(|e| e.value.as_str() == Some(name.as_str())).map(|e| e.key.as_str());
                let hint = match did_you_mean(name, self.templates.keys().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "templates live under `templates/` in the configuration directory".to_string(),
                };
                self.error(field_loc(field), format!("template `{name}` does not exist"), Some(hint));
            }
        }
        for lint in facts.lints {
            let loc = field_loc(lint.field.as_deref());
            self.error(loc, format!("`{}`: {}", res.name, lint.message), lint.hint);
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Resolves references (`name` in the same module, or `module::name`), then orders.
fn resolve(config: &Config, refs: Vec<PendingRef>, diags: &mut Diagnostics) -> Plan {
    let all: Vec<&Resource> = config.resources().collect();
    let ids: HashMap<String, usize> = all.iter().enumerate().map(|(i, r)| (r.id(), i)).collect();
    let mut edges = Vec::new();
    for r in refs {
        let Some(from) = all.get(r.from) else { continue };
        let id = if r.target.contains("::") { r.target.clone() } else { format!("{}::{}", from.module, r.target) };
        match ids.get(&id) {
            Some(&to) => edges.push((r.from, to, r.kind)),
            None => {
                let same: Vec<&str> = all.iter().filter(|x| x.module == from.module).map(|x| x.name.as_str()).collect();
                let field = if r.kind == plan::Edge::Notify { "notify" } else { "depends_on" };
                let hint = match did_you_mean(&r.target, same.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => "name a resource of this module, or `module::name` for another module".to_string(),
                };
                diags.push(
                    Diagnostic::new(
                        r.loc,
                        format!("`{field}` of `{}` names `{}`, which does not exist", from.name, r.target),
                    )
                    .hint(hint),
                );
            }
        }
    }
    match plan::order(all.len(), &edges) {
        Ok(p) => p,
        Err(cycle) => {
            let names: Vec<String> = cycle.iter().map(|&i| all[i].id()).collect();
            let loc = all[cycle[0]].loc.clone();
            diags.push(
                Diagnostic::new(loc, format!("dependency cycle: {}", names.join(" -> ")))
                    .hint("remove one `depends_on` or `notify` link in this loop"),
            );
            Plan::default()
        }
    }
}

/// Stores references in their resolved `module::name` form.
fn rewrite_refs(config: &mut Config, plan: &Plan) {
    let ids: Vec<String> = config.resources().map(Resource::id).collect();
    let mut i = 0;
    for m in &mut config.modules {
        for r in &mut m.resources {
            r.notify = plan.notifies[i].iter().map(|&t| ids[t].clone()).collect();
            r.depends_on = plan.depends[i].iter().map(|&t| ids[t].clone()).collect();
            i += 1;
        }
    }
}
