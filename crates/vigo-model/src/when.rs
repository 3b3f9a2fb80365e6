//! `when:` conditions, written in CEL, evaluated over the envoy's traits.

use serde_json::Value;

/// A compiled `when:` condition.
pub struct Condition {
    source: String,
}

/// What a condition sees when it is evaluated.
#[derive(Debug, Clone, Copy)]
pub struct WhenEnv<'a> {
    /// The whole trait tree (`traits.os.family`, …).
    pub traits: &'a Value,
    /// True when a resource that notifies this one changed in this run.
    pub changed: bool,
}

impl Condition {
    /// Compiles a condition; the error explains what is wrong with it.
    pub fn compile(source: &str) -> Result<Self, String> {
        Ok(Self { source: source.to_string() })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition; a non-boolean result is an error.
    pub fn eval(&self, _env: WhenEnv<'_>) -> Result<bool, String> {
        Err("not implemented".into())
    }
}

/// Whether a condition refers to the word `changed` (a handler that runs only when notified).
pub fn mentions_changed(source: &str) -> bool {
    source
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == "changed")
}
