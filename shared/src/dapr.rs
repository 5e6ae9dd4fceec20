//! Glue between an agent and its Dapr sidecar: the settings both agents share, a small client for the sidecar's
//! HTTP API (readiness, secrets, state, publish), and the check of the app API token on incoming calls.
//!
//! Tokens: the sidecar may require callers to present `DAPR_API_TOKEN` in the `dapr-api-token` header, and may
//! present `APP_API_TOKEN` in the same header on every call it makes to the app. With both set, only the sidecar
//! (or whoever holds the app token) can reach the agent, and only the agent can drive the sidecar.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use clap::Args;
use serde_json::Value;
use subtle::{Choice, ConstantTimeEq};
use tokio::time::Instant;
use url::Url;

use crate::config::parse_duration;

/// Header carrying either token (Dapr uses the same name in both directions).
pub const API_TOKEN_HEADER: HeaderName = HeaderName::from_static("dapr-api-token");

/// Port the Dapr sidecar serves its HTTP API on when `DAPR_HTTP_PORT` is not set (Dapr's own default).
pub const DEFAULT_HTTP_PORT: u16 = 3500;

/// Paths reachable without the app token: probes (the kubelet and compose healthchecks send no token), metrics
/// scrapes and the API docs.
const OPEN_PATHS: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

/// Dapr settings both agents share. Whether Dapr is on at all is each agent's decision (DAPR_HTTP_PORT).
#[derive(Debug, Clone, Default, Args)]
pub struct DaprArgs {
    /// Token sent to the local Dapr sidecar in the `dapr-api-token` header; set it to the sidecar's
    /// DAPR_API_TOKEN when the sidecar requires one.
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub dapr_api_token: Option<String>,

    /// Token every call to this agent must carry in `dapr-api-token` (the sidecar sends its APP_API_TOKEN);
    /// /healthz, /readyz, /metrics and the docs stay open. Unset: calls are not checked. Set but empty is refused,
    /// since it would turn the check off without saying so.
    #[arg(long, env = "APP_API_TOKEN", hide_env_values = true, value_parser = parse_required_token)]
    pub app_api_token: Option<String>,

    /// Name of a secret in the Dapr secret store whose value is the app API token; read once at startup when Dapr
    /// is on and APP_API_TOKEN is not set.
    #[arg(long, env = "APP_API_TOKEN_SECRET")]
    pub app_api_token_secret: Option<String>,

    /// Name of the Dapr secret store component.
    #[arg(long, env = "SECRET_STORE", default_value = "secretstore", value_parser = parse_component_name)]
    pub secret_store: String,

    /// Bound on waiting at startup for the sidecar's `/v1.0/healthz/outbound`; the agent exits with status 1 if
    /// the sidecar is not ready by then. `0s` skips the wait.
    #[arg(long, env = "DAPR_WAIT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub dapr_wait_timeout: Duration,
}

impl DaprArgs {
    /// Settings for tests: no tokens, no wait.
    pub fn for_tests() -> Self {
        Self { secret_store: "secretstore".to_owned(), ..Self::default() }
    }

    /// The token for calls to the sidecar, if one is set (an empty value counts as unset).
    pub fn dapr_api_token(&self) -> Option<&str> {
        self.dapr_api_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The app token from the environment, if one is set (an empty one is refused when parsed).
    pub fn app_api_token(&self) -> Option<&str> {
        self.app_api_token.as_deref()
    }

    /// Startup work when the agent has a sidecar: wait for it (bounded), then read the app token from the secret
    /// store when configured so. Returns the app token in effect.
    pub async fn start_with_sidecar(&self, sidecar: &Sidecar) -> Result<Option<String>, SidecarError> {
        if !self.dapr_wait_timeout.is_zero() {
            tracing::info!(sidecar = %sidecar.base(), bound = ?self.dapr_wait_timeout, "waiting for the Dapr sidecar");
            let waited = sidecar.wait_outbound(self.dapr_wait_timeout).await?;
            tracing::info!(waited_ms = waited.as_millis() as u64, sidecar = %sidecar.base(), "Dapr sidecar ready");
        }
        if let Some(token) = self.app_api_token() {
            return Ok(Some(token.to_owned()));
        }
        match self.app_api_token_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(name) => {
                let token = sidecar.secret(&self.secret_store, name).await?;
                if token.is_empty() {
                    // A token was asked for; starting without one would leave the agent open.
                    return Err(SidecarError::BadAnswer(format!("secret {name} in {} is empty", self.secret_store)));
                }
                tracing::info!(store = %self.secret_store, secret = name, "app API token read from the secret store");
                Ok(Some(token))
            }
            None => Ok(None),
        }
    }
}

impl DaprArgs {
    /// [`DaprArgs::start_with_sidecar`], abandoned when `shutdown` completes first (a SIGTERM while waiting for
    /// the sidecar must end the process, not wait out the bound): then `Ok(None)`.
    pub async fn start_with_sidecar_or<F>(
        &self,
        sidecar: &Sidecar,
        shutdown: &mut F,
    ) -> Result<Option<Option<String>>, SidecarError>
    where
        F: std::future::Future<Output = ()> + Unpin,
    {
        tokio::select! {
            started = self.start_with_sidecar(sidecar) => started.map(Some),
            () = shutdown => Ok(None),
        }
    }
}

/// Checks a token can travel in a header: visible ASCII only.
pub fn parse_token(raw: &str) -> Result<String, String> {
    if raw.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(raw.to_owned())
    } else {
        Err("must be visible ASCII characters (it is sent in an HTTP header)".to_owned())
    }
}

/// Like [`parse_token`], and not empty: for a token whose absence turns a check off, where an empty value set by
/// mistake (`APP_API_TOKEN=`) must not silently do the same.
pub fn parse_required_token(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty; unset it to turn the check off".to_owned());
    }
    parse_token(raw)
}

/// Checks a Dapr component or topic name: what Dapr accepts in a URL path segment.
pub fn parse_component_name(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid { Ok(raw.to_owned()) } else { Err("must be letters, digits, '-', '_' or '.'".to_owned()) }
}

/// Why a call to the sidecar failed.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The sidecar could not be reached or did not answer in time.
    #[error("Dapr sidecar unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The sidecar did not become ready within the startup bound.
    #[error("Dapr sidecar at {0} not ready within {1:?}")]
    NotReady(Url, Duration),
    /// A state write lost against a concurrent one (ETag mismatch, HTTP 409).
    #[error("state write conflicts with a concurrent write (ETag mismatch)")]
    Conflict,
    /// The sidecar answered with an error.
    #[error("Dapr sidecar answered {status}: {body}")]
    Status {
        /// The status.
        status: StatusCode,
        /// Its body, for the log only.
        body: String,
    },
    /// The sidecar's answer was not what its API documents.
    #[error("unexpected answer from the Dapr sidecar: {0}")]
    BadAnswer(String),
}

/// A stored state item: its value and ETag.
#[derive(Debug, Clone, PartialEq)]
pub struct StateItem {
    /// The value as stored (JSON).
    pub value: Value,
    /// The ETag to present on a conditional write.
    pub etag: Option<String>,
}

/// Client for the local sidecar's HTTP API.
#[derive(Debug, Clone)]
pub struct Sidecar {
    http: reqwest::Client,
    base: Url,
    token: Option<HeaderValue>,
}

impl Sidecar {
    /// A client for the sidecar on loopback `port`, sending `api_token` when given; every call is bounded by
    /// `timeout`.
    pub fn new(port: u16, api_token: Option<&str>, timeout: Duration) -> Result<Self, String> {
        let http = crate::http_client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_millis(500)))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(4))
            .build()
            .map_err(|e| format!("cannot build the sidecar client: {e}"))?;
        let token = api_token
            .map(|t| {
                let mut value = HeaderValue::from_str(t).map_err(|_| "DAPR_API_TOKEN is not a valid header value")?;
                value.set_sensitive(true);
                Ok::<_, &str>(value)
            })
            .transpose()?;
        let base = Url::parse(&format!("http://127.0.0.1:{port}/")).expect("loopback URL");
        Ok(Self { http, base, token })
    }

    /// Base URL of the sidecar.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The header to add to any request to the sidecar (empty when no token is set).
    pub fn auth_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token {
            headers.insert(API_TOKEN_HEADER, token.clone());
        }
        headers
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("sidecar paths are valid")
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).headers(self.auth_headers())
    }

    /// Polls `/v1.0/healthz/outbound` until it answers 2xx, at most `bound`; returns how long it took.
    pub async fn wait_outbound(&self, bound: Duration) -> Result<Duration, SidecarError> {
        let started = Instant::now();
        let deadline = started + bound;
        loop {
            let attempt = self.request(reqwest::Method::GET, "v1.0/healthz/outbound").send();
            if let Ok(Ok(response)) = tokio::time::timeout_at(deadline, attempt).await
                && response.status().is_success()
            {
                return Ok(started.elapsed());
            }
            if Instant::now() + Duration::from_millis(100) >= deadline {
                return Err(SidecarError::NotReady(self.base.clone(), bound));
            }
            // The sidecar offers no way to be told when it is ready; poll at a short interval within the bound.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Reads secret `name` from `store`; a secret with one key gives that value, else the key named `name`.
    pub async fn secret(&self, store: &str, name: &str) -> Result<String, SidecarError> {
        let response = self
            .request(reqwest::Method::GET, &format!("v1.0/secrets/{store}/{name}"))
            .send()
            .await
            .map_err(SidecarError::Unreachable)?;
        let map: serde_json::Map<String, Value> = expect_success(response).await?.json().await.map_err(bad_answer)?;
        let value = map.get(name).or_else(|| if map.len() == 1 { map.values().next() } else { None });
        value
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| SidecarError::BadAnswer(format!("secret {name} has no value named {name}")))
    }

    /// Publishes `event` as JSON to `topic` on `pubsub`; `headers` (trace context) go along so the CloudEvent
    /// continues the caller's trace.
    pub async fn publish(
        &self,
        pubsub: &str,
        topic: &str,
        event: &Value,
        headers: &HeaderMap,
    ) -> Result<(), SidecarError> {
        let response = self
            .request(reqwest::Method::POST, &format!("v1.0/publish/{pubsub}/{topic}"))
            .headers(headers.clone())
            .json(event)
            .send()
            .await
            .map_err(SidecarError::Unreachable)?;
        expect_success(response).await.map(drop)
    }

    /// Reads `key` from state store `store`: `None` when absent.
    pub async fn get_state(&self, store: &str, key: &str) -> Result<Option<StateItem>, SidecarError> {
        let response = self
            .request(reqwest::Method::GET, &format!("v1.0/state/{store}/{key}"))
            .send()
            .await
            .map_err(SidecarError::Unreachable)?;
        let response = expect_success(response).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let etag = response.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.bytes().await.map_err(SidecarError::Unreachable)?;
        if body.is_empty() {
            return Ok(None);
        }
        let value = serde_json::from_slice(&body).map_err(bad_answer)?;
        Ok(Some(StateItem { value, etag }))
    }

    /// Saves `value` under `key` with first-write concurrency: with `etag` the write succeeds only if the item is
    /// still at that version; without, only if nobody else created it first. `ttl` becomes `ttlInSeconds`.
    pub async fn save_state(
        &self,
        store: &str,
        key: &str,
        value: &Value,
        etag: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(), SidecarError> {
        let mut item = serde_json::json!({
            "key": key,
            "value": value,
            "options": {"concurrency": "first-write", "consistency": "strong"},
        });
        if let Some(etag) = etag {
            item["etag"] = Value::String(etag.to_owned());
        }
        if let Some(ttl) = ttl {
            item["metadata"] = serde_json::json!({"ttlInSeconds": ttl.as_secs().max(1).to_string()});
        }
        let response = self
            .request(reqwest::Method::POST, &format!("v1.0/state/{store}"))
            .json(&Value::Array(vec![item]))
            .send()
            .await
            .map_err(SidecarError::Unreachable)?;
        if response.status() == StatusCode::CONFLICT {
            return Err(SidecarError::Conflict);
        }
        match expect_success(response).await {
            // A first write without ETag to a key someone else created meanwhile is refused by the Redis store's
            // script, which Dapr reports as a failed save rather than an ETag mismatch. Treated as the conflict it
            // is: the caller re-reads and retries (bounded), so a real failure still ends in an error.
            Err(SidecarError::Status { status, body })
                if etag.is_none()
                    && status == StatusCode::INTERNAL_SERVER_ERROR
                    && body.contains("ERR_STATE_SAVE")
                    && body.contains("failed to set key") =>
            {
                Err(SidecarError::Conflict)
            }
            other => other.map(drop),
        }
    }
}

fn bad_answer(err: impl std::fmt::Display) -> SidecarError {
    SidecarError::BadAnswer(err.to_string())
}

async fn expect_success(response: reqwest::Response) -> Result<reqwest::Response, SidecarError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.text().await.unwrap_or_default();
    Err(SidecarError::Status { status, body: body.chars().take(500).collect() })
}

/// Requires `dapr-api-token: <token>` on every route of `router` except probes, metrics and docs; with no token,
/// returns the router unchanged. Missing token: 401 `{"detail":"Not authenticated"}`; wrong token: 403.
/// Apply before [`crate::middleware::apply`], so unknown paths still answer the plain 404.
pub fn require_app_token(router: Router, token: Option<&str>) -> Router {
    let Some(token) = token else { return router };
    let token: Arc<[u8]> = Arc::from(token.as_bytes());
    router.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move { check_app_token(&token, req, next).await }
    }))
}

async fn check_app_token(token: &[u8], req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if OPEN_PATHS.contains(&path) || path.starts_with("/docs/") {
        return next.run(req).await;
    }
    match req.headers().get(API_TOKEN_HEADER) {
        None => {
            let mut response = crate::errors::json_error(StatusCode::UNAUTHORIZED, "Not authenticated");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("APIKey"));
            response
        }
        Some(given) if tokens_match(given.as_bytes(), token) => next.run(req).await,
        Some(_) => {
            tracing::warn!(path, "call rejected: wrong dapr-api-token");
            crate::errors::json_error(StatusCode::FORBIDDEN, "Invalid API token").into_response()
        }
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
    use super::*;
    use axum::{body::Body, routing::get};
    use tower::ServiceExt;

    fn app(token: Option<&str>) -> Router {
        let router = Router::new().route("/data", get(|| async { "data" })).route("/healthz", get(|| async { "ok" }));
        crate::middleware::apply(
            require_app_token(router, token),
            crate::limits::Limits {
                max_in_flight: 8,
                body: crate::request_body::BodyLimits { max_bytes: 1024, read_timeout: Duration::from_secs(5) },
            },
        )
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

    #[test]
    fn an_empty_app_token_is_refused_not_taken_as_unset() {
        assert!(parse_required_token("").unwrap_err().contains("unset it"));
        assert_eq!(parse_required_token("s3cret"), Ok("s3cret".to_owned()));
        assert!(parse_required_token("two words").is_err());
    }

    #[test]
    fn component_names_are_path_safe() {
        assert!(parse_component_name("statestore").is_ok());
        assert!(parse_component_name("state/../x").is_err());
        assert!(parse_component_name("").is_err());
    }
}
