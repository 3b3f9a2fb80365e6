//! The one error shape of the REST API and the JSON body extractor that produces it.
//!
//! Every failure leaves as `{"code": "...", "message": "..."}` with a stable
//! snake_case code, so clients branch on `code` and show `message`; an invalid
//! configuration adds `problems` with one entry per diagnostic.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::server::OpError;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code: `unauthorized`, `not_found`, `invalid_request`,
    /// `conflict`, `invalid_config`, `payload_too_large` or `internal`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// With `invalid_config`: every problem found in the configuration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
}

/// One problem of a configuration refused by publish.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// File relative to the configuration directory.
    pub file: String,
    pub line: u64,
    pub col: u64,
    pub message: String,
    /// How to fix it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self { status, body: ErrorBody { code: code.to_string(), message: message.into(), problems: None } }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let code = e.code();
        match e {
            OpError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, code, m),
            OpError::Invalid(m) => Self::new(StatusCode::BAD_REQUEST, code, m),
            OpError::Conflict(m) => Self::new(StatusCode::CONFLICT, code, m),
            OpError::InvalidConfig(ref d) => {
                let problems = d
                    .iter()
                    .map(|p| Problem {
                        file: p.loc.file.display().to_string(),
                        line: p.loc.line,
                        col: p.loc.col,
                        message: p.message.clone(),
                        hint: p.hint.clone(),
                    })
                    .collect();
                let mut err = Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string());
                err.body.problems = Some(problems);
                err
            }
            // Storage and internal details stay in the server log: they may name
            // paths or database hosts the caller has no business seeing.
            OpError::Store(_) | OpError::Internal(_) => {
                tracing::error!(error = %e, "REST request failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, code, "internal error; see the server log")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// A JSON request body that refuses unknown fields and answers in the API's error
/// shape. The content type is not checked, and an empty body reads as `{}`, so
/// `curl -X POST .../publish` works without ceremony.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body is larger than {} bytes", super::MAX_BODY),
                )
            } else {
                ApiError::invalid_request(format!("cannot read the request body: {}", r.body_text()))
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid_request(format!("invalid JSON body: {e}")))
    }
}
