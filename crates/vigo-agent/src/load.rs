//! Loading a configuration for a local run: read, validate against the built-in types.

use std::path::Path;

use vigo_executors::Registry;
use vigo_model::{Config, Diagnostics, Plan};

/// Reads and validates the configuration at `path` (a directory or one module file).
pub fn load(path: &Path, registry: &Registry) -> Result<(Config, Plan), Diagnostics> {
    let sources = vigo_model::source::read(path)?;
    vigo_model::validate::compile(&sources, registry)
}
