//! Prometheus metrics: the process-wide recorder, the RED middleware every router gets, and `GET /metrics`.
//!
//! Metrics are emitted through the `metrics` facade, so code anywhere in the agents can record them; this module
//! installs the Prometheus recorder behind that facade and renders its text exposition. Nothing is recorded until
//! [`install`] runs (the request middleware checks [`enabled`] once per request), so in-process tests and a
//! `METRICS_ENABLED=false` process pay next to nothing.
//!
//! A scrape is cheap whatever the scrapers do: the exposition is rendered at most once per [`RENDER_REUSE`] and
//! shared by every scrape in that window (scrapes arriving during a render wait for it rather than start their
//! own), so a flood of scrapes costs copies of one buffer instead of a render each.
//!
//! Labels are bounded by construction: the route is the matched route *template* (`/recommend`, never the raw
//! path; anything no route matched is [`UNMATCHED_ROUTE`]), the method is one of the standard methods or `other`,
//! and the status is a class (`2xx`, `4xx`, `5xx`, ...).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{MatchedPath, Request},
    http::{HeaderValue, Method, StatusCode, header::CONTENT_TYPE},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Args;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::{config::ServerArgs, server::ServeOptions};

/// Requests served, by `route`, `method` and `status_class`.
pub const HTTP_REQUESTS: &str = "http_server_requests_total";
/// Time from receiving a request's head to producing its response head, by `route`, `method`, `status_class`.
pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
/// Requests currently being handled, by `route` and `method`.
pub const HTTP_IN_FLIGHT: &str = "http_server_requests_in_flight";
/// Constant 1, labelled with the agent's name, version and git revision.
pub const BUILD_INFO: &str = "agent_build_info";

/// Route label of requests no route matched (404s): a fixed value, so probing random paths cannot grow the series.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency histogram buckets in seconds: fine-grained below 10 ms (a healthy hop on one node), then coarse up to
/// past the default 2 s data timeout.
pub const LATENCY_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Content type of Prometheus' text exposition format.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How often histogram samples are folded into their buckets when nobody scrapes (bounds memory between scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long a rendered exposition is served to further scrapes. Far below any scrape interval (Prometheus: 15 s by
/// default), and it bounds rendering to once a second however many clients scrape.
pub const RENDER_REUSE: Duration = Duration::from_secs(1);

/// Metrics settings shared by both agents.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Record Prometheus metrics and serve them at GET /metrics. `false` removes the metrics middleware entirely
    /// (for measuring its cost); /metrics then answers 404.
    #[arg(long, env = "METRICS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_enabled: bool,

    /// Also serve GET /metrics on this port (same bind address), e.g. to keep scrapes off the service port, with
    /// the same header read and idle timeouts as PORT and at most 32 connections at once. /metrics stays available
    /// on PORT as well.
    #[arg(long, env = "METRICS_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub metrics_port: Option<u16>,
}

impl Default for MetricsArgs {
    fn default() -> Self {
        Self { metrics_enabled: true, metrics_port: None }
    }
}

struct Installed {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    exposition: Exposition,
}

/// The last rendered exposition and when it was rendered.
#[derive(Debug, Default)]
struct Exposition {
    last: tokio::sync::Mutex<Option<(tokio::time::Instant, Bytes)>>,
}

impl Exposition {
    /// The exposition rendered less than [`RENDER_REUSE`] ago, or a new one from `render`. The lock is held across
    /// the render, so concurrent scrapes wait for it (asynchronously) and then share its result.
    async fn get(&self, render: impl FnOnce() -> String) -> Bytes {
        let mut last = self.last.lock().await;
        if let Some((at, text)) = last.as_ref()
            && at.elapsed() < RENDER_REUSE
        {
            return text.clone();
        }
        let text = Bytes::from(render());
        *last = Some((tokio::time::Instant::now(), text.clone()));
        text
    }
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Whether the recorder is installed, i.e. whether requests are measured.
pub fn enabled() -> bool {
    INSTALLED.get().is_some()
}

/// Installs the Prometheus recorder for this process (idempotent: later calls only return the handle), describes
/// the HTTP metrics, and sets `agent_build_info` for `agent`.
///
/// Panics if a different `metrics` recorder was installed first, which would be a programming error.
pub fn install(agent: &'static str) -> &'static PrometheusHandle {
    let installed = INSTALLED.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &LATENCY_BUCKETS)
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed");
        // Without an exporter task nobody else folds histogram samples into buckets; do it on a plain thread so it
        // does not depend on any particular tokio runtime being alive.
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                }
            })
            .expect("spawn metrics upkeep thread");
        describe_http();
        let process = metrics_process::Collector::default();
        process.describe();
        Installed { handle, process, exposition: Exposition::default() }
    });
    metrics::gauge!(
        BUILD_INFO,
        "agent" => agent,
        "version" => env!("CARGO_PKG_VERSION"),
        "revision" => env!("AGENT_GIT_REVISION"),
    )
    .set(1.0);
    &installed.handle
}

fn describe_http() {
    describe_counter!(HTTP_REQUESTS, Unit::Count, "HTTP requests served, by route template, method and status class.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from receiving an HTTP request to sending its response head, by route template, method and status class."
    );
    describe_gauge!(
        HTTP_IN_FLIGHT,
        Unit::Count,
        "HTTP requests being handled right now, by route template and method."
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels name the agent, its version and the git revision it was built from."
    );
}

/// The exposition (at most [`RENDER_REUSE`] old), with process metrics refreshed when rendered; `None` when metrics
/// are disabled.
pub async fn render() -> Option<Bytes> {
    let installed = INSTALLED.get()?;
    Some(
        installed
            .exposition
            .get(|| {
                installed.process.collect();
                installed.handle.render()
            })
            .await,
    )
}

/// Prometheus metrics in the text exposition format (404 when the agent runs with METRICS_ENABLED=false).
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 404, description = "Metrics are disabled", body = crate::errors::ErrorBody),
    ))]
pub async fn metrics_handler() -> Response {
    match render().await {
        Some(body) => ([(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))], body).into_response(),
        None => crate::errors::json_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The `/metrics` route, ready to merge into a service router.
pub fn routes() -> Router {
    Router::new().route("/metrics", get(metrics_handler))
}

/// Most connections the metrics port serves at once: scrapers keep one each. Beyond, new connections are closed at
/// once, so the metrics port can never hold the file descriptors the service port needs.
pub const METRICS_PORT_MAX_CONNECTIONS: usize = 32;

/// Serves only `/metrics` on `listener` (the optional `METRICS_PORT`) until the process exits, with the service
/// port's connection settings (header read and idle timeouts) and at most [`METRICS_PORT_MAX_CONNECTIONS`].
pub fn spawn_listener(listener: TcpListener, options: ServeOptions) -> tokio::task::JoinHandle<()> {
    let app = routes().fallback(crate::errors::not_found);
    crate::server::spawn_auxiliary(listener, app, options, METRICS_PORT_MAX_CONNECTIONS)
}

/// Binds the metrics listener when `METRICS_PORT` is set and metrics are on; returns where it listens.
pub async fn bind_listener(server: &ServerArgs) -> std::io::Result<Option<SocketAddr>> {
    let args = &server.telemetry.metrics;
    let Some(port) = args.metrics_port.filter(|_| args.metrics_enabled) else { return Ok(None) };
    let listener = TcpListener::bind(SocketAddr::new(server.bind_addr, port)).await?;
    let addr = listener.local_addr()?;
    spawn_listener(listener, ServeOptions::from(server));
    Ok(Some(addr))
}

/// Method labels, indexed by [`method_index`]: the standard methods, and `other` for anything else (clients choose
/// methods freely, so they must not become label values).
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "other"];

fn method_index(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

/// The method label of a request.
pub fn method_label(method: &Method) -> &'static str {
    METHODS[method_index(method)]
}

/// Status class labels, indexed by [`status_index`].
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

/// The status class label: `1xx` ... `5xx`.
pub fn status_class(status: StatusCode) -> &'static str {
    STATUS_CLASSES[status_index(status)]
}

/// The metric handles of one route and method, registered on first use. Building a label set and hashing it into
/// the registry for every request costs more than the request's own work on a hop this small; with the handles
/// kept, the hot path is one map lookup and a few atomic operations. Routes are templates, so the map is bounded.
struct RouteMetrics {
    in_flight: metrics::Gauge,
    by_status: [OnceLock<(metrics::Counter, metrics::Histogram)>; 5],
}

type RouteTable = RwLock<HashMap<String, [OnceLock<Arc<RouteMetrics>>; 10]>>;

fn route_metrics(route: &str, method: usize) -> Arc<RouteMetrics> {
    static ROUTES: OnceLock<RouteTable> = OnceLock::new();
    let table = ROUTES.get_or_init(RouteTable::default);
    let make = || {
        Arc::new(RouteMetrics {
            in_flight: metrics::gauge!(HTTP_IN_FLIGHT, "route" => route.to_owned(), "method" => METHODS[method]),
            by_status: Default::default(),
        })
    };
    if let Some(methods) = table.read().unwrap_or_else(PoisonError::into_inner).get(route) {
        return methods[method].get_or_init(make).clone();
    }
    let mut table = table.write().unwrap_or_else(PoisonError::into_inner);
    table.entry(route.to_owned()).or_default()[method].get_or_init(make).clone()
}

impl RouteMetrics {
    fn finished(&self, route: &str, method: usize, status: usize) -> &(metrics::Counter, metrics::Histogram) {
        self.by_status[status].get_or_init(|| {
            let labels = [
                ("route", route.to_owned()),
                ("method", METHODS[method].to_owned()),
                ("status_class", STATUS_CLASSES[status].to_owned()),
            ];
            (metrics::counter!(HTTP_REQUESTS, &labels), metrics::histogram!(HTTP_DURATION, &labels))
        })
    }
}

/// Decrements the in-flight gauge when the request ends, including when the client goes away mid-request and the
/// handler future is dropped.
struct InFlight(Arc<RouteMetrics>);

impl InFlight {
    fn enter(metrics: Arc<RouteMetrics>) -> Self {
        metrics.in_flight.increment(1.0);
        Self(metrics)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.decrement(1.0);
    }
}

/// Runs a request through `next`, recording its RED metrics. Called by the shared middleware when [`enabled`].
pub async fn record_http(req: Request<Body>, next: Next) -> Response {
    // MatchedPath is a shared string: cloning it does not copy the route.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    let method = method_index(req.method());
    let started = Instant::now();
    let in_flight = InFlight::enter(route_metrics(route, method));
    let response = next.run(req).await;
    let (requests, duration) = in_flight.0.finished(route, method, status_index(response.status()));
    duration.record(started.elapsed());
    requests.increment(1);
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn scrapes_within_the_reuse_window_share_one_render() {
        let exposition = Arc::new(Exposition::default());
        let renders = Arc::new(AtomicUsize::new(0));
        let render =
            |renders: Arc<AtomicUsize>| move || format!("render {}", renders.fetch_add(1, Ordering::SeqCst) + 1);
        let scrapes: Vec<_> = (0..64)
            .map(|_| {
                let (exposition, renders) = (exposition.clone(), renders.clone());
                tokio::spawn(async move { exposition.get(render(renders)).await })
            })
            .collect();
        for scrape in scrapes {
            assert_eq!(scrape.await.unwrap(), "render 1");
        }
        tokio::time::advance(RENDER_REUSE - Duration::from_millis(1)).await;
        assert_eq!(exposition.get(render(renders.clone())).await, "render 1");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(exposition.get(render(renders.clone())).await, "render 2", "rendered again after the window");
        assert_eq!(renders.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
        assert_eq!(status_class(StatusCode::OK), "2xx");
        assert_eq!(status_class(StatusCode::UNPROCESSABLE_ENTITY), "4xx");
        assert_eq!(status_class(StatusCode::GATEWAY_TIMEOUT), "5xx");
        assert_eq!(status_class(StatusCode::SWITCHING_PROTOCOLS), "1xx");
    }
}
