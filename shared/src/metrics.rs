//! Prometheus metrics: the process-wide recorder, the RED middleware every router gets, and `GET /metrics`.
//!
//! Metrics are emitted through the `metrics` facade, so code anywhere in the agents can record them; this module
//! installs the Prometheus recorder behind that facade and renders its text exposition. Nothing is recorded (and no
//! middleware is installed) until [`install`] runs, so in-process tests and a `METRICS_ENABLED=false` process pay
//! nothing.
//!
//! Labels are bounded by construction: the route is the matched route *template* (`/recommend`, never the raw
//! path; anything no route matched is [`UNMATCHED_ROUTE`]), the method is one of the standard methods or `other`,
//! and the status is a class (`2xx`, `4xx`, `5xx`, ...).

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
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

/// Metrics settings shared by both agents.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Record Prometheus metrics and serve them at GET /metrics. `false` removes the metrics middleware entirely
    /// (for measuring its cost); /metrics then answers 404.
    #[arg(long, env = "METRICS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_enabled: bool,

    /// Also serve GET /metrics on this port (same bind address), e.g. to keep scrapes off the service port.
    /// /metrics stays available on PORT as well.
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
        Installed { handle, process }
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

/// The current exposition, with process metrics refreshed; `None` when metrics are disabled.
pub fn render() -> Option<String> {
    let installed = INSTALLED.get()?;
    installed.process.collect();
    Some(installed.handle.render())
}

/// Prometheus metrics in the text exposition format (404 when the agent runs with METRICS_ENABLED=false).
#[utoipa::path(get, path = "/metrics", tag = "observability",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
            content_type = "text/plain; version=0.0.4; charset=utf-8"),
        (status = 404, description = "Metrics are disabled", body = crate::errors::ErrorBody),
    ))]
pub async fn metrics_handler() -> Response {
    match render() {
        Some(body) => ([(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))], body).into_response(),
        None => crate::errors::json_error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// The `/metrics` route, ready to merge into a service router.
pub fn routes() -> Router {
    Router::new().route("/metrics", get(metrics_handler))
}

/// Serves only `/metrics` on `listener` (the optional `METRICS_PORT`), until the process exits.
pub fn spawn_listener(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = routes().fallback(crate::errors::not_found);
        if let Err(err) = axum::serve(listener, app).await {
            tracing::error!(error = %err, "metrics listener failed");
        }
    })
}

/// Binds the metrics listener when `METRICS_PORT` is set and metrics are on; returns where it listens.
pub async fn bind_listener(args: &MetricsArgs, bind_addr: std::net::IpAddr) -> std::io::Result<Option<SocketAddr>> {
    let Some(port) = args.metrics_port.filter(|_| args.metrics_enabled) else { return Ok(None) };
    let listener = TcpListener::bind(SocketAddr::new(bind_addr, port)).await?;
    let addr = listener.local_addr()?;
    spawn_listener(listener);
    Ok(Some(addr))
}

/// The method label: the standard methods by name, anything else as `other` (clients choose methods freely).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// The status class label: `1xx` ... `5xx`.
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Decrements the in-flight gauge when the request ends, including when the client goes away mid-request and the
/// handler future is dropped.
struct InFlight(metrics::Gauge);

impl InFlight {
    fn enter(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Middleware recording the RED metrics of one request. Only installed when [`enabled`] (see
/// [`crate::middleware::apply`]).
pub async fn record_http(req: Request<Body>, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or(UNMATCHED_ROUTE, MatchedPath::as_str).to_owned();
    let method = method_label(req.method());
    let started = Instant::now();
    let _in_flight = InFlight::enter(metrics::gauge!(HTTP_IN_FLIGHT, "route" => route.clone(), "method" => method));
    let response = next.run(req).await;
    let status_class = status_class(response.status());
    let labels = [("route", route), ("method", method.to_owned()), ("status_class", status_class.to_owned())];
    metrics::histogram!(HTTP_DURATION, &labels).record(started.elapsed());
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
