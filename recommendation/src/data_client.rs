//! The call to the data agent, directly or through the Dapr sidecar: bounded in time and size, retried when that
//! can help, guarded by a circuit breaker, with an optional stale fallback.
//!
//! Every call to data goes through one function (`fetch_tagged`, behind [`DataClient::fetch_as`]): the seed
//! answer (`GET /data`, [`DataClient::fetch`]) and one user's insights (`GET /insights/users/{user}`,
//! [`DataClient::user_insights`]) share the pool, the retry policy, the circuit breaker (both are the same
//! upstream) and the stale fallback, kept per URL.
//!
//! One `/recommend` request makes one [`DataClient::fetch`] (and with `user`, one [`DataClient::user_insights`]),
//! which may make several attempts. Each attempt asks
//! the breaker for leave, and gets `min(DATA_TIMEOUT, time left before REQUEST_DEADLINE)`. A failed attempt is
//! retried (backon's retry loop, [`crate::retry`]'s policy) only when the failure may be transient and the backoff
//! still leaves time for an attempt before the deadline.
//!
//! The insights call can be conditional ([`DataClient::user_insights`] with `if_none_match`): a 304 Not Modified
//! is a successful answer like a 200 (for the breaker, the retry policy and the `ok` outcome of the call
//! metrics) that carries no body. The stale fallback keeps the last body received with its tag, and a 304 for
//! that tag restarts its age: data just said it is current.
//!
//! Within an attempt, a call that went out on a pooled connection the data agent closed before answering anything
//! (its keep-alive timer fired, or it is restarting and closed its idle connections) is sent again at once, up to
//! [`CLOSED_CONNECTION_RESENDS`] times, as HTTP clients do for idempotent requests: the call is a GET, nothing was
//! answered, and the next connection is likely fine (or, behind a Service, another replica). Only the outcome of the
//! last send counts for the breaker, so a restart that a re-send bridges never moves it.
//!
//! The HTTP client is hyper-util's pooled client ([`hyper_util::client::legacy::Client`]), the one reqwest wraps,
//! used directly: reqwest's own layer (parsing each call's URL again, its request and response wrappers, the
//! timeout and redirect plumbing) cost about 13.7k instructions per call in callgrind, on the path every
//! `/recommend` takes, for features this call does not use. What reqwest gave is kept by hand: the connect
//! timeout (over TCP and the TLS handshake, `ConnectTimeout`), the pool's idle timeout, no proxy (none is ever
//! looked up), no redirects (a 3xx is an answer other than the data), the `User-Agent`, and TLS for an https
//! DATA_URL on rustls with the ring provider and the platform's verifier, offering h2 and HTTP/1.1 by ALPN as
//! reqwest did; plain http is HTTP/1.1. reqwest stays for this agent's other clients (the Dapr sidecar's, the
//! healthcheck, the OTLP exporter), which are not on the per-request path.

use std::{
    future::Future,
    num::NonZeroUsize,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use backon::Retryable;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{
    Request, Response, StatusCode, Uri,
    body::{Bytes, Incoming},
    header::{ACCEPT, CONTENT_LENGTH, ETAG, HeaderMap, HeaderValue, IF_NONE_MATCH, USER_AGENT},
};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use lru::LruCache;
use recsys::UserInsights;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use shared::obs::TraceHeaders;
use tracing::Instrument;
use url::Url;

use crate::{
    breaker::{CircuitBreaker, CircuitSnapshot},
    config::{Config, DataMode, data_route},
    data_telemetry::DataCall,
    error::{DataClientError, DataError},
    retry::{self, RetryPolicy},
};
use tokio::time::Instant;

/// Largest data answer accepted. The contract is a small JSON object; anything far larger is a misbehaving
/// upstream, and buffering it unbounded would let it exhaust this agent's memory.
pub const MAX_DATA_BODY_BYTES: usize = 1024 * 1024;

/// How long an idle pooled connection to data is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Immediate re-sends of a call whose connection was closed before any answer (see the module docs): enough for a
/// pool holding a few connections a restarting server closed at once.
pub const CLOSED_CONNECTION_RESENDS: u32 = 2;

/// The `User-Agent` of every data call.
const USER_AGENT_VALUE: HeaderValue =
    HeaderValue::from_static(concat!("recommendation-agent/", env!("CARGO_PKG_VERSION")));

/// The pooled HTTP client of the data call (see the module docs).
type HttpClient = Client<ConnectTimeout<HttpsConnector<HttpConnector>>, Empty<Bytes>>;

/// Client for the data agent: one pooled HTTP client per process, shared by every request.
#[derive(Debug, Clone)]
pub struct DataClient {
    http: HttpClient,
    mode: DataMode,
    endpoint: Url,
    base: Url,
    attempt_timeout: Duration,
    deadline: Duration,
    retry: RetryPolicy,
    breaker: CircuitBreaker,
    stale: StaleCache,
    last_call: Arc<Mutex<Option<LastCall>>>,
    /// Headers that authenticate the call: the sidecar's API token in dapr mode, DATA_API_TOKEN in direct mode.
    auth_headers: HeaderMap,
}

#[derive(Debug, Clone, Copy)]
struct LastCall {
    outcome: &'static str,
    at: Instant,
}

/// What the data call produced for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct DataAnswer {
    /// The data agent's JSON answer.
    pub data: Value,
    /// `Some(age)` when data was unavailable and this is the last good answer, received `age` ago.
    pub stale_age: Option<Duration>,
}

/// What a (possibly conditional) insights call produced.
#[derive(Debug, Clone, PartialEq)]
pub enum InsightsAnswer {
    /// The user's insights (200, or the stale fallback).
    Modified {
        /// The insights.
        insights: UserInsights,
        /// Their entity tag (the answer's `ETag`), when data sent one; never for a stale answer.
        etag: Option<String>,
        /// `Some(age)` when data was unavailable and these are the last good insights, received `age` ago.
        stale_age: Option<Duration>,
    },
    /// 304: the insights tagged with the `If-None-Match` sent are still the current ones.
    NotModified,
}

/// What [`DataClient::fetch_tagged`] produced.
#[derive(Debug)]
enum Fetched<T> {
    /// A body (or the stale fallback's), its `ETag`, and `Some(age)` when stale.
    Body(T, Option<String>, Option<Duration>),
    /// 304 to a conditional call.
    NotModified,
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
    /// The circuit breaker's state.
    pub circuit: CircuitSnapshot,
}

/// Most URLs whose last good answer is kept for stale answers: `/data` and the latest users' insights. Beyond, the
/// least recently used is forgotten, so a flood of user ids cannot grow the process.
pub const STALE_MAX_ENTRIES: usize = 1024;

/// A good answer's body, when it came (or was last confirmed current by a 304), and its `ETag`.
#[derive(Debug)]
struct LastGood {
    body: Arc<[u8]>,
    at: Instant,
    etag: Option<String>,
}

/// The last good answer of each URL, as received (the body, decoded again when it is served), kept only when stale
/// answers are allowed (`STALE_CACHE_TTL` > 0).
#[derive(Debug, Clone)]
struct StaleCache {
    ttl: Duration,
    last_good: Arc<Mutex<LruCache<Url, LastGood>>>,
}

impl StaleCache {
    fn new(ttl: Duration) -> Self {
        let capacity = NonZeroUsize::new(STALE_MAX_ENTRIES).expect("not zero");
        Self { ttl, last_good: Arc::new(Mutex::new(LruCache::new(capacity))) }
    }

    fn store(&self, url: &Url, body: &[u8], etag: Option<&str>) {
        if !self.ttl.is_zero()
            && let Ok(mut last_good) = self.last_good.lock()
        {
            let entry = LastGood { body: Arc::from(body), at: Instant::now(), etag: etag.map(str::to_owned) };
            last_good.put(url.clone(), entry);
        }
    }

    /// Data answered 304 to `If-None-Match: <etag>` at `url`: when the body kept for it carries that tag, it is as
    /// current as a body received now, so its age starts again. Without this, a prediction served on 304s for
    /// longer than the TTL would leave no stale answer for an outage, though data confirmed it moments before.
    fn confirm(&self, url: &Url, etag: &HeaderValue) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut last_good) = self.last_good.lock()
            && let Some(entry) = last_good.get_mut(url)
            && entry.etag.as_deref().is_some_and(|kept| kept.as_bytes() == etag.as_bytes())
        {
            entry.at = Instant::now();
        }
    }

    /// The last good answer of `url` and its age, if it is not older than the TTL.
    fn get(&self, url: &Url) -> Option<(Arc<[u8]>, Duration)> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut last_good = self.last_good.lock().ok()?;
        let entry = last_good.get(url)?;
        let age = entry.at.elapsed();
        (age <= self.ttl).then(|| (entry.body.clone(), age))
    }
}

impl DataClient {
    /// Builds the client from settings. It fails only when the platform's certificate verifier cannot be set up
    /// (TLS is set up whatever DATA_URL's scheme, as reqwest did).
    pub fn new(config: &Config) -> Result<Self, DataClientError> {
        let args = &config.data;
        // The data agent is addressed by name inside the cluster or compose network: a proxy set for the outside
        // world must not capture that traffic, and this client never looks one up. Nor does it follow redirects:
        // a redirect is an answer other than the data, as for the original httpx client, and following it would
        // also send the trace headers wherever Location points.
        let mut tcp = HttpConnector::new();
        // The TLS connector below takes the https URLs; without this the TCP connector would refuse them.
        tcp.enforce_http(false);
        // Each attempt is bounded by its own timer (see `attempt`), which knows the request deadline; this bounds
        // the TCP connect alone, `ConnectTimeout` the connect with its TLS handshake.
        tcp.set_connect_timeout(Some(args.data_connect_timeout));
        // reqwest's defaults, kept: no Nagle delay on small requests, and TCP keep-alive probes that find a peer
        // gone without a FIN (15 s idle, every 15 s, 3 tries), and a bound on unacknowledged data (Linux).
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(15)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(15)));
        tcp.set_keepalive_retries(Some(3));
        #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
        tcp.set_tcp_user_timeout(Some(Duration::from_secs(30)));
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|versions| versions.try_with_platform_verifier())
            .map_err(DataClientError::Tls)?
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            // Shorter than the keep-alive of the servers in front of data (uvicorn: 5 s), so a pooled connection is
            // never reused just as the server closes it.
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(ConnectTimeout { inner: connector, timeout: args.data_connect_timeout });
        describe_metrics();
        Ok(Self {
            http,
            mode: config.data_mode(),
            endpoint: config.data_endpoint(),
            base: config.data_base(),
            attempt_timeout: args.data_timeout,
            deadline: args.request_deadline,
            retry: RetryPolicy::new(args),
            breaker: CircuitBreaker::new(args.data_breaker_threshold, args.data_breaker_cooldown),
            stale: StaleCache::new(args.stale_cache_ttl),
            last_call: Arc::default(),
            auth_headers: match (config.data_mode(), &args.data_api_token) {
                (DataMode::Direct, Some(token)) => {
                    let mut value = HeaderValue::from_str(token).expect("DATA_API_TOKEN was checked when parsed");
                    value.set_sensitive(true);
                    HeaderMap::from_iter([(shared::dapr::API_TOKEN_HEADER, value)])
                }
                _ => HeaderMap::new(),
            },
        })
    }

    /// Adds headers for the Dapr sidecar (its API token) to every call; ignored in direct mode, so a token never
    /// leaves for DATA_URL.
    pub fn with_sidecar_headers(mut self, headers: HeaderMap) -> Self {
        if self.mode == DataMode::Dapr {
            self.auth_headers = headers;
        }
        self
    }

    /// The mode in effect.
    pub fn mode(&self) -> DataMode {
        self.mode
    }

    /// The URL data is fetched from.
    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// Fetches the data agent's seed answer (`GET /data`) for one request.
    pub async fn fetch(&self, trace: &TraceHeaders) -> Result<DataAnswer, DataError> {
        self.fetch_at(&self.endpoint, trace).await
    }

    /// Fetches one user's insights (`GET /insights/users/{user}?limit=..&category=..&neighbours=..`): what the
    /// models need, with `neighbours` neighbours of each history item (the parameter is left out at the data
    /// agent's default, [`recsys::insights::NEIGHBOURS`]; a data agent that predates it sends them all, which
    /// gives the same recommendations).
    /// An answer that is not [`UserInsights`] is a bad answer (502), like any other body data should not send.
    ///
    /// With `if_none_match` (an entity tag data sent before), the call is conditional: data answers 304
    /// ([`InsightsAnswer::NotModified`]) when those insights are still current, without computing or sending
    /// them. A tag that cannot be a header value is not sent (the call is then a plain one).
    pub async fn user_insights(
        &self,
        user: &str,
        limit: usize,
        categories: &[String],
        neighbours: usize,
        if_none_match: Option<&str>,
        trace: &TraceHeaders,
    ) -> Result<InsightsAnswer, DataError> {
        let mut url = data_route(&self.base, &["insights", "users", user]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &limit.to_string());
            for category in categories {
                query.append_pair("category", category);
            }
            if neighbours < recsys::insights::NEIGHBOURS {
                query.append_pair("neighbours", &neighbours.to_string());
            }
        }
        let condition = if_none_match.and_then(|tag| HeaderValue::from_str(tag).ok());
        Ok(match self.fetch_tagged(&url, "the insights of a user", condition.as_ref(), trace).await? {
            Fetched::Body(insights, etag, stale_age) => InsightsAnswer::Modified { insights, etag, stale_age },
            Fetched::NotModified => InsightsAnswer::NotModified,
        })
    }

    /// Fetches the data agent's JSON answer at `url`, forwarding the caller's trace headers (see
    /// [`DataClient::fetch_as`]).
    pub async fn fetch_at(&self, url: &Url, trace: &TraceHeaders) -> Result<DataAnswer, DataError> {
        let (data, stale_age) = self.fetch_as(url, "JSON", trace).await?;
        Ok(DataAnswer { data, stale_age })
    }

    /// Fetches the answer at `url` decoded as `T` (`what` names it in errors), and `Some(age)` when it is the last
    /// good answer because data is unavailable: every attempt, retry and fallback happens in here, and the call's
    /// outcome is recorded here once. The body is decoded once, straight into `T` (for the insights, a tree of
    /// `serde_json::Value`s first would cost as much again). A body that is not JSON is data failing (retried no
    /// further, counted by the breaker); JSON of another shape is an answer data gave (the call's outcome is `ok`)
    /// that this agent cannot use: either way a bad answer (502).
    pub async fn fetch_as<T: DeserializeOwned>(
        &self,
        url: &Url,
        what: &str,
        trace: &TraceHeaders,
    ) -> Result<(T, Option<Duration>), DataError> {
        match self.fetch_tagged(url, what, None, trace).await? {
            Fetched::Body(data, _, stale_age) => Ok((data, stale_age)),
            // Without `If-None-Match` a 304 is a status like any other that is not a success.
            // `fetch_once` takes a 304 as an answer only to a conditional call, which this is not; were that ever to
            // change, a 304 here is a status this call cannot use, not a reason to stop the process.
            Fetched::NotModified => Err(DataError::DataBadStatus(StatusCode::NOT_MODIFIED)),
        }
    }

    /// [`DataClient::fetch_as`], conditional when `if_none_match` is given, and with the answer's `ETag`.
    async fn fetch_tagged<T: DeserializeOwned>(
        &self,
        url: &Url,
        what: &str,
        if_none_match: Option<&HeaderValue>,
        trace: &TraceHeaders,
    ) -> Result<Fetched<T>, DataError> {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let attempts = AtomicU32::new(0);
        let call = DataCall::start(self.mode, url, trace);
        let result = (|| self.attempt::<T>(url, if_none_match, call.headers(), deadline, &attempts))
            .retry(self.retry.backoff())
            .when(|err: &DataError| self.retry.is_retryable(err))
            .adjust(|_, backoff| backoff.filter(|wait| retry::fits_before(deadline, *wait)))
            .notify(|err: &DataError, wait: Duration| {
                metrics::counter!("data_call_retries_total", "reason" => err.outcome()).increment(1);
                tracing::debug!(reason = err.outcome(), wait_ms = wait.as_millis() as u64, "retrying the data call");
            })
            .instrument(call.span())
            .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        call.finish(outcome, started.elapsed());
        let attempts = attempts.into_inner();
        let elapsed_ms = started.elapsed().as_micros() as f64 / 1000.0;
        let data_mode = self.mode.as_str();
        match &result {
            // Per-call success lines cost measurable throughput (bench/run.sh); the mode of every call is in the
            // data_calls_total{mode} metric and in this line at debug.
            Ok(_) => tracing::debug!(data_mode, outcome, attempts, elapsed_ms, "data call"),
            // The breaker logs when it opens; a line per refused request would flood the log while it stays open.
            Err(DataError::CircuitOpen { .. }) => tracing::debug!(data_mode, outcome, "data call refused"),
            Err(err) => {
                let cause = std::error::Error::source(err).map(|source| format!("{source:?}"));
                tracing::warn!(data_mode, outcome, attempts, elapsed_ms, error = %err, cause, "data call failed");
            }
        }
        if let Ok(mut last) = self.last_call.lock() {
            *last = Some(LastCall { outcome, at: Instant::now() });
        }
        match result {
            Ok(Answer::Decoded(data, body, etag)) => {
                self.stale.store(url, &body, etag.as_deref());
                Ok(Fetched::Body(data, etag, None))
            }
            Ok(Answer::NotModified) => {
                if let Some(etag) = if_none_match {
                    self.stale.confirm(url, etag);
                }
                Ok(Fetched::NotModified)
            }
            Ok(Answer::OtherShape(err)) => Err(DataError::DataBadBody(format!("not {what}: {err}"))),
            // A stored body was decoded as `T` when it came.
            Err(err) => match self.stale.get(url).and_then(|(body, age)| Some((decode(&body).ok()?, age))) {
                Some((data, age)) => {
                    metrics::counter!("data_stale_answers_total").increment(1);
                    tracing::warn!(
                        outcome,
                        age_s = age.as_secs(),
                        "data unavailable; answering with the last good data"
                    );
                    Ok(Fetched::Body(data, None, Some(age)))
                }
                None => Err(err),
            },
        }
    }

    /// One attempt: leave from the breaker, then the call bounded by the attempt timeout or the deadline,
    /// whichever is nearer; the outcome is reported to the breaker.
    async fn attempt<T: DeserializeOwned>(
        &self,
        url: &Url,
        if_none_match: Option<&HeaderValue>,
        trace: &TraceHeaders,
        deadline: Instant,
        attempts: &AtomicU32,
    ) -> Result<Answer<T>, DataError> {
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|refused| DataError::CircuitOpen { retry_after: refused.retry_after })?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(DataError::DeadlineExceeded { after: self.deadline });
        }
        attempts.fetch_add(1, Ordering::Relaxed);
        let budget = self.attempt_timeout.min(remaining);
        let send = async {
            // Once per attempt, not per re-send. A `Url` serialises to a valid URI, so this does not fail in
            // practice; if it did, the failure stays where reqwest had it (a bad answer, counted by the breaker).
            let uri = url.as_str().parse::<Uri>().map_err(|err| DataError::DataBadBody(format!("URI {url}: {err}")))?;
            self.send_until_answered(&uri, if_none_match, trace).await
        };
        let result = match tokio::time::timeout(budget, send).await {
            Ok(result) => result,
            Err(_) if budget < self.attempt_timeout => Err(DataError::DeadlineExceeded { after: self.deadline }),
            Err(_) => Err(DataError::DataTimeout { after: budget }),
        };
        match &result {
            Err(err) if counts_against_data(err) => permit.failure(),
            _ => permit.success(),
        }
        result
    }

    /// One call, sent again at once while its connection is closed before any answer (see the module docs).
    async fn send_until_answered<T: DeserializeOwned>(
        &self,
        uri: &Uri,
        if_none_match: Option<&HeaderValue>,
        trace: &TraceHeaders,
    ) -> Result<Answer<T>, DataError> {
        let mut resends = 0;
        loop {
            match self.fetch_once(uri, if_none_match, trace).await {
                Err(DataError::DataConnectionClosed(err)) if resends < CLOSED_CONNECTION_RESENDS => {
                    resends += 1;
                    metrics::counter!("data_call_retries_total", "reason" => "closed").increment(1);
                    tracing::debug!(error = ?err, resends, "data closed the connection before answering; sending again");
                }
                other => return other,
            }
        }
    }

    async fn fetch_once<T: DeserializeOwned>(
        &self,
        uri: &Uri,
        if_none_match: Option<&HeaderValue>,
        trace: &TraceHeaders,
    ) -> Result<Answer<T>, DataError> {
        // A GET with no body; hyper adds `Host` from the URI.
        let mut request = Request::new(Empty::new());
        *request.uri_mut() = uri.clone();
        let headers = request.headers_mut();
        headers.reserve(trace.headers().len() + self.auth_headers.len() + 3);
        for (name, value) in trace.headers().iter().chain(&self.auth_headers) {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(USER_AGENT, USER_AGENT_VALUE);
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(tag) = if_none_match {
            headers.insert(IF_NONE_MATCH, tag.clone());
        }
        let response = self.http.request(request).await.map_err(classify_send)?;

        let status = response.status();
        if status == StatusCode::NOT_MODIFIED && if_none_match.is_some() {
            return Ok(Answer::NotModified);
        }
        if !status.is_success() {
            return Err(self.non_success(response).await);
        }
        let etag = response.headers().get(ETAG).and_then(|tag| tag.to_str().ok()).map(str::to_owned);
        let declared_len = response.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared_len.is_some_and(|len| len > MAX_DATA_BODY_BYTES) {
            return Err(DataError::DataBadBody(format!("declared body of {declared_len:?} bytes exceeds the limit")));
        }

        // The limit is checked on every frame too: a body without Content-Length (chunked), or longer than declared.
        let mut incoming = response.into_body();
        let mut body = Vec::with_capacity(declared_len.unwrap_or(256).min(MAX_DATA_BODY_BYTES));
        while let Some(frame) = incoming.frame().await {
            // Trailers carry nothing this call uses.
            let Ok(chunk) = frame.map_err(classify_body)?.into_data() else { continue };
            if body.len() + chunk.len() > MAX_DATA_BODY_BYTES {
                return Err(DataError::DataBadBody(format!("body exceeds {MAX_DATA_BODY_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        match decode(&body) {
            Ok(data) => Ok(Answer::Decoded(data, body, etag)),
            Err(err) if is_json(&body) => Ok(Answer::OtherShape(err)),
            Err(err) => Err(DataError::DataBadBody(format!("not JSON: {err}"))),
        }
    }

    /// Classifies a non-2xx answer. Through Dapr, a 500 carrying `ERR_DIRECT_INVOKE` is the sidecar saying it could
    /// not reach data at all (Dapr passes data's own errors through unchanged), so it means unreachable, not a bad
    /// answer from data.
    async fn non_success(&self, response: Response<Incoming>) -> DataError {
        let status = response.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            let hint = match self.mode {
                DataMode::Direct => "set DATA_API_TOKEN to the data agent's APP_API_TOKEN",
                DataMode::Dapr => "check DAPR_API_TOKEN here and the APP_API_TOKEN of data's sidecar",
            };
            return DataError::DataRefused { status, hint };
        }
        if self.mode == DataMode::Dapr && status == StatusCode::INTERNAL_SERVER_ERROR {
            // Read within the same limit as an answer: a body beyond it is no sidecar error, only a bad status.
            let body = match Limited::new(response.into_body(), MAX_DATA_BODY_BYTES).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            let error_code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("errorCode").and_then(Value::as_str).map(str::to_owned));
            if let Some(code) = error_code.filter(|code| code.starts_with("ERR_DIRECT_INVOKE")) {
                return DataError::SidecarCannotReachData(code);
            }
        }
        DataError::DataBadStatus(status)
    }

    /// State for the readiness body.
    pub fn reachability(&self) -> DataReachability {
        let last = self.last_call.lock().ok().and_then(|last| *last);
        DataReachability {
            mode: self.mode.as_str(),
            last_outcome: last.map(|l| l.outcome),
            seconds_since_last_call: last.map(|l| (l.at.elapsed().as_millis() as f64) / 1000.0),
            circuit: self.breaker.snapshot(),
        }
    }
}

/// A body data answered, decoded as `T` (with the body, which the stale cache keeps, and its `ETag`), JSON of
/// another shape, or 304 to a conditional call.
enum Answer<T> {
    Decoded(T, Vec<u8>, Option<String>),
    OtherShape(serde_json::Error),
    NotModified,
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Whether `body` is JSON at all (asked only of a body that did not decode, to tell the two failures apart).
fn is_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

/// Whether a failure says the data agent is not working, as opposed to an answer it gave on purpose (a 4xx): only
/// these count towards opening the breaker.
fn counts_against_data(err: &DataError) -> bool {
    match err {
        DataError::DataBadStatus(status) => status.is_server_error(),
        DataError::CircuitOpen { .. } | DataError::DataRefused { .. } => false,
        DataError::DataUnreachable(_)
        | DataError::DataConnectionClosed(_)
        | DataError::SidecarCannotReachData(_)
        | DataError::DataTimeout { .. }
        | DataError::DeadlineExceeded { .. }
        | DataError::DataBadBody(_) => true,
    }
}

/// Sorts a failure before the answer's head arrived into the caller-facing classes: could not connect (the
/// connector failed: refused, unresolvable, connect timeout, TLS handshake), the connection closed under the call,
/// or reached the data agent but the exchange broke off. (Slowness is caught by the attempt's own timer, which no
/// transport error preempts: the client has no overall timeout, and a connect timeout is a connect error.)
fn classify_send(err: hyper_util::client::legacy::Error) -> DataError {
    if err.is_connect() {
        DataError::DataUnreachable(err)
    } else if closed_before_answer(&err) {
        DataError::DataConnectionClosed(err)
    } else {
        DataError::DataBadBody(format!("transport failed mid-exchange: {err:?}"))
    }
}

/// A failure while the body was read: the exchange broke off after the answer's head.
fn classify_body(err: hyper::Error) -> DataError {
    DataError::DataBadBody(format!("transport failed mid-exchange: {err:?}"))
}

/// Whether the connection was closed, or reset, before any byte of an answer arrived: hyper's "incomplete message"
/// (EOF while waiting for the head) and "canceled" (the connection went away with the request queued), or the
/// reset a server's kernel sends when it closes with the request unread.
fn closed_before_answer(err: &hyper_util::client::legacy::Error) -> bool {
    std::iter::successors(Some(err as &(dyn std::error::Error + 'static)), |e| e.source()).any(|cause| {
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>() {
            hyper.is_incomplete_message() || hyper.is_canceled()
        } else if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            )
        } else {
            false
        }
    })
}

/// Boxed error of a connector.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The data connector bounded by DATA_CONNECT_TIMEOUT as a whole, TCP connect and TLS handshake together, as
/// reqwest bounded it: a data agent whose handshake stalls is unreachable after that time (and the attempt retried),
/// not a timeout of the attempt. Only new connections pass through here, so its timer is not paid per call.
#[derive(Debug, Clone)]
struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

/// The connect did not complete within DATA_CONNECT_TIMEOUT.
#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?}")]
struct ConnectTimedOut(Duration);

impl<C> tower::Service<Uri> for ConnectTimeout<C>
where
    C: tower::Service<Uri>,
    C::Error: Into<BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, timeout) = (self.inner.call(uri), self.timeout);
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(connected) => connected.map_err(Into::into),
                Err(_) => Err(ConnectTimedOut(timeout).into()),
            }
        })
    }
}

fn describe_metrics() {
    metrics::describe_gauge!("data_circuit_state", "Data call circuit breaker: 0 closed, 1 half-open, 2 open");
    metrics::describe_counter!("data_call_retries_total", "Data call retries, by the failure that caused them");
    metrics::describe_counter!(
        "data_stale_answers_total",
        "Requests answered with the last good data because data was unavailable"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(path: &str) -> Url {
        Url::parse("http://data:8000").unwrap().join(path).unwrap()
    }

    #[test]
    fn the_stale_cache_is_off_at_ttl_zero() {
        let off = StaleCache::new(Duration::ZERO);
        off.store(&url("/data"), br#"{"processed_data":"some_insights"}"#, None);
        assert!(off.get(&url("/data")).is_none());
        assert!(off.last_good.lock().unwrap().is_empty(), "nothing is even kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_answer_is_given_within_the_ttl_and_never_after() {
        let stale = StaleCache::new(Duration::from_secs(30));
        let data_url = url("/data");
        assert!(stale.get(&data_url).is_none(), "nothing cached before the first good answer");
        stale.store(&data_url, br#"{"processed_data":"some_insights"}"#, None);
        let (data, age) = stale.get(&data_url).expect("within the TTL");
        assert_eq!(&data[..], br#"{"processed_data":"some_insights"}"#);
        assert_eq!(age, Duration::ZERO, "the paused clock has not moved");
        assert!(stale.get(&url("/insights/users/u1")).is_none(), "answers are kept per URL");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(stale.get(&data_url).expect("at the TTL exactly").1, Duration::from_secs(30));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(stale.get(&data_url).is_none(), "older than the TTL");
    }

    #[tokio::test(start_paused = true)]
    async fn a_304_for_the_kept_tag_makes_the_kept_body_current_again() {
        let stale = StaleCache::new(Duration::from_secs(30));
        let insights = url("/insights/users/u1");
        stale.store(&insights, b"{}", Some("\"abc-1\""));
        tokio::time::advance(Duration::from_secs(25)).await;
        stale.confirm(&insights, &HeaderValue::from_static("\"other-2\""));
        assert_eq!(stale.get(&insights).unwrap().1, Duration::from_secs(25), "another tag confirms nothing");
        stale.confirm(&insights, &HeaderValue::from_static("\"abc-1\""));
        assert_eq!(stale.get(&insights).unwrap().1, Duration::ZERO, "confirmed by data just now");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(stale.get(&insights).is_some(), "within the TTL of the confirmation");
        let untagged = url("/data");
        stale.store(&untagged, b"{}", None);
        tokio::time::advance(Duration::from_secs(10)).await;
        stale.confirm(&untagged, &HeaderValue::from_static("\"abc-1\""));
        assert_eq!(stale.get(&untagged).unwrap().1, Duration::from_secs(10), "an untagged body is never confirmed");
    }
}
