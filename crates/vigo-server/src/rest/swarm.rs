//! The swarm over REST: vigosync across the fleet, which envoy holds which version of
//! each file and what transfers are pending.

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{ApiError, ErrorBody};
use crate::server::Server;
use crate::vigosync::SyncStatus;

/// Which users to show.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Only this user's files.
    pub user: Option<String>,
}

/// vigosync across the fleet: per user and file, the newest version, what each envoy
/// where the user takes part holds (or that it deleted its copy), and pending transfers.
#[utoipa::path(
    get,
    path = "/api/v1/swarm/sync",
    tag = "swarm",
    params(SyncQuery),
    responses(
        (status = 200, description = "every synced file, by user", body = SyncStatus),
        (status = 400, description = "empty user name", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn sync_status(
    State(server): State<Server>,
    Query(query): Query<SyncQuery>,
) -> Result<Json<SyncStatus>, ApiError> {
    if query.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
        return Err(ApiError::invalid_request("`user` must name a user, such as `alice`"));
    }
    Ok(Json(server.vigosync.status(query.user.as_deref())))
}
