//! An agent's router: its app routes and the ops routes, each with the layers it needs.
//!
//! - **App routes** (the agent's own, e.g. `/recommend`): the app token when one is set, load shedding beyond
//!   `MAX_IN_FLIGHT`, and the bounds on the request body in size and time.
//! - **Ops routes** (`/healthz`, `/readyz`, `/metrics`, `/openapi.json`, `/docs`): none of those. Probes and
//!   scrapes carry no token (the kubelet and compose healthchecks cannot send one) and must be answered however busy
//!   the agent is: failing liveness under load would get a busy pod restarted, which makes the overload worse.
//!
//! Which routes get what follows from which router a route is on, so no list of paths has to be kept in step with
//! the routes. Every request, whichever router takes it (and those none takes: 404, 405), is observed by
//! [`ObserveLayer`]: request id, span, RED metrics, one log line, a panic answered 500; the ops routes quietly.
//!
//! Layers are applied per router rather than around the whole service because they need the matched route, which
//! exists only once the router has matched.

use std::sync::Arc;

use axum::{Router, handler::Handler};
use tower::ServiceBuilder;
use utoipa::OpenApi;

use super::Agent;
use crate::{
    dapr,
    fastapi::errors::{method_not_allowed, not_found},
    http::{self, RequestBodyLayer},
    obs::{self, ObserveLayer},
};

/// All routes of `agent` with their layers; no I/O, so tests can drive it with `oneshot`.
pub fn router<A: Agent>(agent: &Arc<A>) -> Router {
    let core = agent.core();
    let app = dapr::require_app_token(agent.routes(), core.app_api_token());
    // Outermost first on each request: observe, body bounds, shedding, token, handler. A body declared too large is
    // refused before it takes an in-flight slot; a shed request is still logged with its id. One `layer` call for
    // the three: each call boxes every route once more, and every request clones and moves through each box.
    let app = app.layer(
        ServiceBuilder::new()
            .layer(ObserveLayer::new())
            .layer(RequestBodyLayer::new(core.limits.body))
            .layer(http::shed_layer(core.limits.max_in_flight)),
    );
    let ops = http::health::routes(core.health.clone())
        .merge(obs::metrics::routes())
        .merge(http::docs::routes(A::ApiDoc::openapi()))
        .layer(ObserveLayer::quiet());
    app.merge(ops)
        .fallback(not_found.layer(ObserveLayer::new()))
        .method_not_allowed_fallback(method_not_allowed.layer(ObserveLayer::new()))
}
