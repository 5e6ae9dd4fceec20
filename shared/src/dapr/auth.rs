//! The check of the app API token on calls to the agent (`APP_API_TOKEN`, presented by the sidecar).

use std::sync::Arc;

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::Response,
};
use subtle::{Choice, ConstantTimeEq};

use super::API_TOKEN_HEADER;
use crate::fastapi::{Failure, errors::ErrorBody, json_error};

/// Requires `dapr-api-token: <token>` on every route of `router` (the agent's app routes: probes, metrics and docs
/// are routes of their own, outside it); with no token, returns the router unchanged. Missing token: 401
/// `{"detail":"Not authenticated"}`; wrong token: 403. Routes added later, and the fallbacks, are not checked, so
/// unknown paths still answer the plain 404.
pub fn require_app_token(router: Router, token: Option<&str>) -> Router {
    let Some(token) = token else { return router };
    let token: Arc<[u8]> = Arc::from(token.as_bytes());
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move { check_app_token(&token, req, next).await }
    }))
}

/// The answers [`require_app_token`] adds to a route, for its OpenAPI description: `responses(...,
/// AppTokenErrors)` in `#[utoipa::path]`. Each variant's doc comment is its description in the document.
#[derive(Debug, utoipa::IntoResponses)]
pub enum AppTokenErrors {
    /// APP_API_TOKEN is set and the call has no dapr-api-token
    #[response(status = 401)]
    Missing(ErrorBody),
    /// The dapr-api-token is wrong
    #[response(status = 403)]
    Wrong(ErrorBody),
}

async fn check_app_token(token: &[u8], req: Request, next: Next) -> Response {
    match req.headers().get(API_TOKEN_HEADER) {
        None => {
            let mut response = json_error(StatusCode::UNAUTHORIZED, "Not authenticated");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("APIKey"));
            Failure::attach(response, "call rejected: no dapr-api-token")
        }
        Some(given) if tokens_match(given.as_bytes(), token) => next.run(req).await,
        Some(_) => Failure::attach(
            json_error(StatusCode::FORBIDDEN, "Invalid API token"),
            "call rejected: wrong dapr-api-token",
        ),
    }
}

/// Compares a presented token with the expected one in time that depends on neither: no exit on the first differing
/// byte, and none on a length mismatch either (subtle's slice comparison does return early on one). The expected
/// token is walked in full whatever was presented, a shorter presented token padded with zeros, and the lengths are
/// compared in constant time too.
fn tokens_match(given: &[u8], expected: &[u8]) -> bool {
    let same_length = (given.len() as u64).ct_eq(&(expected.len() as u64));
    let same_bytes = expected
        .iter()
        .enumerate()
        .fold(Choice::from(1), |acc, (i, byte)| acc & byte.ct_eq(given.get(i).unwrap_or(&0)));
    bool::from(same_length & same_bytes)
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    /// `/data` behind the check, `/healthz` added after it, as the agents' ops routes are.
    fn app(token: Option<&str>) -> Router {
        let app = Router::new().route("/data", get(|| async { "data" }));
        require_app_token(app, token)
            .route("/healthz", get(|| async { "ok" }))
            .fallback(crate::fastapi::errors::not_found)
    }

    async fn status(app: Router, path: &str, token: Option<&str>) -> StatusCode {
        let mut req = Request::get(path);
        if let Some(token) = token {
            req = req.header("dapr-api-token", token);
        }
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap().status()
    }

    #[tokio::test]
    async fn token_is_required_except_on_probes() {
        let app = app(Some("s3cret"));
        assert_eq!(status(app.clone(), "/data", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(app.clone(), "/data", Some("wrong")).await, StatusCode::FORBIDDEN);
        assert_eq!(status(app.clone(), "/data", Some("s3cret")).await, StatusCode::OK);
        assert_eq!(status(app.clone(), "/healthz", None).await, StatusCode::OK);
        assert_eq!(status(app, "/nowhere", None).await, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn no_token_configured_means_no_check() {
        assert_eq!(status(app(None), "/data", None).await, StatusCode::OK);
    }

    #[test]
    fn comparison_needs_equal_length_and_bytes() {
        assert!(tokens_match(b"abc", b"abc"));
        assert!(!tokens_match(b"abd", b"abc"));
        assert!(!tokens_match(b"abcd", b"abc"), "a longer token that starts with the right one");
        assert!(!tokens_match(b"ab", b"abc"), "a prefix");
        assert!(!tokens_match(b"ab\0", b"ab"), "zero padding is not a match");
        assert!(!tokens_match(b"", b"abc"));
    }
}
