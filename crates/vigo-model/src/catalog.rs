//! What the model needs to know about resource types, without knowing executors.
//!
//! The executor registry implements [`Catalog`]; validation asks it which types
//! exist, which fields each one takes, and what a typed spec manages (for the
//! guardrails) or references (templates).

use std::path::PathBuf;

use serde_json::Value;

/// One field of a resource type's spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldInfo {
    pub name: String,
    pub required: bool,
    /// The field's JSON-schema type, e.g. `string`, `boolean`, `array`.
    pub kind: String,
    pub doc: String,
}

/// Something on the host a resource manages; checked against the self-protection guardrails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A path the resource writes, removes or changes.
    Path(PathBuf),
    /// A service unit the resource starts, stops or changes.
    Service(String),
    /// A command line the resource runs (checked for commands that stop or remove Vigo itself).
    Command(String),
}

/// A problem a type finds in a spec that parsed fine (e.g. an `exec` without a guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// The field at fault, if one is; otherwise the resource as a whole.
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

/// Why a spec did not parse: the field at fault (if known) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    pub field: Option<String>,
    pub message: String,
}

/// What a valid spec manages and references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeFacts {
    pub targets: Vec<Target>,
    /// Template names (`templates/…`, relative to the config directory) the spec renders.
    pub templates: Vec<String>,
    pub lints: Vec<Lint>,
}

/// The common fields of a resource that a type may need to judge its spec.
#[derive(Debug, Clone, Copy)]
pub struct Common<'a> {
    pub name: &'a str,
    pub when: Option<&'a str>,
}

/// The set of resource types a configuration may use.
pub trait Catalog {
    /// Every type name, alphabetical.
    fn type_names(&self) -> Vec<&'static str>;
    /// The fields of `type_name`, or `None` for an unknown type.
    fn fields(&self, type_name: &str) -> Option<&[FieldInfo]>;
    /// Parses `fields` (a JSON object of the type-specific fields) into the typed spec
    /// and reports what it manages. Errors name the field at fault where possible.
    fn inspect(&self, type_name: &str, fields: &Value, common: Common<'_>) -> Result<TypeFacts, Vec<SpecError>>;
}
