//! Publishing the configuration directory, the list of published versions and the
//! fleet summary.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, JsonBody};
use crate::server::Server;

/// Options of a publish.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Why this version exists, shown in the version list.
    #[serde(default)]
    pub message: Option<String>,
}

/// What a publish activated.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublishResponse {
    /// The new version number.
    pub version: i64,
    /// Modules in the published configuration.
    pub modules: usize,
    /// Envoys the server knew when it published.
    pub envoys: usize,
}

/// One published version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    pub version: i64,
    pub message: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Whether envoys are served this version.
    pub active: bool,
}

/// The fleet at a glance.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusResponse {
    /// Envoys not revoked.
    pub envoys: usize,
    /// Envoys that checked in within the last three intervals.
    pub active: usize,
    /// Envoys whose last check-in is older than three intervals.
    pub offline: usize,
    pub never_checked_in: usize,
    pub revoked: usize,
    /// The version envoys are served; `null` before the first publish.
    pub active_version: Option<i64>,
    /// Seconds between check-ins.
    pub interval_secs: u32,
    /// How many envoys are in each convergence state (`converged`, `relapsed`, …).
    pub states: std::collections::BTreeMap<String, usize>,
}

/// Validates the configuration directory and, when it is valid, makes it the active version.
#[utoipa::path(
    post,
    path = "/api/v1/publish",
    tag = "publish",
    request_body(content = PublishRequest, description = "optional; an empty body publishes without a message"),
    responses(
        (status = 200, description = "published", body = PublishResponse),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 422, description = "configuration invalid; `problems` lists every problem", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn publish(
    State(server): State<Server>,
    JsonBody(req): JsonBody<PublishRequest>,
) -> Result<Json<PublishResponse>, ApiError> {
    let p = server.publish(req.message.as_deref().unwrap_or_default()).await?;
    Ok(Json(PublishResponse { version: p.number, modules: p.modules, envoys: p.envoys }))
}

/// Lists published versions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/versions",
    tag = "publish",
    responses(
        (status = 200, description = "every published version", body = Vec<VersionInfo>),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn versions(State(server): State<Server>) -> Result<Json<Vec<VersionInfo>>, ApiError> {
    let rows = server.versions().await?;
    Ok(Json(
        rows.into_iter()
            .map(|v| VersionInfo { version: v.number, message: v.message, created_at: v.created_at, active: v.active })
            .collect(),
    ))
}

/// Summarises the fleet: how many envoys check in, are offline, never checked in or are revoked.
#[utoipa::path(
    get,
    path = "/api/v1/status",
    tag = "fleet",
    responses(
        (status = 200, description = "fleet summary", body = StatusResponse),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn status(State(server): State<Server>) -> Json<StatusResponse> {
    let s = server.status();
    Json(StatusResponse {
        envoys: s.envoys,
        active: s.active,
        offline: s.offline,
        never_checked_in: s.never_checked_in,
        revoked: s.revoked,
        active_version: s.policy_number,
        interval_secs: s.interval_secs,
        states: s.states,
    })
}
