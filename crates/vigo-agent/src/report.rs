//! Run reports: what happened to each resource, as data.

use serde::Serialize;
use vigo_executors::{Change, Mode};

/// What happened to one resource in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// In sync, nothing to do.
    Unchanged,
    /// Drift found and repaired (in no-op mode: drift found that would be repaired).
    Changed,
    /// Could not check, apply or verify.
    Failed,
    /// Not run: its condition is false, or something it depends on failed.
    Skipped,
}

/// One resource's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceReport {
    pub module: String,
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub status: Status,
    pub changes: Vec<Change>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why a skipped resource did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Output tail of a command the resource ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub duration_ms: u64,
}

impl ResourceReport {
    pub fn id(&self) -> String {
        format!("{}::{}", self.module, self.name)
    }
}

/// Counts over a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    pub total: usize,
    pub unchanged: usize,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub duration_ms: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: Mode,
    /// Why the run as a whole failed (e.g. the policy does not validate on this envoy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resources: Vec<ResourceReport>,
    pub summary: Summary,
}

impl Report {
    pub fn new(mode: Mode, resources: Vec<ResourceReport>, duration_ms: u64) -> Self {
        let count = |s: Status| resources.iter().filter(|r| r.status == s).count();
        let summary = Summary {
            total: resources.len(),
            unchanged: count(Status::Unchanged),
            changed: count(Status::Changed),
            failed: count(Status::Failed),
            skipped: count(Status::Skipped),
            duration_ms,
        };
        Self { mode, error: None, resources, summary }
    }

    /// A run that could not start: no resource ran.
    pub fn failed(mode: Mode, error: String) -> Self {
        Self { error: Some(error), ..Self::new(mode, Vec::new(), 0) }
    }

    /// Puppet's `--detailed-exitcodes`: 0 nothing changed, 2 changes, 4 failures, 6 both.
    pub fn detailed_exit_code(&self) -> i32 {
        let changes = if self.summary.changed > 0 { 2 } else { 0 };
        let failures = if self.summary.failed > 0 || self.error.is_some() { 4 } else { 0 };
        changes | failures
    }
}
