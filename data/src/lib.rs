//! The data agent: `GET /data` answers `{"processed_data":"some_insights"}`, byte for byte what the original
//! FastAPI agent answers; it also holds a catalog and interactions (the default data set or `DATA_FILE`),
//! processes them into insights for the recommendation agent (`GET /insights/users/{user}`, the contract between
//! the two; `GET /insights`), serves the catalog (`GET /items`), takes new interactions (`POST /interactions`,
//! announced with a debounced `data-updated` event), plus health probes and API docs.
//!
//! The insights are built once, before the listener is bound: until they are, nothing answers (not even
//! `/readyz`), so no probe or caller can see the agent ready without them.

pub mod config;
pub mod debounce;
pub mod faults;
pub mod insights;
pub mod interactions;
pub mod items;
pub mod publish;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use shared::{
    agent::{Agent, Core},
    fastapi::{BodyRejection, Fields, JsonBody, ValidationErrorBody},
    obs::TraceHeaders,
};
use utoipa::{OpenApi, ToSchema};

pub use config::Config;
use debounce::{Debouncer, Timing};
pub use faults::Faults;
use insights::InsightsStore;
use publish::{DataUpdated, EventOutcome, Publisher};
use recsys::LoadError;
/// Every route of the agent with its layers, `router(&Arc::new(state))`; no I/O, so tests drive it with `oneshot`.
/// The same code for both agents: [`shared::agent::router`].
pub use shared::agent::router;
/// Serves the agent until shutdown, then drains: [`shared::agent::run`], the same for both agents.
pub use shared::agent::run;
use store::{DataStore, Snapshot};

/// Longest `processed_data` accepted by `PUT /data`, in characters.
pub const MAX_DATA_CHARS: usize = 1000;

/// What `GET /data` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"processed_data": "some_insights"}))]
pub struct DataBody {
    /// The insights the recommendation agent builds on.
    pub processed_data: String,
}

/// The state of one data agent process, which [`shared::agent`] keeps in one `Arc` for every request.
#[derive(Debug)]
pub struct AppState {
    core: Core,
    faults: Arc<Faults>,
    store: DataStore,
    publisher: Option<Publisher>,
    insights: InsightsStore,
    /// Announces batches of interactions, debounced; `None` without a sidecar.
    events: Option<Debouncer<(u64, TraceHeaders)>>,
}

impl AppState {
    /// The insights served.
    pub fn insights(&self) -> &InsightsStore {
        &self.insights
    }

    /// The fault injection in effect, with its count of `GET /data` requests.
    pub fn faults(&self) -> &Arc<Faults> {
        &self.faults
    }
}

impl Agent for AppState {
    const NAME: &'static str = "data";
    const ABOUT: &'static str =
        "The data agent: serves processed insights at GET /data and the recommender's insights at GET /insights.";
    type Config = Config;
    type Error = LoadError;
    type ApiDoc = ApiDoc;

    /// Builds the state from settings: loads `DATA_FILE` (or the default data set) and processes it. With a
    /// sidecar configured, starts the task announcing batches, so it must then run within a Tokio runtime.
    fn new(config: &Config) -> Result<Self, LoadError> {
        let insights = InsightsStore::load(config.data_file.as_deref())?;
        let dapr = &config.common.dapr;
        let core = Core::new(config);
        let publisher = core
            .sidecar()
            .map(|sidecar| Publisher::new(sidecar.clone(), dapr.pubsub_name.clone(), dapr.pubsub_topic.clone()));
        let store = DataStore::default();
        let timing = Timing { quiet: config.event_debounce, max_delay: config.event_max_delay };
        let events = publisher.clone().map(|publisher| {
            let store = store.clone();
            Debouncer::spawn(timing, move |(version, trace): (u64, TraceHeaders)| {
                let (publisher, snapshot) = (publisher.clone(), store.current());
                async move {
                    publisher.publish_insights(snapshot, version, &trace).await;
                }
            })
        });
        let faults = Arc::new(Faults::new(config.faults.clone()));
        Ok(Self { core, faults, store, publisher, insights, events })
    }

    fn core(&self) -> &Core {
        &self.core
    }

    fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/data", get(get_data).put(put_data))
            .route("/items", get(items::list_items))
            .route("/items/{id}", get(items::get_item))
            .route("/interactions", post(interactions::post_interactions))
            .route("/insights", get(insights::summary))
            .route("/insights/users/{user}", get(insights::user_insights))
            .with_state(self.clone())
    }

    fn started(&self, addr: SocketAddr) {
        tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "data agent listening");
        self.faults.warn_if_active();
    }
}

/// The processed insights.
#[utoipa::path(get, path = "/data", tag = "data",
    responses((status = 200, description = "The processed insights", body = DataBody)))]
pub async fn get_data(State(state): State<Arc<AppState>>) -> Response {
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
        (status = 422, description = "The body is missing, not JSON, or invalid", body = ValidationErrorBody),
        shared::dapr::AppTokenErrors,
        shared::fastapi::BodyReadErrors,
    ))]
pub async fn put_data(
    State(state): State<Arc<AppState>>,
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
    info(title = "data agent", description = "Serves processed insights to the recommendation agent: the catalog, \
        the insights the models need per user, and new interactions that update them."),
    paths(get_data, put_data, items::list_items, items::get_item, insights::user_insights, insights::summary,
        interactions::post_interactions, shared::http::health::healthz, shared::http::health::readyz,
        shared::obs::metrics::metrics_handler),
    components(schemas(DataBody, DataUpdate, UpdateBody, Snapshot, EventOutcome, DataUpdated,
        shared::fastapi::errors::ErrorBody, ValidationErrorBody, items::ItemsPage, recsys::Item,
        interactions::InteractionBatch, interactions::BatchApplied, interactions::EventSchedule,
        recsys::wire::NewInteraction, recsys::wire::UserInsights, recsys::wire::InsightsSummary)),
    tags((name = "data", description = "The original insights"),
        (name = "catalog", description = "The items recommended"),
        (name = "insights", description = "What the recommender learns from interactions, and new interactions"),
        (name = "health", description = "Probes"), (name = "observability", description = "Metrics")),
)]
pub struct ApiDoc;
