//! The data agent: `GET /data` answers `{"processed_data":"some_insights"}`, byte for byte what the original
//! FastAPI agent answers, plus health probes and API docs.

pub mod config;

use std::{future::Future, io};

use axum::{Json, Router, routing::get};
use serde::{Deserialize, Serialize};
use shared::{
    health::Health,
    server::{DrainOutcome, ServeOptions},
};
use tokio::net::TcpListener;
use utoipa::{OpenApi, ToSchema};

pub use config::{Cli, Config};

/// What `GET /data` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"processed_data": "some_insights"}))]
pub struct DataBody {
    /// The insights the recommendation agent builds on.
    pub processed_data: String,
}

/// Shared state of one data agent process.
#[derive(Debug, Clone)]
pub struct AppState {
    health: Health,
    serve_options: ServeOptions,
}

impl AppState {
    /// Builds the state from settings.
    pub fn new(config: &Config) -> Self {
        Self { health: Health::new(), serve_options: ServeOptions::from(&config.server) }
    }

    /// Readiness of this process (tests use it to observe draining).
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// The processed insights.
#[utoipa::path(get, path = "/data", tag = "data",
    responses((status = 200, description = "The processed insights", body = DataBody)))]
pub async fn get_data() -> Json<DataBody> {
    Json(DataBody { processed_data: "some_insights".to_owned() })
}

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "data agent", description = "Serves processed insights to the recommendation agent."),
    paths(get_data, shared::health::healthz, shared::health::readyz, shared::metrics::metrics_handler),
    components(schemas(DataBody, shared::errors::ErrorBody)),
    tags((name = "data", description = "Insights"), (name = "health", description = "Probes"),
        (name = "observability", description = "Metrics")),
)]
pub struct ApiDoc;

/// All routes with the shared layers; no I/O, so tests can drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    let app = Router::new()
        .route("/data", get(get_data))
        .merge(shared::health::routes(state.health.clone()))
        .merge(shared::docs::routes(ApiDoc::openapi()));
    shared::middleware::apply(app)
}

/// Serves until `shutdown` completes, then drains (see [`shared::server`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainOutcome> {
    let health = state.health.clone();
    let options = state.serve_options;
    shared::server::serve(listener, router(state), options, health, shutdown).await
}
