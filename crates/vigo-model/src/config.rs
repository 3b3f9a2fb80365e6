//! A validated configuration: modules, resources and templates, ready to plan.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::diag::Loc;

/// One resource as declared, with its type-specific fields still untyped.
#[derive(Debug, Clone)]
pub struct Resource {
    pub module: String,
    pub name: String,
    pub type_name: String,
    pub when: Option<String>,
    /// Targets, resolved to `module::name` form.
    pub notify: Vec<String>,
    /// Targets, resolved to `module::name` form.
    pub depends_on: Vec<String>,
    /// The type-specific fields (everything but the common ones).
    pub fields: Map<String, Value>,
    pub loc: Loc,
}

impl Resource {
    /// The resource's fleet-wide identity: `module::name`.
    pub fn id(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

/// A module: a named list of resources with its variables.
#[derive(Debug, Clone)]
pub struct Module {
    pub name: String,
    pub file: PathBuf,
    /// The module's `vars:` (an object; empty when absent).
    pub vars: Value,
    pub resources: Vec<Resource>,
}

/// A whole configuration that passed validation.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub root: PathBuf,
    pub modules: Vec<Module>,
    /// Template sources by name relative to the root (`templates/nginx.conf.tmpl`).
    pub templates: BTreeMap<String, String>,
}

impl Config {
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.modules.iter().flat_map(|m| m.resources.iter())
    }

    pub fn module(&self, name: &str) -> Option<&Module> {
        self.modules.iter().find(|m| m.name == name)
    }
}
