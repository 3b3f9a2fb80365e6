//! Convergence states: what an envoy's last report and last check-in say about it.
//!
//! - `offline`: no check-in for three intervals (whatever its last report said);
//! - `no_data`: enrolled, never reported;
//! - `failed`: the last run failed as a whole (its report carries a run error);
//! - `diverged`: some resource drifted and could not be repaired (a failed resource with changes);
//! - `degraded`: some resources failed, none of them with unrepaired drift (check errors);
//! - `relapsed`: drift was found and repaired;
//! - `converged`: nothing to change;
//! - `revoked`: cut off by an admin.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fleet::Envoy;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConvergenceState {
    Converged,
    Relapsed,
    Diverged,
    Degraded,
    Failed,
    Offline,
    NoData,
    Revoked,
}

impl ConvergenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Converged => "converged",
            Self::Relapsed => "relapsed",
            Self::Diverged => "diverged",
            Self::Degraded => "degraded",
            Self::Failed => "failed",
            Self::Offline => "offline",
            Self::NoData => "no_data",
            Self::Revoked => "revoked",
        }
    }
}

/// The state of an envoy at `now`, with check-ins expected every `interval_secs`.
pub fn state_of(e: &Envoy, now: i64, interval_secs: i64) -> ConvergenceState {
    if e.revoked_at.is_some() {
        return ConvergenceState::Revoked;
    }
    if e.last_checkin.is_some_and(|t| now - t > 3 * interval_secs) {
        return ConvergenceState::Offline;
    }
    match e.last_report.as_deref() {
        None => ConvergenceState::NoData,
        Some(text) => from_report(text),
    }
}

fn from_report(text: &str) -> ConvergenceState {
    let Ok(report) = serde_json::from_str::<Value>(text) else {
        return ConvergenceState::Failed;
    };
    if report.get("error").is_some_and(|e| !e.is_null()) {
        return ConvergenceState::Failed;
    }
    let count = |k: &str| report["summary"][k].as_u64().unwrap_or(0);
    if count("failed") > 0 {
        let unrepaired = report["resources"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| r["status"] == "failed" && r["changes"].as_array().is_some_and(|c| !c.is_empty()))
        });
        return if unrepaired { ConvergenceState::Diverged } else { ConvergenceState::Degraded };
    }
    if count("changed") > 0 { ConvergenceState::Relapsed } else { ConvergenceState::Converged }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn envoy(last_checkin: Option<i64>, report: Option<&str>, revoked: bool) -> Envoy {
        Envoy {
            name: "web-1".into(),
            key: vigo_pki::SigningKey::generate().public_key(),
            cert_fingerprint: String::new(),
            enrolled_at: 0,
            revoked_at: revoked.then_some(5),
            last_checkin,
            traits: None,
            traits_digest: None,
            policy_version: None,
            last_report: report.map(|r| Arc::new(r.to_string())),
            reports: crate::fleet::ReportProgress::loaded(
                report.map(|r| crate::runs::Streak { seq: 1, outcome: crate::runs::stored_outcome(r), repeats: None }),
                1,
            ),
            bundle: None,
            age_recipient: None,
        }
    }

    #[test]
    fn every_state_from_its_scenario() {
        let clean = r#"{"resources":[],"summary":{"changed":0,"failed":0}}"#;
        let repaired = r#"{"resources":[{"status":"changed","changes":[{"attribute":"content"}]}],"summary":{"changed":1,"failed":0}}"#;
        let unrepaired = r#"{"resources":[{"status":"failed","changes":[{"attribute":"mode"}]}],"summary":{"changed":0,"failed":1}}"#;
        let check_error = r#"{"resources":[{"status":"failed","changes":[]}],"summary":{"changed":0,"failed":1}}"#;
        let run_error =
            r#"{"error":"policy does not validate here","resources":[],"summary":{"changed":0,"failed":0}}"#;
        let now = 1_000;
        let cases = [
            (envoy(Some(990), Some(clean), false), ConvergenceState::Converged),
            (envoy(Some(990), Some(repaired), false), ConvergenceState::Relapsed),
            (envoy(Some(990), Some(unrepaired), false), ConvergenceState::Diverged),
            (envoy(Some(990), Some(check_error), false), ConvergenceState::Degraded),
            (envoy(Some(990), Some(run_error), false), ConvergenceState::Failed),
            (envoy(Some(990), Some("not json"), false), ConvergenceState::Failed),
            (envoy(Some(1_000 - 46), Some(clean), false), ConvergenceState::Offline),
            (envoy(Some(1_000 - 45), Some(clean), false), ConvergenceState::Converged),
            (envoy(Some(990), None, false), ConvergenceState::NoData),
            (envoy(None, None, false), ConvergenceState::NoData),
            (envoy(Some(990), Some(clean), true), ConvergenceState::Revoked),
        ];
        for (i, (e, want)) in cases.iter().enumerate() {
            assert_eq!(state_of(e, now, 15), *want, "case {i}");
        }
    }
}
