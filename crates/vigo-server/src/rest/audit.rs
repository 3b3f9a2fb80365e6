//! The audit trail over REST: listing events, verifying the chain, and the login
//! check that `vigocli login` records.

use axum::Json;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ErrorBody};
use crate::audit::Verification;
use crate::server::{OpError, Server};

/// Events listed when the request names no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most events one listing returns.
pub const MAX_LIMIT: u32 = 10_000;

/// Which events to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListAudit {
    /// How many of the newest events to return (default 100, at most 10000).
    pub limit: Option<u32>,
}

/// One event of the audit trail.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// Admin token id, envoy name or `system`.
    pub actor: String,
    /// `publish`, `publish.failed`, `token.create`, `token.revoke`, `enroll`,
    /// `envoy.revoke`, `login` or `admin_token.create`.
    pub action: String,
    /// What the action was done to.
    pub subject: String,
    /// Particulars of the action; never a secret.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Hash of the event before.
    pub prev_hash: String,
    /// SHA-256 over this event and `prev_hash`.
    pub hash: String,
}

impl From<vigo_store::AuditRow> for AuditEntry {
    fn from(r: vigo_store::AuditRow) -> Self {
        // A detail that no longer parses (edited by hand) is still shown, as text.
        let detail = serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::String(r.detail));
        Self {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            subject: r.subject,
            detail,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Who the admin token belongs to.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// The admin token's id.
    pub admin: String,
}

/// Lists the newest events of the audit trail, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    tag = "audit",
    params(ListAudit),
    responses(
        (status = 200, description = "the newest events, in chain order", body = Vec<AuditEntry>),
        (status = 400, description = "limit out of range", body = ErrorBody),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn list_audit(
    State(server): State<Server>,
    Query(query): Query<ListAudit>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    let limit = super::limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let rows = server.store.recent_audit_events(i64::from(limit)).await.map_err(OpError::from)?;
    Ok(Json(rows.into_iter().map(AuditEntry::from).collect()))
}

/// Verifies the whole audit chain as it is stored now; a broken chain is a finding
/// (200 with `intact: false`), not an error.
#[utoipa::path(
    get,
    path = "/api/v1/audit/verify",
    tag = "audit",
    responses(
        (status = 200, description = "the verification result", body = Verification),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn verify_audit(State(server): State<Server>) -> Result<Json<Verification>, ApiError> {
    let verification = server.audit.verify(&server.store).await.map_err(OpError::from)?;
    if let Some(b) = &verification.broken {
        tracing::error!(seq = b.seq, kind = ?b.kind, "{}", b.message);
    }
    Ok(Json(verification))
}

/// Checks the admin token and records the login in the audit trail.
#[utoipa::path(
    post,
    path = "/api/v1/login",
    tag = "audit",
    responses(
        (status = 200, description = "the token is valid", body = LoginResponse),
        (status = 401, description = "missing or wrong admin token", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn login(State(server): State<Server>) -> Json<LoginResponse> {
    let admin = server.actor().await;
    server.audit("login", &admin, serde_json::json!({})).await;
    Json(LoginResponse { admin })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use serde_json::Value;
    use tower::ServiceExt as _;

    use crate::server::Server;
    use crate::settings::Settings;
    use crate::state_dir::{self, StateDir};

    async fn call(router: &axum::Router, method: Method, uri: &str, token: &str) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .expect("request");
        let resp = router.clone().oneshot(req).await.expect("router is infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Admin actions over REST land in the trail under the admin's token id, with no
    /// secret in it, and tampering with the database shows in `verify`.
    #[tokio::test]
    async fn actions_are_recorded_listed_and_verified() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::new(dir.path().join("state"));
        let admin = state_dir::init(&state, &[], None).await.expect("init").admin_token.expect("admin token");
        let admin_id = admin.split('_').nth(1).expect("vga_<id>_<secret>").to_string();
        std::fs::create_dir_all(dir.path().join("config/modules")).expect("config dir");
        let url = state.sqlite_url();
        let store = vigo_store::Store::open(&url).await.expect("store");
        let (server, _writer) =
            Server::open(state, dir.path().join("config"), Settings::default(), store).await.expect("server");
        let router = super::super::router(server.clone());

        let (code, body) = call(&router, Method::POST, "/api/v1/login", &admin).await;
        assert_eq!((code, body["admin"].as_str()), (StatusCode::OK, Some(admin_id.as_str())));
        let (code, created) = call(&router, Method::POST, "/api/v1/tokens", &admin).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "an empty body has no hosts: {created}");
        let created = server.create_token("web-*", None).await.expect("token");
        let (code, _) = call(&router, Method::DELETE, &format!("/api/v1/tokens/{}", created.id), &admin).await;
        assert_eq!(code, StatusCode::NO_CONTENT);

        let (code, list) = call(&router, Method::GET, "/api/v1/audit", &admin).await;
        assert_eq!(code, StatusCode::OK);
        let seen: Vec<(&str, &str, &str)> = list
            .as_array()
            .expect("array")
            .iter()
            .map(|e| {
                (
                    e["actor"].as_str().unwrap_or(""),
                    e["action"].as_str().unwrap_or(""),
                    e["subject"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("system", "admin_token.create", admin_id.as_str()),
                (admin_id.as_str(), "login", admin_id.as_str()),
                // Called outside any request: nobody but the system to blame.
                ("system", "token.create", created.id.as_str()),
                (admin_id.as_str(), "token.revoke", created.id.as_str()),
            ]
        );
        assert_eq!(list[2]["detail"]["hosts"], "web-*");
        let text = list.to_string();
        assert!(!text.contains(&created.token) && !text.contains(&admin), "no secret in the trail");
        let (_, last) = call(&router, Method::GET, "/api/v1/audit?limit=1", &admin).await;
        assert_eq!(last.as_array().map(|a| (a.len(), a[0]["seq"].as_i64())), Some((1, Some(4))));
        let (code, err) = call(&router, Method::GET, "/api/v1/audit?limit=0", &admin).await;
        assert_eq!((code, err["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_request")));

        let (code, v) = call(&router, Method::GET, "/api/v1/audit/verify", &admin).await;
        assert_eq!((code, v["intact"].as_bool(), v["events"].as_u64()), (StatusCode::OK, Some(true), Some(4)), "{v}");

        let raw = sqlx::sqlite::SqlitePool::connect(&url).await.expect("second pool");
        sqlx::query("UPDATE audit_events SET actor = 'nobody' WHERE seq = 2").execute(&raw).await.expect("tamper");
        let (code, v) = call(&router, Method::GET, "/api/v1/audit/verify", &admin).await;
        assert_eq!((code, v["intact"].as_bool()), (StatusCode::OK, Some(false)), "{v}");
        assert_eq!(v["broken"]["seq"], 2);
        assert_eq!(v["broken"]["kind"], "edited");
        assert_eq!(v["broken"]["message"], "audit chain broken at event 2: hash mismatch (row edited)");

        let (code, _) = call(&router, Method::GET, "/api/v1/audit/verify", "vga_00000000_wrong").await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
    }
}
