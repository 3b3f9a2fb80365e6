//! Envoys (enrolled agents): list, show one with its traits and last report, its run
//! history, revoke.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use crate::convergence::{ConvergenceState, state_of};
use crate::fleet::Envoy;
use crate::server::{OpError, Server};

/// Reports listed when the request names no limit.
pub const DEFAULT_REPORTS: u32 = 50;
/// Most reports one listing returns.
pub const MAX_REPORTS: u32 = 10_000;

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

/// Which reports to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListReports {
    /// How many of the newest reports to return (default 50, at most 10000).
    pub limit: Option<u32>,
}

/// One stored run report and the runs that repeated its outcome.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportEntry {
    /// The agent's sequence number of the run.
    pub seq: i64,
    /// Unix seconds.
    pub received_at: i64,
    /// The run report as the agent sent it (a report that is not JSON is a string).
    #[schema(value_type = Object)]
    pub report: serde_json::Value,
    /// Later runs with the same outcome (the report but for timings); `null`: none.
    pub repeats: Option<Repeated>,
}

impl From<vigo_store::ReportRow> for ReportEntry {
    fn from(r: vigo_store::ReportRow) -> Self {
        let report = serde_json::from_str(&r.report_json).unwrap_or(serde_json::Value::String(r.report_json));
        Self { seq: r.seq, received_at: r.received_at, report, repeats: r.repeats.map(Repeated::from) }
    }
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

impl From<vigo_store::Repeats> for Repeated {
    fn from(r: vigo_store::Repeats) -> Self {
        Self { count: r.count, last_seq: r.last_seq, last_at: r.last_at }
    }
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
            repeats: e.repeats().map(Repeated::from),
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

/// An envoy's run history: its newest stored reports, oldest first, each with the
/// runs that repeated its outcome.
#[utoipa::path(
    get,
    path = "/api/v1/envoys/{name}/reports",
    tag = "envoys",
    params(("name" = String, Path, description = "envoy name"), ListReports),
    responses(
        (status = 200, description = "the newest reports, in run order", body = Vec<ReportEntry>),
        (status = 400, description = "limit out of range", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such envoy", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_reports(
    State(server): State<Server>,
    Path(name): Path<String>,
    Query(query): Query<ListReports>,
) -> Result<Json<Vec<ReportEntry>>, ApiError> {
    let limit = super::limit(query.limit, DEFAULT_REPORTS, MAX_REPORTS)?;
    server.envoy(&name)?;
    let rows = server.store.recent_reports(&name, i64::from(limit)).await.map_err(OpError::from)?;
    Ok(Json(rows.into_iter().map(ReportEntry::from).collect()))
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
