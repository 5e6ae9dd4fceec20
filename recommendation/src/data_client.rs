//! The call to the data agent, directly or through the Dapr sidecar, with bounded time and size.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use reqwest::header::{ACCEPT, CONTENT_LENGTH, HeaderValue};
use serde::Serialize;
use serde_json::Value;
use shared::propagation::TraceHeaders;
use tracing::Instrument;
use url::Url;

use crate::{
    config::{DataArgs, DataMode},
    data_telemetry::DataCall,
    error::Error,
};

/// Largest data answer accepted. The contract is a small JSON object; anything far larger is a misbehaving
/// upstream, and buffering it unbounded would let it exhaust this agent's memory.
pub const MAX_DATA_BODY_BYTES: usize = 1024 * 1024;

/// Client for the data agent: one pooled HTTP client per process, shared by every request.
#[derive(Debug, Clone)]
pub struct DataClient {
    http: reqwest::Client,
    mode: DataMode,
    endpoint: Url,
    last_call: Arc<Mutex<Option<LastCall>>>,
}

#[derive(Debug, Clone, Copy)]
struct LastCall {
    outcome: &'static str,
    at: Instant,
}

/// What readiness reports about the data agent: informational only, readiness never fails because of it.
#[derive(Debug, Clone, Serialize)]
pub struct DataReachability {
    /// `direct` or `dapr`.
    pub mode: &'static str,
    /// Outcome of the most recent call (`ok`, `unreachable`, `timeout`, ...), absent before the first call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<&'static str>,
    /// Seconds since that call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds_since_last_call: Option<f64>,
}

impl DataClient {
    /// Builds the client from settings.
    pub fn new(args: &DataArgs) -> Result<Self, reqwest::Error> {
        let http = shared::http_client::builder()
            .connect_timeout(args.data_connect_timeout)
            .timeout(args.data_timeout)
            // The data agent is addressed by name inside the cluster or compose network; a proxy set for the
            // outside world must not capture that traffic.
            .no_proxy()
            .user_agent(concat!("recommendation-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { http, mode: args.mode(), endpoint: args.data_endpoint(), last_call: Arc::default() })
    }

    /// The mode in effect.
    pub fn mode(&self) -> DataMode {
        self.mode
    }

    /// The URL data is fetched from.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Fetches the data agent's JSON answer, forwarding the caller's trace headers.
    pub async fn fetch(&self, trace: &TraceHeaders) -> Result<Value, Error> {
        let started = Instant::now();
        let call = DataCall::start(self.mode, &self.endpoint, trace);
        let result = self.fetch_once(call.headers()).instrument(call.span()).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        call.finish(outcome, started.elapsed());
        let elapsed_ms = started.elapsed().as_micros() as f64 / 1000.0;
        tracing::debug!(data_mode = self.mode.as_str(), outcome, elapsed_ms, "data call");
        if let Ok(mut last) = self.last_call.lock() {
            *last = Some(LastCall { outcome, at: Instant::now() });
        }
        result
    }

    async fn fetch_once(&self, trace: &TraceHeaders) -> Result<Value, Error> {
        let mut response = self
            .http
            .get(self.endpoint.clone())
            .headers(trace.headers().clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .send()
            .await
            .map_err(classify)?;

        let status = response.status();
        if !status.is_success() {
            return Err(Error::DataBadStatus(status));
        }
        let declared_len = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared_len.is_some_and(|len| len > MAX_DATA_BODY_BYTES) {
            return Err(Error::DataBadBody(format!("declared body of {declared_len:?} bytes exceeds the limit")));
        }

        let mut body = Vec::with_capacity(declared_len.unwrap_or(256).min(MAX_DATA_BODY_BYTES));
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_DATA_BODY_BYTES {
                return Err(Error::DataBadBody(format!("body exceeds {MAX_DATA_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| Error::DataBadBody(format!("not JSON: {e}")))
    }

    /// State for the readiness body.
    pub fn reachability(&self) -> DataReachability {
        let last = self.last_call.lock().ok().and_then(|last| *last);
        DataReachability {
            mode: self.mode.as_str(),
            last_outcome: last.map(|l| l.outcome),
            seconds_since_last_call: last.map(|l| (l.at.elapsed().as_millis() as f64) / 1000.0),
        }
    }
}

/// Sorts a transport error into the caller-facing classes: could not connect (503), too slow (504), or the
/// connection broke during the exchange (502).
fn classify(err: reqwest::Error) -> Error {
    if err.is_connect() {
        Error::DataUnreachable(err)
    } else if err.is_timeout() {
        Error::DataTimeout(err)
    } else {
        Error::DataBadBody(format!("transport failed mid-exchange: {err:?}"))
    }
}
