//! The Vigo configuration language: YAML modules → validated, ordered plans.
//!
//! This crate never touches the host: it reads the text it is given and decides.
//! Everything it does is testable from strings.

pub mod assign;
pub mod catalog;
pub mod config;
pub mod diag;
pub mod guard;
pub mod plan;
pub mod raw;
pub mod secret;
pub mod secretref;
pub mod source;
pub mod template;
pub mod validate;
pub mod when;

pub use catalog::{Catalog, FieldInfo, Lint, SpecError, Target, TypeFacts};
pub use config::{Config, Module, Resource};
pub use diag::{Diagnostic, Diagnostics, Loc};
pub use plan::Plan;
pub use secret::Secret;
