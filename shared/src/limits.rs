//! Admission limits every agent applies before a request reaches its handler: a bound on concurrent requests
//! (load shedding) here, and the bounds on request bodies (see [`crate::request_body`]).
//!
//! Shedding answers at once: a request over the bound gets 503 with `Retry-After` instead of waiting in a queue,
//! so under a burst the agent keeps answering quickly and callers (or the mesh) can go elsewhere. Probes and
//! `/metrics` are never shed: failing liveness under load would get a busy pod restarted, which makes the overload
//! worse, and operators need metrics most when the agent is busiest.

use std::sync::Arc;

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    middleware::{self, Next},
    response::Response,
};
use tokio::sync::Semaphore;

use crate::{config::ServerArgs, errors::json_error, request_body::BodyLimits};

/// Routes exempt from shedding: the probes and the metrics scrape.
pub const UNSHED_ROUTES: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Seconds a shed caller is asked to wait: in-flight requests usually finish well within it.
const SHED_RETRY_AFTER: HeaderValue = HeaderValue::from_static("1");

/// The admission limits of one agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most requests handled at once (probes and metrics not counted).
    pub max_in_flight: u32,
    /// The bounds on each request body.
    pub body: BodyLimits,
}

impl From<&ServerArgs> for Limits {
    fn from(args: &ServerArgs) -> Self {
        Self { max_in_flight: args.max_in_flight, body: BodyLimits::from(args) }
    }
}

#[derive(Debug)]
struct Admission {
    in_flight: Semaphore,
}

/// Adds the bound on concurrent requests to every route of `router` (call after the routes are added). All routes
/// share one bound.
pub fn apply(router: Router, max_in_flight: u32) -> Router {
    let admission = Arc::new(Admission { in_flight: Semaphore::new(max_in_flight as usize) });
    metrics::describe_counter!(
        "http_requests_shed_total",
        "Requests answered 503 at once because MAX_IN_FLIGHT were in flight"
    );
    router.layer(middleware::from_fn_with_state(admission, admit))
}

async fn admit(State(admission): State<Arc<Admission>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(MatchedPath::as_str);
    if route.is_some_and(|route| UNSHED_ROUTES.contains(&route)) {
        return next.run(req).await;
    }
    // Held until the handler has produced its response; our answers are small, so that is the request's cost.
    let Ok(_permit) = admission.in_flight.try_acquire() else {
        metrics::counter!("http_requests_shed_total").increment(1);
        let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "The agent is at capacity; try again shortly.");
        response.headers_mut().insert(RETRY_AFTER, SHED_RETRY_AFTER);
        return response;
    };
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::{body::Body, http::Request, routing::get};
    use http_body_util::BodyExt;
    use tokio::sync::{Notify, mpsc};
    use tower::ServiceExt;

    use super::*;

    /// `/work` announces each request on `entered`, then holds it until `gate` is notified.
    fn gated_app(max_in_flight: u32, entered: mpsc::UnboundedSender<()>, gate: Arc<Notify>) -> Router {
        let app = Router::new()
            .route(
                "/work",
                get(move || {
                    let (entered, gate) = (entered.clone(), gate.clone());
                    async move {
                        let _ = entered.send(());
                        gate.notified().await;
                        "done"
                    }
                }),
            )
            .route("/healthz", get(|| async { "ok" }));
        apply(app, max_in_flight)
    }

    async fn body_of(response: Response) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    fn request(uri: &str) -> Request<Body> {
        Request::get(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn requests_beyond_the_bound_are_shed_at_once_but_probes_are_not() {
        let (entered_tx, mut entered) = mpsc::unbounded_channel();
        let gate = Arc::new(Notify::new());
        let app = gated_app(1, entered_tx, gate.clone());
        let held = tokio::spawn(app.clone().oneshot(request("/work")));
        tokio::time::timeout(Duration::from_secs(5), entered.recv()).await.expect("the first request is handled");

        let shed = app.clone().oneshot(request("/work")).await.unwrap();
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(shed.headers()[RETRY_AFTER], "1");
        assert_eq!(body_of(shed).await, r#"{"detail":"The agent is at capacity; try again shortly."}"#);
        let probe = app.clone().oneshot(request("/healthz")).await.unwrap();
        assert_eq!(probe.status(), StatusCode::OK, "probes are never shed");

        gate.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
        // The slot is free again once the held request is answered.
        let next = tokio::spawn(app.oneshot(request("/work")));
        tokio::time::timeout(Duration::from_secs(5), entered.recv()).await.expect("admitted after the slot freed");
        gate.notify_one();
        assert_eq!(next.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}
