//! A client for the sidecar's HTTP API: readiness, secrets, state, publish.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use tokio::time::Instant;
use url::Url;

use super::API_TOKEN_HEADER;

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
        let http = crate::http::client::builder()
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
