//! Envoys (enrolled agents): list, show one with its traits and last report, revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody};
use crate::convergence::{ConvergenceState, state_of};
use crate::fleet::Envoy;
use crate::server::Server;

/// An envoy as listed. Keys stay on the server.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvoySummary {
    pub name: String,
    /// Unix seconds.
    pub enrolled_at: i64,
    /// Unix seconds of the last accepted check-in; `null`: never.
    pub last_checkin: Option<i64>,
    /// The bundle version it last reported running.
    pub policy_version: Option<String>,
    pub revoked: bool,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// Convergence state computed from the last report and check-in.
    pub state: ConvergenceState,
}

/// One envoy in full.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnvoyDetail {
    #[serde(flatten)]
    pub summary: EnvoySummary,
    /// SHA-256 fingerprint of its client certificate.
    pub cert_fingerprint: String,
    /// The traits it last sent; `null` before its first check-in.
    pub traits: Option<serde_json::Value>,
    /// Its last run report; `null` before its first report.
    pub last_report: Option<serde_json::Value>,
    /// Sequence number of `last_report`.
    pub report_seq: i64,
    /// Later runs whose outcome was the same as `last_report`'s (it differed only in
    /// timings); `null` when there were none.
    pub repeats: Option<Repeated>,
}

/// Runs that repeated a report's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Repeated {
    /// How many runs.
    pub count: i64,
    /// The newest one's sequence number.
    pub last_seq: i64,
    /// When the newest one was received, Unix seconds.
    pub last_at: i64,
}

impl EnvoySummary {
    fn of(e: &Envoy, server: &Server) -> Self {
        Self {
            state: state_of(e, crate::now(), i64::from(server.settings.interval_secs)),
            name: e.name.clone(),
            enrolled_at: e.enrolled_at,
            last_checkin: e.last_checkin,
            policy_version: e.policy_version.clone(),
            revoked: e.revoked_at.is_some(),
            revoked_at: e.revoked_at,
        }
    }
}

impl EnvoyDetail {
    fn of(e: &Envoy, server: &Server) -> Self {
        // A report that is not JSON (an older agent, a truncated row) is still worth
        // showing, so it travels as a string rather than being dropped.
        let last_report = e
            .last_report
            .as_deref()
            .map(|text| serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.clone())));
        Self {
            summary: EnvoySummary::of(e, server),
            cert_fingerprint: e.cert_fingerprint.clone(),
            traits: e.traits.as_deref().cloned(),
            last_report,
            report_seq: e.report_seq(),
            repeats: e.repeats().map(|r| Repeated { count: r.count, last_seq: r.last_seq, last_at: r.last_at }),
        }
    }
}

/// Lists every envoy, sorted by name.
#[utoipa::path(
    get,
    path = "/api/v1/envoys",
    tag = "envoys",
    responses(
        (status = 200, description = "every envoy", body = Vec<EnvoySummary>),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_envoys(State(server): State<Server>) -> Json<Vec<EnvoySummary>> {
    Json(server.envoys().iter().map(|e| EnvoySummary::of(e, &server)).collect())
}

/// Shows one envoy with its traits and last report.
#[utoipa::path(
    get,
    path = "/api/v1/envoys/{name}",
    tag = "envoys",
    params(("name" = String, Path, description = "envoy name")),
    responses(
        (status = 200, description = "the envoy", body = EnvoyDetail),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such envoy", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn show_envoy(State(server): State<Server>, Path(name): Path<String>) -> Result<Json<EnvoyDetail>, ApiError> {
    Ok(Json(EnvoyDetail::of(&server.envoy(&name)?, &server)))
}

/// Revokes an envoy: its certificate and signatures are refused from now on.
#[utoipa::path(
    post,
    path = "/api/v1/envoys/{name}/revoke",
    tag = "envoys",
    params(("name" = String, Path, description = "envoy name")),
    responses(
        (status = 204, description = "envoy revoked"),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such envoy", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn revoke_envoy(State(server): State<Server>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    server.revoke_envoy(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
