//! The bounds every request to an app route gets before its handler runs: on concurrency ([`shed`]), and on its
//! body, in size (`MAX_BODY_BYTES`) and in time (`BODY_READ_TIMEOUT`) ([`RequestBodyLayer`]).
//!
//! Shedding answers at once: a request over `MAX_IN_FLIGHT` gets 503 with `Retry-After` instead of waiting in a
//! queue, so under a burst the agent keeps answering quickly and callers (or the mesh) can go elsewhere. It is
//! tower's concurrency limit and load shedder with a FastAPI-shaped answer; only the app routes get it (see
//! [`crate::agent`]), so probes and scrapes are never shed: failing liveness under load would get a busy pod
//! restarted, which makes the overload worse, and operators need metrics most when the agent is busiest.
//!
//! A body declared larger than the limit is refused before anything is read. Any other body is wrapped in a
//! [`BoundedBody`], which fails as soon as more than the limit has arrived, or once the whole body has not arrived
//! within the read timeout counted from the request head. The handler reading the body (through
//! [`crate::fastapi::body::read`]) then answers 413 or 408 and returns, so the request frees its in-flight slot and a
//! drain is not held up by a client that stopped sending.
//!
//! The body bounds are written here rather than composed from `http_body_util::Limited` and tower-http's
//! `TimeoutBody`: the latter restarts its timer at every frame, so a client sending a byte every few seconds would
//! never time out, and the answers must name the configured limit, which those errors do not carry.

use std::{
    fmt,
    future::{Ready, ready},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    BoxError, Router,
    body::{Body, Bytes},
    error_handling::HandleErrorLayer,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::future::Either;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{
    Layer, Service, ServiceBuilder,
    layer::util::{Identity, Stack},
    limit::GlobalConcurrencyLimitLayer,
    load_shed::LoadShedLayer,
    load_shed::error::Overloaded,
};

use super::ServerArgs;
use crate::fastapi::{BodyLimitError, BodyRejection, Failure, json_error};

/// Seconds a shed caller is asked to wait: in-flight requests usually finish well within it.
const SHED_RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

/// The admission limits of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most requests to the app routes handled at once.
    pub max_in_flight: u32,
    /// The bounds on each request body.
    pub body: BodyLimits,
}

impl From<&ServerArgs> for Limits {
    fn from(args: &ServerArgs) -> Self {
        Self { max_in_flight: args.max_in_flight, body: BodyLimits::from(args) }
    }
}

/// The bounds on one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Longest time the whole body may take to arrive, counted from the request head.
    pub read_timeout: Duration,
}

impl From<&ServerArgs> for BodyLimits {
    fn from(args: &ServerArgs) -> Self {
        Self { max_bytes: args.max_body_bytes, read_timeout: args.body_read_timeout }
    }
}

/// Bounds the requests handled at once by every route of `router` together (call after the routes are added):
/// beyond `max_in_flight`, a request is answered 503 with `Retry-After` at once.
pub fn shed(router: Router, max_in_flight: u32) -> Router {
    router.layer(shed_layer(max_in_flight))
}

/// The layers of [`shed`], to stack with others in one `Router::layer` call: each such call boxes every route's
/// service and future once more and clones the whole stack below it on every request (`bench/callgrind.sh`).
pub type ShedLayer = ServiceBuilder<
    Stack<GlobalConcurrencyLimitLayer, Stack<LoadShedLayer, Stack<HandleErrorLayer<ShedAnswer, ()>, Identity>>>,
>;

/// What [`ShedLayer`] answers a shed request with.
pub type ShedAnswer = fn(BoxError) -> Ready<Response>;

/// The layers bounding the requests handled at once to `max_in_flight` (see [`shed`]).
pub fn shed_layer(max_in_flight: u32) -> ShedLayer {
    metrics::describe_counter!(
        "http_requests_shed_total",
        "Requests answered 503 at once because MAX_IN_FLIGHT were in flight"
    );
    ServiceBuilder::new()
        .layer(HandleErrorLayer::new(shed_answer as ShedAnswer))
        .layer(LoadShedLayer::new())
        // One permit pool for every route; a permit is held until the handler has produced its response (our
        // answers are small, so that is the request's cost).
        .layer(GlobalConcurrencyLimitLayer::new(max_in_flight as usize))
}

fn shed_answer(err: BoxError) -> Ready<Response> {
    if err.is::<Overloaded>() {
        metrics::counter!("http_requests_shed_total").increment(1);
        let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "The agent is at capacity; try again shortly.");
        response.headers_mut().insert(header::RETRY_AFTER, SHED_RETRY_AFTER);
        return ready(Failure::attach(response, "shed: MAX_IN_FLIGHT requests in flight"));
    }
    // The routes under the limit cannot fail (axum handlers are infallible), so only the shedder's error arrives.
    ready(Failure::attach(json_error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"), err))
}

/// Puts [`BodyLimits`] on every request of the service it wraps (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct RequestBodyLayer {
    limits: BodyLimits,
}

impl RequestBodyLayer {
    /// A layer applying `limits`.
    pub fn new(limits: BodyLimits) -> Self {
        metrics::describe_counter!(
            "http_requests_rejected_total",
            "Requests refused before or while reading their body, by reason"
        );
        Self { limits }
    }
}

impl<S> Layer<S> for RequestBodyLayer {
    type Service = RequestBodyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestBodyService { inner, limits: self.limits }
    }
}

/// The service made by [`RequestBodyLayer`].
#[derive(Debug, Clone)]
pub struct RequestBodyService<S> {
    inner: S,
    limits: BodyLimits,
}

impl<S> Service<Request> for RequestBodyService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.limits.max_bytes as u64) {
            let refused = BodyLimitError::TooLarge { limit: self.limits.max_bytes };
            metrics::counter!("http_requests_rejected_total", "reason" => refused.reason()).increment(1);
            let refused = BodyRejection::Limit(refused);
            return Either::Left(ready(Ok(refused.into_response())));
        }
        let limits = self.limits;
        Either::Right(self.inner.call(req.map(|body| Body::new(BoundedBody::new(body, limits)))))
    }
}

/// A body that fails once more than the limit has arrived, or once it has not fully arrived by its deadline.
pub struct BoundedBody {
    inner: Body,
    limits: BodyLimits,
    received: usize,
    deadline: Instant,
    /// Created the first time the body has nothing to give, so a body that arrives at once costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
}

impl fmt::Debug for BoundedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedBody").field("limits", &self.limits).field("received", &self.received).finish()
    }
}

impl BoundedBody {
    /// Bounds `inner` by `limits`; the read timeout counts from now.
    pub fn new(inner: Body, limits: BodyLimits) -> Self {
        Self { inner, limits, received: 0, deadline: Instant::now() + limits.read_timeout, timer: None }
    }
}

impl hyper::body::Body for BoundedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let timed_out = || BodyLimitError::TimedOut { after: this.limits.read_timeout };
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.received = this.received.saturating_add(frame.data_ref().map_or(0, Bytes::len));
                if this.received > this.limits.max_bytes {
                    Poll::Ready(Some(Err(BodyLimitError::TooLarge { limit: this.limits.max_bytes }.into())))
                } else if Instant::now() >= this.deadline {
                    // A body trickling in never leaves the inner body pending for long; the bound is on the total.
                    Poll::Ready(Some(Err(timed_out().into())))
                } else {
                    Poll::Ready(Some(Ok(frame)))
                }
            }
            Poll::Ready(other) => Poll::Ready(other.map(|result| result.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(timed_out().into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::routing::{get, post};
    use http_body_util::{BodyExt, channel::Channel};
    use tokio::sync::{Notify, mpsc};
    use tower::ServiceExt;

    use super::*;
    use crate::fastapi::body::read;

    const LIMITS: BodyLimits = BodyLimits { max_bytes: 16, read_timeout: Duration::from_secs(3) };

    fn echo() -> Router {
        Router::new()
            .route(
                "/echo",
                post(|req: Request| async move {
                    match read(req.into_body()).await {
                        Ok(bytes) => bytes.len().to_string().into_response(),
                        Err(rejection) => rejection.into_response(),
                    }
                }),
            )
            .layer(RequestBodyLayer::new(LIMITS))
    }

    async fn status_and_body(response: Response) -> (StatusCode, String) {
        let status = response.status();
        (status, String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_trickling_in_is_bounded_in_total_not_per_frame() {
        let (mut sender, body) = Channel::<Bytes, std::convert::Infallible>::new(1);
        tokio::spawn(async move {
            // A byte a second: each wait is well under the timeout, the total is not.
            for _ in 0..10 {
                if sender.send_data(Bytes::from_static(b"x")).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        let started = Instant::now();
        let response = echo().oneshot(Request::post("/echo").body(Body::new(body)).unwrap()).await.unwrap();
        assert_eq!(
            status_and_body(response).await,
            (StatusCode::REQUEST_TIMEOUT, r#"{"detail":"Request body not received within 3s"}"#.to_owned())
        );
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_declared_body_over_the_limit_is_refused_unread_and_a_chunked_one_once_past_it() {
        let too_large =
            (StatusCode::PAYLOAD_TOO_LARGE, r#"{"detail":"Request body too large: the limit is 16 bytes"}"#);
        // Declared: refused before anything is read, even on a route that never reads it.
        let (_sender, never_sent) = Channel::<Bytes, std::convert::Infallible>::new(1);
        let declared = Request::post("/echo").header(header::CONTENT_LENGTH, "17").body(Body::new(never_sent)).unwrap();
        let response = echo().oneshot(declared).await.unwrap();
        assert_eq!(status_and_body(response).await, (too_large.0, too_large.1.to_owned()));
        // Undeclared: stopped as soon as more than the limit has arrived.
        let chunked = Request::post("/echo").body(Body::from(vec![b'x'; 40])).unwrap();
        let response = echo().oneshot(chunked).await.unwrap();
        assert_eq!(status_and_body(response).await, (too_large.0, too_large.1.to_owned()));
    }

    #[tokio::test]
    async fn a_body_within_the_bounds_is_read_whole() {
        let response = echo().oneshot(Request::post("/echo").body(Body::from("0123456789abcdef")).unwrap()).await;
        assert_eq!(status_and_body(response.unwrap()).await, (StatusCode::OK, "16".to_owned()));
    }

    /// `/work` announces each request on `entered`, then holds it until `gate` is notified; `/open` is outside the
    /// limit, as the ops routes are.
    fn gated_app(max_in_flight: u32, entered: mpsc::UnboundedSender<()>, gate: Arc<Notify>) -> Router {
        let work = Router::new().route(
            "/work",
            get(move || {
                let (entered, gate) = (entered.clone(), gate.clone());
                async move {
                    let _ = entered.send(());
                    gate.notified().await;
                    "done"
                }
            }),
        );
        shed(work, max_in_flight).route("/open", get(|| async { "ok" }))
    }

    fn get_request(uri: &str) -> Request {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_the_bound_are_shed_at_once_but_routes_outside_it_are_not() {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let app = gated_app(1, entered_tx, gate.clone());
        let held = tokio::spawn(app.clone().oneshot(get_request("/work")));
        tokio::time::timeout(Duration::from_secs(5), entered.recv()).await.expect("the first request is handled");

        let shed = app.clone().oneshot(get_request("/work")).await.unwrap();
        assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            status_and_body(shed).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"detail":"The agent is at capacity; try again shortly."}"#.to_owned()
            )
        );
        let open = app.clone().oneshot(get_request("/open")).await.unwrap();
        assert_eq!(open.status(), StatusCode::OK, "routes outside the limit are never shed");

        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
        // The slot is free again once the held request is answered.
        let next = tokio::spawn(app.oneshot(get_request("/work")));
        tokio::time::timeout(Duration::from_secs(5), entered.recv()).await.expect("admitted after the slot freed");
        gate.notify_one();
        assert_eq!(next.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
