//! The recommendation agent: `GET /recommend` fetches the data agent's answer (directly or through Dapr) and
//! answers `{"recommendation":"Based on data","data":<that answer>}`, as the original FastAPI agent does.

pub mod config;
pub mod data_client;
pub mod data_telemetry;
pub mod error;

use std::{future::Future, io};

use axum::{Json, Router, extract::State, routing::get};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{
    health::Health,
    propagation::TraceHeaders,
    server::{DrainOutcome, ServeOptions},
    validation::{QueryParams, ValidationErrorBody},
};
use tokio::net::TcpListener;
use utoipa::{IntoParams, OpenApi, ToSchema};

pub use config::{Cli, Config};
pub use data_client::DataClient;
pub use error::Error;

/// Accepted values of `limit` (FastAPI: `Query(ge=1, le=100)`).
pub const LIMIT_RANGE: std::ops::RangeInclusive<i64> = 1..=100;

/// What `GET /recommend` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"recommendation": "Based on data", "data": {"processed_data": "some_insights"}}))]
pub struct RecommendationBody {
    /// The recommendation.
    pub recommendation: String,
    /// The data agent's answer, passed through unchanged.
    pub data: Value,
}

/// Query parameters of `GET /recommend` (documentation; parsing is in the handler).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecommendParams {
    /// Upper bound on how many items of the data agent's answer the recommendation may use. The data agent answers
    /// a single record today, so every valid value gives the same answer.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

/// Shared state of one recommendation agent process.
#[derive(Debug, Clone)]
pub struct AppState {
    health: Health,
    data: DataClient,
    serve_options: ServeOptions,
}

impl AppState {
    /// Builds the state (including the pooled data client) from settings.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let data = DataClient::new(&config.data)?;
        let reachability = data.clone();
        let health = Health::new().with_details(move || serde_json::json!({ "data": reachability.reachability() }));
        Ok(Self { health, data, serve_options: ServeOptions::from(&config.server) })
    }

    /// Readiness of this process (tests use it to observe draining).
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The data client.
    pub fn data(&self) -> &DataClient {
        &self.data
    }
}

/// A recommendation built on the data agent's current answer.
#[utoipa::path(get, path = "/recommend", tag = "recommendation", params(RecommendParams),
    responses(
        (status = 200, description = "The recommendation", body = RecommendationBody),
        (status = 422, description = "A query parameter is invalid", body = ValidationErrorBody),
        (status = 502, description = "The data agent answered with an error status or a body that is not JSON",
            body = shared::errors::ErrorBody),
        (status = 503, description = "The data agent is unreachable (see Retry-After)", body = shared::errors::ErrorBody),
        (status = 504, description = "The data agent did not answer within the data timeout",
            body = shared::errors::ErrorBody),
    ))]
pub async fn recommend(
    State(state): State<AppState>,
    query: QueryParams,
    trace: TraceHeaders,
) -> Result<Json<RecommendationBody>, Error> {
    let limit = query
        .optional_int("limit", LIMIT_RANGE)
        .map_err(|issue| Error::Validation(ValidationErrorBody { detail: vec![*issue] }))?;
    tracing::debug!(limit, "recommendation requested");
    let data = state.data.fetch(&trace).await?;
    Ok(Json(RecommendationBody { recommendation: "Based on data".to_owned(), data }))
}

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "recommendation agent", description = "Builds recommendations on what the data agent returns."),
    paths(recommend, shared::health::healthz, shared::health::readyz, shared::metrics::metrics_handler),
    components(schemas(RecommendationBody, shared::errors::ErrorBody, ValidationErrorBody)),
    tags((name = "recommendation", description = "Recommendations"), (name = "health", description = "Probes"),
        (name = "observability", description = "Metrics")),
)]
pub struct ApiDoc;

/// All routes with the shared layers; no I/O, so tests can drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    let app = Router::new()
        .route("/recommend", get(recommend))
        .with_state(state.clone())
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
