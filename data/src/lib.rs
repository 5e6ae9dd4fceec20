//! The data agent: `GET /data` answers `{"processed_data":"some_insights"}`, byte for byte what the original
//! FastAPI agent answers, plus health probes and API docs.

pub mod config;
pub mod faults;
pub mod publish;
pub mod store;

use std::{future::Future, io, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use shared::{
    body::{Fields, JsonBody},
    dapr::Sidecar,
    health::Health,
    limits::Limits,
    propagation::TraceHeaders,
    request_body::BodyRejection,
    server::{DrainOutcome, ServeOptions},
    validation::ValidationErrorBody,
};
use tokio::net::TcpListener;
use utoipa::{OpenApi, ToSchema};

pub use config::{Cli, Config};
pub use faults::Faults;
use publish::{EventOutcome, Publisher};
use store::{DataStore, Snapshot};

/// Bound on one call to the Dapr sidecar (publish, secrets).
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest `processed_data` accepted by `PUT /data`, in characters.
pub const MAX_DATA_CHARS: usize = 1000;

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
    limits: Limits,
    faults: Arc<Faults>,
    store: DataStore,
    publisher: Option<Publisher>,
    app_api_token: Option<String>,
}

impl AppState {
    /// Builds the state from settings.
    pub fn new(config: &Config) -> Self {
        let publisher = match config.events.dapr_http_port {
            Some(port) => {
                let sidecar = Sidecar::new(port, config.dapr.dapr_api_token(), SIDECAR_TIMEOUT)
                    .expect("the sidecar client builds: DAPR_API_TOKEN was checked when parsed");
                Some(Publisher::new(sidecar, config.events.pubsub_name.clone(), config.events.pubsub_topic.clone()))
            }
            None => None,
        };
        Self {
            health: Health::new(),
            serve_options: ServeOptions::from(&config.server),
            limits: Limits::from(&config.server),
            faults: Arc::new(Faults::new(config.faults.clone())),
            store: DataStore::default(),
            publisher,
            app_api_token: config.dapr.app_api_token().map(str::to_owned),
        }
    }

    /// The fault injection in effect, with its count of `GET /data` requests.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }

    /// The Dapr sidecar, when one is configured.
    pub fn sidecar(&self) -> Option<&Sidecar> {
        self.publisher.as_ref().map(Publisher::sidecar)
    }

    /// Sets the token calls must carry (read from the secret store at startup).
    pub fn set_app_api_token(&mut self, token: Option<String>) {
        self.app_api_token = token;
    }

    /// Readiness of this process (tests use it to observe draining).
    pub fn health(&self) -> &Health {
        &self.health
    }
}

/// The processed insights.
#[utoipa::path(get, path = "/data", tag = "data",
    responses((status = 200, description = "The processed insights", body = DataBody)))]
pub async fn get_data(State(state): State<AppState>) -> Response {
    if let Some(faulty) = state.faults.intercept().await {
        return faulty;
    }
    Json(DataBody { processed_data: state.store.current().processed_data }).into_response()
}

/// The new data for `PUT /data`; other fields are refused (422 `extra_forbidden`, as a pydantic model with
/// `extra="forbid"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"processed_data": "fresh_insights"}))]
pub struct DataUpdate {
    /// The new insights, 1 to 1000 characters.
    #[schema(min_length = 1, max_length = 1000)]
    pub processed_data: String,
}

impl DataUpdate {
    /// Validates a decoded body with FastAPI's 422 shapes.
    pub fn from_body(body: &serde_json::Value) -> Result<Self, ValidationErrorBody> {
        let mut fields = Fields::of(body)?;
        let processed_data = fields.string("processed_data", true, 1, MAX_DATA_CHARS);
        fields.finish()?;
        Ok(Self { processed_data: processed_data.expect("required field checked") })
    }
}

/// What `PUT /data` answers: the stored snapshot and what became of the change event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateBody {
    /// The data now served, and its version.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// Whether subscribers were told.
    pub event: EventOutcome,
}

/// Replaces the data and publishes a `data-updated` event through Dapr (when a sidecar is configured).
#[utoipa::path(put, path = "/data", tag = "data", request_body = DataUpdate,
    responses(
        (status = 200, description = "The data was replaced; `event` tells whether subscribers were told",
            body = UpdateBody),
        (status = 401, description = "APP_API_TOKEN is set and the call has no dapr-api-token",
            body = shared::errors::ErrorBody),
        (status = 403, description = "The dapr-api-token is wrong", body = shared::errors::ErrorBody),
        (status = 422, description = "The body is missing, not JSON, or invalid", body = ValidationErrorBody),
        shared::request_body::BodyReadErrors,
    ))]
pub async fn put_data(
    State(state): State<AppState>,
    trace: TraceHeaders,
    body: Result<JsonBody, BodyRejection>,
) -> Result<Json<UpdateBody>, BodyRejection> {
    let update = DataUpdate::from_body(&body?.0)?;
    let snapshot = state.store.replace(update.processed_data);
    tracing::info!(version = snapshot.version, "data replaced");
    let event = match &state.publisher {
        Some(publisher) => publisher.publish(&snapshot, &trace).await,
        None => EventOutcome::Disabled,
    };
    Ok(Json(UpdateBody { snapshot, event }))
}

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "data agent", description = "Serves processed insights to the recommendation agent."),
    paths(get_data, put_data, shared::health::healthz, shared::health::readyz, shared::metrics::metrics_handler),
    components(schemas(DataBody, DataUpdate, UpdateBody, Snapshot, EventOutcome, shared::errors::ErrorBody,
        ValidationErrorBody)),
    tags((name = "data", description = "Insights"), (name = "health", description = "Probes"),
        (name = "observability", description = "Metrics")),
)]
pub struct ApiDoc;

/// All routes with the shared layers; no I/O, so tests can drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    let own_routes = Router::new().route("/data", get(get_data).put(put_data)).with_state(state.clone());
    shared::middleware::agent_router(
        own_routes,
        &state.health,
        ApiDoc::openapi(),
        state.app_api_token.as_deref(),
        state.limits,
    )
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
