//! The layers every agent router gets: request id, one tracing span per request, RED metrics, admission limits
//! (see [`crate::limits`] and [`crate::request_body`]), panic containment, `GET /metrics`, and FastAPI-shaped 404/405 fallbacks.

use std::time::Duration;

use axum::{
    Router,
    body::Body,
    extract::MatchedPath,
    http::{Request, Response, StatusCode},
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::{Span, field::Empty};

use crate::{
    errors,
    limits::{self, Limits},
    metrics,
    propagation::REQUEST_ID,
    request_body::RequestBodyLayer,
    telemetry,
};

/// Routes that probes and scrapers hit every few seconds; logged at debug so they do not flood the logs.
const QUIET_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// An agent's full router: its own routes plus the probes and API docs every agent serves, the app-token check (when
/// a token is set) and the shared layers. Both agents build their router through this, so they cannot drift apart.
pub fn agent_router(
    own_routes: Router,
    health: &crate::health::Health,
    spec: utoipa::openapi::OpenApi,
    app_token: Option<&str>,
    limits: Limits,
) -> Router {
    let app = own_routes.merge(crate::health::routes(health.clone())).merge(crate::docs::routes(spec));
    apply(crate::dapr::require_app_token(app, app_token), limits)
}

/// Wraps a service router with `/metrics`, the shared fallbacks and layers. Apply last, after every route is added.
pub fn apply(router: Router, limits: Limits) -> Router {
    let router = router
        .merge(metrics::routes())
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        // Innermost first: a panic becomes a 500 JSON answer that is still traced, counted and carries the id.
        .layer(CatchPanicLayer::custom(|_panic| {
            errors::json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }));
    // Admission limits inside the id and trace layers: a shed or refused request is still logged with its id.
    limits::apply(router, limits.max_in_flight)
        .layer(RequestBodyLayer::new(limits.body))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(axum::middleware::from_fn(observe))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

/// Marks a response to a quiet route, so the response log line can pick its level without the request at hand.
#[derive(Debug, Clone, Copy)]
struct QuietRoute;

fn matched_route(req: &Request<Body>) -> &str {
    req.extensions().get::<MatchedPath>().map_or(metrics::UNMATCHED_ROUTE, MatchedPath::as_str)
}

/// Records the request's RED metrics (when the Prometheus recorder is installed, see [`metrics::install`]) and marks
/// responses to quiet routes. One middleware for both: each layer costs an allocation and clones per request.
async fn observe(req: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let quiet = QUIET_ROUTES.contains(&matched_route(&req));
    let mut res = if metrics::enabled() { metrics::record_http(req, next).await } else { next.run(req).await };
    if quiet {
        res.extensions_mut().insert(QuietRoute);
    }
    res
}

/// The span of one request. Probes and scrapes get a DEBUG span; everything else an ERROR-level one, so that it
/// exists (and carries the correlation ids) whatever the log filter says; see [`crate::telemetry`].
///
/// With OpenTelemetry on, the span also names the server span (`GET /recommend`) and can carry its status.
fn request_span(req: &Request<Body>) -> Span {
    let route = matched_route(req);
    let method = req.method();
    let quiet = QUIET_ROUTES.contains(&route);
    // Probe spans are below the OpenTelemetry layer's INFO filter, so they never need the exported span's fields.
    let span = match (quiet, telemetry::otel::enabled()) {
        (true, _) => tracing::debug_span!("request", %method, route),
        (false, false) => tracing::error_span!("request", %method, route),
        (false, true) => tracing::error_span!("request", %method, route, status = Empty, latency_ms = Empty,
            otel.name = %format_args!("{method} {route}"), otel.kind = "server", otel.status_code = Empty,
            request_id = Empty),
    };
    if !span.is_disabled() {
        let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
        // An attribute of the exported span (so traces can be found by request id); a no-op without OpenTelemetry.
        span.record("request_id", request_id);
        telemetry::attach_request_ids(&span, req.headers(), request_id);
    }
    span
}

fn log_response(res: &Response<Body>, latency: Duration, span: &Span) {
    let status = res.status().as_u16();
    // Microsecond resolution is plenty and keeps log lines short.
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    if telemetry::otel::enabled() {
        // Span fields only matter to the exported span: the log line below carries them itself.
        span.record("status", status);
        span.record("latency_ms", latency_ms);
        if res.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    if res.extensions().get::<QuietRoute>().is_some() {
        tracing::debug!(status, latency_ms, "request completed");
    } else if res.status().is_server_error() {
        tracing::warn!(status, latency_ms, "request completed");
    } else {
        tracing::info!(status, latency_ms, "request completed");
    }
}
