//! The user routes, `GET` and `PUT /users/{user_id}/preferences`: validation in FastAPI's shapes, the ETag and
//! `If-Match` headers, and the answers; what is stored and how is [`crate::state`].

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use shared::fastapi::{BodyRejection, JsonBody, LossyPathParams, ValidationErrorBody, json_error};

use crate::{
    AppState,
    state::{Preferences, StateError, check_user_id},
};

fn etag_header(etag: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(value) = etag.and_then(|e| HeaderValue::from_str(&format!("\"{e}\"")).ok()) {
        headers.insert(header::ETAG, value);
    }
    headers
}

/// The ETag named by `If-Match` (quotes and a weak prefix removed); `*` counts as absent.
fn if_match(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::IF_MATCH)?.to_str().ok()?.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw).trim_matches('"');
    (!raw.is_empty() && raw != "*").then(|| raw.to_owned())
}

/// Failure of a user route: invalid input or state trouble.
#[derive(Debug)]
pub enum UserError {
    /// 422.
    Validation(ValidationErrorBody),
    /// 400, 408 or 413: the body could not be read.
    Body(BodyRejection),
    /// 404: nothing stored.
    NotFound,
    /// 412 / 503.
    State(StateError),
}

impl From<ValidationErrorBody> for UserError {
    fn from(body: ValidationErrorBody) -> Self {
        Self::Validation(body)
    }
}

impl From<StateError> for UserError {
    fn from(err: StateError) -> Self {
        Self::State(err)
    }
}

impl IntoResponse for UserError {
    fn into_response(self) -> Response {
        match self {
            Self::Validation(body) => body.into_response(),
            Self::Body(rejection) => rejection.into_response(),
            Self::NotFound => json_error(StatusCode::NOT_FOUND, "No preferences stored for this user"),
            Self::State(err) => err.into_response(),
        }
    }
}

/// A user's stored preferences, with their ETag.
#[utoipa::path(get, path = "/users/{user_id}/preferences", tag = "users",
    params(("user_id" = String, Path, description = "User id", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    responses(
        (status = 200, description = "The preferences; the ETag header names their version", body = Preferences),
        (status = 404, description = "None stored", body = shared::fastapi::errors::ErrorBody),
        (status = 422, description = "Invalid user id", body = ValidationErrorBody),
        (status = 503, description = "The state store is unavailable", body = shared::fastapi::errors::ErrorBody),
    ))]
pub async fn get_preferences(
    State(state): State<Arc<AppState>>,
    path: LossyPathParams,
) -> Result<(HeaderMap, Json<Preferences>), UserError> {
    let user = check_user_id(path.get("user_id").unwrap_or_default(), "path", "user_id")?;
    let (preferences, etag) = state.users.preferences(&user).await?.ok_or(UserError::NotFound)?;
    Ok((etag_header(etag.as_deref()), Json(preferences)))
}

/// Stores a user's preferences; with `If-Match`, only if they are still at that version.
#[utoipa::path(put, path = "/users/{user_id}/preferences", tag = "users", request_body = Preferences,
    params(
        ("user_id" = String, Path, description = "User id", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        ("If-Match" = Option<String>, Header, description = "Write only if the stored version has this ETag"),
    ),
    responses(
        (status = 200, description = "Stored; the ETag header names the new version", body = Preferences),
        (status = 412, description = "If-Match names an old version", body = shared::fastapi::errors::ErrorBody),
        (status = 422, description = "Invalid user id or body", body = ValidationErrorBody),
        (status = 503, description = "The state store is unavailable or too contended",
            body = shared::fastapi::errors::ErrorBody),
        shared::fastapi::BodyReadErrors,
    ))]
pub async fn put_preferences(
    State(state): State<Arc<AppState>>,
    path: LossyPathParams,
    headers: HeaderMap,
    body: Result<JsonBody, BodyRejection>,
) -> Result<(HeaderMap, Json<Preferences>), UserError> {
    // As in FastAPI, a body that cannot be read at all is answered before any validation.
    let body = match body {
        Ok(body) => Ok(body),
        Err(BodyRejection::Invalid(issues)) => Err(issues),
        Err(unreadable) => return Err(UserError::Body(unreadable)),
    };
    let user = check_user_id(path.get("user_id").unwrap_or_default(), "path", "user_id");
    let preferences = body.and_then(|body| Preferences::from_body(&body.0));
    // FastAPI reports path and body problems together, path first.
    let (user, preferences) = match (user, preferences) {
        (Ok(user), Ok(preferences)) => (user, preferences),
        (Err(mut a), Err(b)) => {
            a.detail.extend(b.detail);
            return Err(a.into());
        }
        (Err(e), _) | (_, Err(e)) => return Err(e.into()),
    };
    let etag = state.users.set_preferences(&user, &preferences, if_match(&headers).as_deref()).await?;
    tracing::info!(user, "preferences stored");
    Ok((etag_header(etag.as_deref()), Json(preferences)))
}
