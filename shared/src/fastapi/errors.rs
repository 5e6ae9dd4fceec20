//! Error bodies in FastAPI's shapes, and the note that tells the request log why a request failed.
//!
//! FastAPI answers `{"detail": "<message>"}` for HTTP errors and `{"detail": [<issue>, ...]}` for validation
//! errors (see [`crate::fastapi::validation`]).

use std::fmt;

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

/// Why a request failed, in full (causes, upstream statuses, hints for the operator), attached to its error
/// response as an extension. The caller never sees it: the request log line (see [`crate::obs`]) prints it, once,
/// inside the request's span. Error types put it on the responses they build, so the code that fails does not log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(pub String);

impl Failure {
    /// Attaches `why` to `response`.
    pub fn attach(mut response: Response, why: impl fmt::Display) -> Response {
        response.extensions_mut().insert(Self(why.to_string()));
        response
    }

    /// The error and its chain of sources, `error: source: source ...`.
    pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }
}
