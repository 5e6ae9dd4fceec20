//! Error bodies in FastAPI's shapes, so clients written against the Python agents keep working.
//!
//! FastAPI answers `{"detail": "<message>"}` for HTTP errors and `{"detail": [<issue>, ...]}` for validation
//! errors (see [`crate::validation`]).

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The body of every non-validation error: `{"detail": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"detail": "Not Found"}))]
pub struct ErrorBody {
    /// What went wrong, written for the caller; never internal details.
    pub detail: String,
}

impl ErrorBody {
    /// A body with the given message.
    pub fn new(detail: impl Into<String>) -> Self {
        Self { detail: detail.into() }
    }
}

/// Builds a JSON error response with the given status and message.
pub fn json_error(status: StatusCode, detail: impl Into<String>) -> Response {
    (status, Json(ErrorBody::new(detail))).into_response()
}

/// Fallback for paths no route matches: 404 `{"detail":"Not Found"}`, as Starlette answers.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "Not Found")
}

/// Fallback for a known path with the wrong method: 405 `{"detail":"Method Not Allowed"}`, as Starlette answers.
pub async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}
