//! Liveness and readiness probes.
//!
//! `/healthz` answers 200 for as long as the process serves HTTP: restarting would not fix anything it could
//! detect. `/readyz` answers 503 once a graceful shutdown has begun, so load balancers stop routing here while
//! in-flight requests finish. A service may add details (e.g. the reachability of a dependency) to the readiness
//! body without making readiness depend on them: a down dependency must not cascade into restarts here.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

type Details = dyn Fn() -> Value + Send + Sync;

/// Shared readiness state of one process.
#[derive(Clone)]
pub struct Health {
    draining: Arc<AtomicBool>,
    details: Option<Arc<Details>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("draining", &self.is_draining()).finish_non_exhaustive()
    }
}

impl Health {
    /// A ready process with no extra readiness details.
    pub fn new() -> Self {
        Self { draining: Arc::new(AtomicBool::new(false)), details: None }
    }

    /// Adds informational details to the readiness body; they never change its status.
    pub fn with_details(mut self, details: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        self.details = Some(Arc::new(details));
        self
    }

    /// Marks the process as shutting down: readiness answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether a graceful shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// Liveness answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct LiveBody {
    /// Always `ok`.
    pub status: String,
}

/// Readiness answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "ready"}))]
pub struct ReadyBody {
    /// `ready`, or `draining` during a graceful shutdown.
    pub status: String,
    /// Informational state of dependencies; does not affect the status code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Value>,
}

/// Liveness probe: 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is serving", body = LiveBody)))]
pub async fn healthz() -> Json<LiveBody> {
    Json(LiveBody { status: "ok".to_owned() })
}

/// Readiness probe: 200 when ready to take traffic, 503 while draining for shutdown.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready to take traffic", body = ReadyBody),
        (status = 503, description = "Shutting down; stop routing here", body = ReadyBody),
    ))]
pub async fn readyz(State(health): State<Health>) -> (StatusCode, Json<ReadyBody>) {
    let checks = health.details.as_ref().map(|details| details());
    if health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(ReadyBody { status: "draining".to_owned(), checks }))
    } else {
        (StatusCode::OK, Json(ReadyBody { status: "ready".to_owned(), checks }))
    }
}

/// `/healthz` and `/readyz`, ready to merge into a service router.
pub fn routes<S>(health: Health) -> Router<S> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(health)
}
