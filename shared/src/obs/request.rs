//! The layer that observes every request: it gives the request an id (`x-request-id`, generated when absent and
//! returned on the answer), a span carrying the correlation ids, its RED metrics, and one log line when it is
//! answered, which names the [`Failure`] behind an error answer. A handler that panics is answered 500 here, so
//! even that request is counted, logged and carries its id.
//!
//! One hand-written layer instead of tower-http's request-id, propagate-request-id, trace and catch-panic layers plus
//! a metrics middleware: every layer costs each request a clone of its service and a future of its own, and on a hop as small
//! as these agents' that is a measurable share of the request's cost (`bench/run.sh`). Its future is a plain
//! struct: no boxing, no wrapping of the response body.
//!
//! Requests to the app routes, and those no route takes (404/405), are observed with [`ObserveLayer::new`]: a span
//! at ERROR level (so it exists whatever the log filter), and a line at info, or warn for 5xx. Probes, scrapes and
//! the docs are observed with [`ObserveLayer::quiet`]: span and line at debug, so they neither flood the log nor
//! export spans unless asked for.

use std::{
    any::Any,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request},
    http::{HeaderValue, StatusCode},
    response::Response,
};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::{Span, field::Empty};

use super::{REQUEST_ID, attach_request_ids, metrics, otel};
use crate::fastapi::{Failure, json_error};

/// Observes every request of the routes it is applied to (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct ObserveLayer {
    quiet: bool,
}

impl ObserveLayer {
    /// For the app routes and the fallbacks: an ERROR-level span, a line at info (warn for 5xx).
    pub fn new() -> Self {
        Self { quiet: false }
    }

    /// For probes, scrapes and the docs: span and line at debug.
    pub fn quiet() -> Self {
        Self { quiet: true }
    }
}

impl Default for ObserveLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner, quiet: self.quiet }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
    quiet: bool,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let received = Instant::now();
        let request_id = match req.headers().get(REQUEST_ID) {
            Some(given) => given.clone(),
            None => {
                let generated = new_request_id();
                req.headers_mut().insert(REQUEST_ID, generated.clone());
                generated
            }
        };
        let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
        let in_flight = metrics::InFlight::enter(route, req.method());
        let span = request_span(&req, route.unwrap_or(metrics::UNMATCHED_ROUTE), &request_id, self.quiet);
        let inner = span.in_scope(|| self.inner.call(req));
        ObserveFuture { inner, span, received, request_id, in_flight, quiet: self.quiet }
    }
}

pin_project! {
    /// The future of [`Observe`]: the inner answer, polled inside the request's span, then counted and logged.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        received: Instant,
        request_id: HeaderValue,
        in_flight: Option<metrics::InFlight>,
        quiet: bool,
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut answered = match catch_unwind(AssertUnwindSafe(|| this.inner.poll(cx))) {
            Ok(polled) => ready!(polled),
            Err(panic) => Ok(panicked(panic.as_ref())),
        };
        if let Ok(response) = &mut answered {
            let latency = this.received.elapsed();
            if let Some(in_flight) = this.in_flight.take() {
                in_flight.finish(response.status(), latency);
            }
            log_response(response, latency, this.span, *this.quiet);
            if !response.headers().contains_key(REQUEST_ID) {
                response.headers_mut().insert(REQUEST_ID, this.request_id.clone());
            }
        }
        Poll::Ready(answered)
    }
}

/// The answer to a request whose handler panicked: a plain 500, with the panic's message for the log only.
fn panicked(panic: &(dyn Any + Send)) -> Response {
    let message = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    let why = format!("handler panicked: {}", message.unwrap_or("(no message)"));
    Failure::attach(json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"), why)
}

/// A random request id in the UUID v4 form. Not from a cryptographic generator: it correlates log lines, it
/// guards nothing, and the thread-local generator costs no system call.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Version 4 in bits 76..80, the RFC 4122 variant (0b10) in bits 62..64.
    let bits = (fastrand::u128(..) & !(0xF << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let mut text = [b'-'; 36];
    let mut digit = 0;
    for (i, slot) in text.iter_mut().enumerate() {
        if !matches!(i, 8 | 13 | 18 | 23) {
            *slot = HEX[((bits >> (124 - 4 * digit)) & 0xF) as usize];
            digit += 1;
        }
    }
    HeaderValue::from_bytes(&text).expect("hex digits and dashes are a valid header value")
}

/// The span of one request. The ERROR-level one also names the server span (`GET /recommend`) and can carry its
/// status when OpenTelemetry is on; see the module docs for the levels.
fn request_span(req: &Request, route: &str, request_id: &HeaderValue, quiet: bool) -> Span {
    // As text, not `%method`: a `&str` field is written as it is, a displayed one through `fmt` and an escaper.
    let method = req.method().as_str();
    // Quiet spans are below the OpenTelemetry layer's INFO filter, so they never need the exported span's fields.
    let span = match (quiet, otel::enabled()) {
        (true, _) => tracing::debug_span!("request", method, route),
        (false, false) => tracing::error_span!("request", method, route),
        (false, true) => tracing::error_span!("request", method, route, status = Empty, latency_ms = Empty,
            otel.name = %format_args!("{method} {route}"), otel.kind = "server", otel.status_code = Empty,
            request_id = Empty),
    };
    if !span.is_disabled() {
        let request_id = request_id.to_str().unwrap_or_default();
        // An attribute of the exported span (so traces can be found by request id); a no-op without OpenTelemetry.
        span.record("request_id", request_id);
        attach_request_ids(&span, req.headers(), request_id);
    }
    span
}

/// The request's one line: status, latency and, for an error answer, its [`Failure`].
fn log_response(res: &Response, latency: Duration, span: &Span, quiet: bool) {
    let status = res.status().as_u16();
    // Microsecond resolution is plenty and keeps log lines short.
    let latency_ms = latency.as_micros() as f64 / 1000.0;
    let error = res.extensions().get::<Failure>().map(|failure| failure.0.as_str());
    if otel::enabled() {
        // Span fields only matter to the exported span: the log line below carries them itself.
        span.record("status", status);
        span.record("latency_ms", latency_ms);
        if res.status().is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    if quiet {
        tracing::debug!(status, latency_ms, error, "request completed");
    } else if res.status().is_server_error() {
        tracing::warn!(status, latency_ms, error, "request completed");
    } else {
        tracing::info!(status, latency_ms, error, "request completed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_uuid_v4s() {
        let ids: Vec<String> = (0..100).map(|_| new_request_id().to_str().unwrap().to_owned()).collect();
        for id in &ids {
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(groups.iter().map(|g| g.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
            assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)), "{id}");
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'), "RFC 4122 variant: {id}");
        }
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }
}
