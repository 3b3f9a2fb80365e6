//! Enrollment tokens: create (the secret is shown once), list, revoke.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ErrorBody, JsonBody};
use crate::server::{CreatedToken, Server};

/// What a new enrollment token may enroll.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Host-name glob the token may enroll, such as `web-*`.
    pub hosts: String,
    /// Seconds until the token expires; omitted: it never expires.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// An enrollment token as listed: never its secret nor its hash.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub id: String,
    pub hosts: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `null`: never expires.
    pub expires_at: Option<i64>,
    pub used_at: Option<i64>,
    /// The envoy that enrolled with it.
    pub used_by: Option<String>,
    pub revoked: bool,
}

impl From<vigo_store::TokenRow> for TokenInfo {
    fn from(r: vigo_store::TokenRow) -> Self {
        Self {
            id: r.id,
            hosts: r.hosts,
            created_at: r.created_at,
            expires_at: r.expires_at,
            used_at: r.used_at,
            used_by: r.used_by,
            revoked: r.revoked,
        }
    }
}

/// Creates an enrollment token; the response is the only time its secret is shown.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body = CreateToken,
    responses(
        (status = 201, description = "token created", body = CreatedToken),
        (status = 400, description = "bad hosts glob or body", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn create_token(
    State(server): State<Server>,
    JsonBody(req): JsonBody<CreateToken>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let created = server.create_token(&req.hosts, req.ttl_secs).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists every enrollment token, revoked and used ones included.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses(
        (status = 200, description = "every enrollment token", body = Vec<TokenInfo>),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_tokens(State(server): State<Server>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(server.tokens().await?.into_iter().map(TokenInfo::from).collect()))
}

/// Revokes an enrollment token so it can enroll nothing more.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "token revoked"),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
        (status = 404, description = "no such token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn revoke_token(State(server): State<Server>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    server.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
