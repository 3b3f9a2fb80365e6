//! The executor contract: a typed spec, `check` → `apply` → verify.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vigo_model::catalog::{Common, Lint, Target};

/// Whether a run may change the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    /// Dry run: report what would change, change nothing.
    NoOp,
}

/// One attribute that differs from the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// What differs: `ensure`, `content`, `mode`, `owner`, `line`, `run`, …
    pub attribute: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

impl Change {
    pub fn new(attribute: impl Into<String>, from: Option<String>, to: Option<String>) -> Self {
        Self { attribute: attribute.into(), from, to }
    }

    /// A change whose values are shown as-is (`mode: 0644 -> 0600`).
    pub fn set(attribute: impl Into<String>, from: impl Into<String>, to: impl Into<String>) -> Self {
        Self::new(attribute, Some(from.into()), Some(to.into()))
    }
}

/// What differs, as data: the changes `apply` will make, and a unified diff for content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Drift {
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

impl Drift {
    pub fn one(change: Change) -> Self {
        Self { changes: vec![change], diff: None }
    }
}

/// The answer of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    InSync,
    Drift(Drift),
}

impl Check {
    /// `InSync` when there are no changes, else `Drift`.
    pub fn from_changes(changes: Vec<Change>, diff: Option<String>) -> Self {
        if changes.is_empty() { Check::InSync } else { Check::Drift(Drift { changes, diff }) }
    }
}

/// What `apply` has to tell beyond "done" (e.g. a command's output).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Why an executor could not check or apply. Messages name the path, user or command at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{0}")]
    Failed(String),
    #[error("template {name}: {message}")]
    Template { name: String, message: String },
}

impl ExecError {
    pub fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        ExecError::Io { path: path.to_string(), source }
    }

    pub fn failed(msg: impl Into<String>) -> Self {
        ExecError::Failed(msg.into())
    }
}

impl From<crate::safe_fs::SafeFsError> for ExecError {
    fn from(e: crate::safe_fs::SafeFsError) -> Self {
        ExecError::Failed(e.to_string())
    }
}

/// What a resource's run tells beyond its changes: things left alone on purpose that
/// the operator should know about (e.g. a hard-linked file a recursive walk did not touch).
/// Not drift: nothing a later run would change. The same message given twice is kept once,
/// so `check` and the `apply` that re-plans may both give it.
#[derive(Debug, Default)]
pub struct Warnings(std::sync::Mutex<Vec<String>>);

impl Warnings {
    pub fn push(&self, message: String) {
        let mut list = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !list.contains(&message) {
            list.push(message);
        }
    }

    /// Every message so far, in order, leaving none.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

/// What an executor may know about the run it is part of.
pub struct Ctx<'a> {
    pub mode: Mode,
    /// The envoy's traits, as reported by the collectors.
    pub traits: &'a Value,
    /// The module's `vars:`.
    pub vars: &'a Value,
    /// Template sources by name (`templates/nginx.conf.tmpl`).
    pub templates: &'a BTreeMap<String, String>,
    /// Where the resource's warnings go (they end up in its report).
    pub warnings: &'a Warnings,
}

impl Ctx<'_> {
    /// Tells the operator about something left alone on purpose; see [`Warnings`].
    pub fn warn(&self, message: impl Into<String>) {
        self.warnings.push(message.into());
    }

    /// Renders the named template with `traits` and `vars`.
    pub fn render(&self, name: &str) -> Result<String, ExecError> {
        let source = self
            .templates
            .get(name)
            .ok_or_else(|| ExecError::Template { name: name.to_string(), message: "no such template".into() })?;
        let data = serde_json::json!({ "traits": self.traits, "vars": self.vars });
        vigo_model::template::render(name, source, &data)
            .map_err(|message| ExecError::Template { name: name.to_string(), message })
    }
}

/// A resource type. Implement this in one file under `types/` and add one line to the registry.
pub trait Executor: Send + Sync + 'static {
    /// The typed spec; use `#[serde(deny_unknown_fields)]` and doc comments on every field
    /// (they become the field docs of `vigo types show`).
    type Spec: DeserializeOwned + schemars::JsonSchema + Send + Sync + 'static;

    const NAME: &'static str;
    /// One line: what the type manages.
    const SUMMARY: &'static str;
    /// A complete example resource in YAML (a list item with `name` and `type`).
    const EXAMPLE: &'static str;

    /// What the spec manages, for the self-protection guardrails.
    fn targets(spec: &Self::Spec) -> Vec<Target>;

    /// Problems in a spec that parsed (missing guards, contradictory fields…).
    fn lint(_spec: &Self::Spec, _common: Common<'_>) -> Vec<Lint> {
        Vec::new()
    }

    /// Templates the spec renders.
    fn templates(_spec: &Self::Spec) -> Vec<String> {
        Vec::new()
    }

    /// In sync, or exactly the changes `apply` would make. Never changes the host.
    fn check(spec: &Self::Spec, ctx: &Ctx<'_>) -> Result<Check, ExecError>;

    /// Makes the changes `check` reported. Called only in `Mode::Enforce`.
    fn apply(spec: &Self::Spec, drift: &Drift, ctx: &Ctx<'_>) -> Result<Applied, ExecError>;

    /// After `apply`: is the resource now in the desired state? By default, `check` again.
    fn verify(spec: &Self::Spec, _applied: &Applied, ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        Self::check(spec, ctx)
    }
}

/// A parsed spec of some type, ready to run. Built by [`crate::Registry::prepare`].
pub trait Prepared: Send + Sync {
    fn check(&self, ctx: &Ctx<'_>) -> Result<Check, ExecError>;
    fn apply(&self, drift: &Drift, ctx: &Ctx<'_>) -> Result<Applied, ExecError>;
    fn verify(&self, applied: &Applied, ctx: &Ctx<'_>) -> Result<Check, ExecError>;
}

pub(crate) struct PreparedSpec<E: Executor>(pub E::Spec);

impl<E: Executor> Prepared for PreparedSpec<E> {
    fn check(&self, ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        E::check(&self.0, ctx)
    }
    fn apply(&self, drift: &Drift, ctx: &Ctx<'_>) -> Result<Applied, ExecError> {
        E::apply(&self.0, drift, ctx)
    }
    fn verify(&self, applied: &Applied, ctx: &Ctx<'_>) -> Result<Check, ExecError> {
        E::verify(&self.0, applied, ctx)
    }
}

/// Parses the type-specific fields of a resource into `T`, naming the field at fault.
pub fn parse_spec<T: DeserializeOwned>(fields: &Value) -> Result<T, vigo_model::SpecError> {
    serde_path_to_error::deserialize(fields).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let field = if path == "." || path.is_empty() {
            missing_field_name(&inner)
        } else {
            path.split(['.', '[']).next().map(str::to_string)
        };
        vigo_model::SpecError { field, message: inner }
    })
}

fn missing_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next().map(str::to_string)
}

/// Shows `value` as a change value, redacted when the spec marks it sensitive.
pub fn shown(value: &str, sensitive: bool) -> String {
    if sensitive { vigo_model::secret::REDACTED.to_string() } else { value.to_string() }
}

/// Serializes anything to JSON for a change value, falling back to its debug text.
pub fn json_text<T: Serialize + std::fmt::Debug>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| format!("{value:?}"))
}
