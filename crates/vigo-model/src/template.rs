//! Templates in Go text/template syntax, rendered with traits and module variables.

use serde_json::Value;

/// Checks a template's syntax without rendering it.
pub fn check(_name: &str, _source: &str) -> Result<(), String> {
    Ok(())
}

/// Renders `source` with `data` (an object with `traits` and `vars`); a missing key is an error.
pub fn render(_name: &str, _source: &str, _data: &Value) -> Result<String, String> {
    Err("not implemented".into())
}
