//! The REST API under `/api/v1` (admin bearer tokens), described by a generated OpenAPI document.
//!
//! Every handler carries a `#[utoipa::path]` and is mounted through an
//! `OpenApiRouter`, so the document served at `/api/v1/openapi.json` is built
//! from the same list that routes requests and cannot drift from it. Handlers
//! only translate JSON to [`Server`] calls and back; errors leave in the shape
//! of [`error::ErrorBody`].

mod audit;
pub mod envoys;
mod error;
mod publish;
mod swarm;
mod tokens;

#[cfg(test)]
mod tests;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use audit::{AuditEntry, LoginResponse};
pub use envoys::{EnvoyDetail, EnvoySummary};
pub use error::{ApiError, ErrorBody, Problem};
pub use publish::{PublishRequest, PublishResponse, StatusResponse, VersionInfo};
pub use swarm::SyncQuery;
pub use tokens::{CreateToken, TokenInfo};

use crate::server::Server;

/// Largest request body accepted, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// The name of the bearer security scheme in the OpenAPI document.
const ADMIN_TOKEN: &str = "admin_token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Vigo server API", description = "Admin API of vigosrv: enrollment tokens, envoys, publish, fleet status, audit trail, swarm."),
    modifiers(&AdminTokenScheme),
    tags(
        (name = "tokens", description = "enrollment tokens"),
        (name = "envoys", description = "enrolled agents"),
        (name = "publish", description = "publishing the configuration and its versions"),
        (name = "fleet", description = "fleet summary"),
        (name = "audit", description = "the tamper-evident audit trail and admin login"),
        (name = "swarm", description = "the peer-to-peer layer: vigosync across the fleet"),
        (name = "public", description = "no authentication"),
    )
)]
struct ApiDoc;

struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("an admin token, such as the one `vigosrv init` writes to admin.token"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(ADMIN_TOKEN, SecurityScheme::Http(scheme));
    }
}

/// The OpenAPI document, serialised once when the router is built.
#[derive(Clone)]
struct OpenApiJson(Bytes);

/// Every route of the REST API.
pub fn router(server: Server) -> Router {
    let (router, openapi) = api(server);
    // The document is complete only after every route is registered, so it reaches
    // its own handler as an extension rather than through the router's state.
    let json = serde_json::to_vec(&openapi).expect("an OpenAPI document built from typed values serialises");
    router.layer(Extension(OpenApiJson(Bytes::from(json))))
}

/// The routes and the OpenAPI document describing them.
pub fn api(server: Server) -> (Router, utoipa::openapi::OpenApi) {
    let admin = OpenApiRouter::new()
        .routes(routes!(tokens::create_token, tokens::list_tokens))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(envoys::list_envoys))
        .routes(routes!(envoys::show_envoy))
        .routes(routes!(envoys::list_reports))
        .routes(routes!(envoys::revoke_envoy))
        .routes(routes!(publish::publish))
        .routes(routes!(publish::versions))
        .routes(routes!(publish::status))
        .routes(routes!(audit::list_audit))
        .routes(routes!(audit::verify_audit))
        .routes(routes!(audit::login))
        .routes(routes!(swarm::sync_status))
        .route_layer(axum::middleware::from_fn_with_state(server.clone(), require_admin));
    let public = OpenApiRouter::new().routes(routes!(ca)).routes(routes!(openapi_json));
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(admin).merge(public).split_for_parts();
    let router = router
        .fallback(|| async { ApiError::not_found("no such API endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint does not take that method",
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(server);
    (router, openapi)
}

/// Lets a request through only with `Authorization: Bearer <admin token>`.
async fn require_admin(State(server): State<Server>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return ApiError::unauthorized("missing `Authorization: Bearer <admin token>` header").into_response();
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return ApiError::unauthorized("the Authorization header must be `Bearer <admin token>`").into_response();
    };
    if !server.is_admin(token) {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), reason = "unknown admin token", "REST request refused");
        return ApiError::unauthorized("the admin token is not valid").into_response();
    }
    crate::audit::as_admin(crate::state_dir::admin_token_hash(token), next.run(req)).await
}

/// The fleet CA certificate (PEM); agents compare its SHA-256 fingerprint with the one they were given.
#[utoipa::path(
    get,
    path = "/api/v1/ca",
    tag = "public",
    responses((status = 200, description = "the fleet CA certificate, PEM", body = String, content_type = "application/x-pem-file"))
)]
async fn ca(State(server): State<Server>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-pem-file")], server.ca.cert_pem().to_string()).into_response()
}

/// This document: the OpenAPI 3.1 description of the API.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "public",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json"))
)]
async fn openapi_json(Extension(doc): Extension<OpenApiJson>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], doc.0).into_response()
}

/// A listing's `limit` parameter: `default` when absent, refused outside 1..=`max`.
fn limit(given: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match given.unwrap_or(default) {
        n @ 1.. if n <= max => Ok(n),
        n => Err(ApiError::invalid_request(format!("limit must be between 1 and {max}, not {n}"))),
    }
}
