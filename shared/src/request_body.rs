//! The bounds on every request body, in size (`MAX_BODY_BYTES`) and in time (`BODY_READ_TIMEOUT`), as a tower
//! layer, and the FastAPI-shaped answers when a body crosses one or cannot be read.
//!
//! A body declared larger than the limit is refused before anything is read. Any other body is wrapped in a
//! [`BoundedBody`], which fails as soon as more than the limit has arrived, or once the whole body has not arrived
//! within the read timeout counted from the request head. The handler reading the body (through [`read`]) then
//! answers 413 or 408 and returns, so the request frees its in-flight slot and a drain is not held up by a client
//! that stopped sending. A body that breaks off or is malformed (a bad chunk size) is 400, with the message FastAPI
//! uses when it cannot read a body.
//!
//! Written here rather than composed from `http_body_util::Limited` and tower-http's `TimeoutBody`: the latter
//! restarts its timer at every frame, so a client sending a byte every few seconds would never time out, and the
//! answers must name the configured limit, which those errors do not carry.

use std::{
    fmt,
    future::{Ready, ready},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    BoxError,
    body::{Body, Bytes},
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::future::Either;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::{
    config::ServerArgs,
    errors::{ErrorBody, json_error},
    validation::ValidationErrorBody,
};

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

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyLimitError {
    /// More than the limit was declared or sent.
    #[error("request body over the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The body had not arrived within the read timeout.
    #[error("request body not received within {after:?}")]
    TimedOut {
        /// The read timeout.
        after: Duration,
    },
}

/// Why a handler could not use a request body; answers in FastAPI's shapes.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyRejection {
    /// 413 or 408: a bound was crossed.
    Limit(BodyLimitError),
    /// 400: the body broke off or its framing was malformed.
    Unreadable,
    /// 422: the body arrived but is not what the route accepts.
    Invalid(ValidationErrorBody),
}

impl From<ValidationErrorBody> for BodyRejection {
    fn from(body: ValidationErrorBody) -> Self {
        Self::Invalid(body)
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        match self {
            Self::Limit(BodyLimitError::TooLarge { limit }) => {
                json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("Request body too large: the limit is {limit} bytes"))
            }
            Self::Limit(BodyLimitError::TimedOut { after }) => {
                let mut response = json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("Request body not received within {}", humantime::format_duration(after)),
                );
                // Whatever is left of the body will not be read, so the connection cannot carry another request.
                response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            Self::Unreadable => json_error(StatusCode::BAD_REQUEST, "There was an error parsing the body"),
            Self::Invalid(body) => body.into_response(),
        }
    }
}

/// A whole request body, read within the bounds the [`RequestBodyLayer`] put on it.
#[derive(Debug, Clone)]
pub struct BodyBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for BodyBytes {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        read(req.into_body()).await.map(Self)
    }
}

/// The answers of a route that reads a body when the body cannot be read, for its OpenAPI description:
/// `responses(..., BodyReadErrors)` in `#[utoipa::path]`.
#[derive(Debug, utoipa::IntoResponses)]
pub enum BodyReadErrors {
    /// The body broke off or its framing is malformed.
    #[response(status = 400)]
    Unreadable(ErrorBody),
    /// The body did not arrive within BODY_READ_TIMEOUT.
    #[response(status = 408)]
    TimedOut(ErrorBody),
    /// The body is larger than MAX_BODY_BYTES.
    #[response(status = 413)]
    TooLarge(ErrorBody),
}

/// Reads a whole request body within the bounds the [`RequestBodyLayer`] put on it.
pub async fn read(body: Body) -> Result<Bytes, BodyRejection> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => {
            let limit = std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| e.source())
                .find_map(|e| e.downcast_ref::<BodyLimitError>());
            match limit {
                Some(limit) => {
                    let reason = match limit {
                        BodyLimitError::TooLarge { .. } => "body_too_large",
                        BodyLimitError::TimedOut { .. } => "body_timeout",
                    };
                    metrics::counter!("http_requests_rejected_total", "reason" => reason).increment(1);
                    Err(BodyRejection::Limit(*limit))
                }
                None => {
                    tracing::debug!(error = %err, "request body unreadable");
                    Err(BodyRejection::Unreadable)
                }
            }
        }
    }
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
            metrics::counter!("http_requests_rejected_total", "reason" => "body_too_large").increment(1);
            let refused = BodyRejection::Limit(BodyLimitError::TooLarge { limit: self.limits.max_bytes });
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
    use axum::{Router, routing::post};
    use http_body_util::channel::Channel;
    use tower::ServiceExt;

    use super::*;

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
}
