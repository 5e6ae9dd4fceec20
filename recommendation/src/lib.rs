//! The recommendation agent: `GET /recommend` fetches the data agent's answer (directly or through Dapr) and
//! answers `{"recommendation":"Based on data","data":<that answer>}`, as the original FastAPI agent does.
//!
//! `GET /recommend?user=<id>&limit=<n>` adds what the model MODEL names (`v1` popularity, `v2` co-occurrence; see
//! [`recsys::models`]) recommends to that user: `"model"` and `"items"`, computed from the user's insights, which
//! the data agent serves, and the user's stored preferences; predictions are cached in the state store and kept
//! fresh by data-updated events or, without a sidecar, by revalidating them with data (`If-None-Match`, 304)
//! ([`predictions`]). `recommendation eval` compares the models offline ([`eval`]).

pub mod breaker;
pub mod cache;
pub mod config;
pub mod data_client;
pub mod data_telemetry;
pub mod error;
pub mod eval;
pub mod events;
pub mod predict;
pub mod predictions;
pub mod retry;
pub mod state;
pub mod users;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    http::HeaderValue,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::{
    agent::{Agent, Core},
    dapr::Sidecar,
    fastapi::{QueryParams, ValidationErrorBody},
    obs::TraceHeaders,
};
use utoipa::{IntoParams, OpenApi, ToSchema};

use cache::DataCache;
pub use config::Config;
pub use data_client::{DataAnswer, DataClient, InsightsAnswer};
pub use error::{ApiError, DataClientError, DataError};
use events::{EventCounts, Events, Subscription};
use predictions::Predictions;
use recsys::{ModelName, Recommendation};
/// Every route of the agent with its layers, `router(&Arc::new(state))`; no I/O, so tests drive it with `oneshot`.
/// The same code for both agents: [`shared::agent::router`].
pub use shared::agent::router;
/// Serves the agent until shutdown, then drains: [`shared::agent::run`], the same for both agents.
pub use shared::agent::run;
use state::{Backend, Preferences, UserState};

/// Accepted values of `limit` (FastAPI: `Query(ge=1, le=100)`).
pub const LIMIT_RANGE: std::ops::RangeInclusive<i64> = 1..=100;

/// What `GET /recommend` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"recommendation": "Based on data", "data": {"processed_data": "some_insights"},
    "model": "v1", "items": [{"id": "books-007", "title": "Harbor Chronicles", "score": 1.0,
    "reason": "One of the most popular items"}], "user": "u1",
    "preferences": {"categories": [], "max_results": 10}, "recommendations_served": 1}))]
pub struct RecommendationBody {
    /// The recommendation.
    pub recommendation: String,
    /// The data agent's answer, passed through unchanged.
    pub data: Value,
    /// With `user`: the model that chose `items` (MODEL).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, pattern = "^v[12]$")]
    pub model: Option<ModelName>,
    /// With `user`: the recommended items, best first; `limit` of them when the catalog has that many the user has
    /// not interacted with, and none the user interacted with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<RecommendedItem>>,
    /// The user asked for (`?user=`), absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// That user's stored preferences (defaults when none are stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferences: Option<Preferences>,
    /// How many recommendations that user has been served, this one included.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recommendations_served: Option<u64>,
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RecommendedItem {
    /// Item id (as in the data agent's catalog).
    pub id: String,
    /// Item title.
    pub title: String,
    /// The model's score, higher is better; comparable within one answer only.
    pub score: f64,
    /// Why, in a few words.
    pub reason: String,
}

impl From<Recommendation> for RecommendedItem {
    fn from(r: Recommendation) -> Self {
        Self { id: r.id, title: r.title, score: r.score, reason: r.reason }
    }
}

/// Query parameters of `GET /recommend` (documentation; parsing is in the handler).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecommendParams {
    /// With `user`: how many items to recommend (default: the user's stored `max_results`, 10 unless set).
    /// Without `user` it is validated and has no effect: the answer is the seed answer.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A user id: the answer then adds `model` and `items`, recommended to that user by the model MODEL names,
    /// from the user's history and stored preferences (preferred categories come first in v1), and is recorded as
    /// the user's last one. `.` and `..` are refused (422): they cannot name a user in a URL path.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub user: Option<String>,
}

/// The state of one recommendation agent process, which [`shared::agent`] keeps in one `Arc` for every request.
#[derive(Debug)]
pub struct AppState {
    core: Core,
    data: DataClient,
    cache: DataCache,
    users: UserState,
    events: Events,
    model: ModelName,
    predictions: Predictions,
}

impl AppState {
    /// The same agent with predictions kept in `store`: tests give two replicas one store, as a Dapr state store
    /// is shared by every replica of the app id.
    pub fn with_prediction_store(mut self, store: Backend) -> Self {
        let predictions = Predictions::new(store, self.predictions.ttl(), self.users.retries())
            .revalidating(self.predictions.revalidates());
        self.predictions = predictions;
        self
    }

    /// The model this agent recommends with.
    pub fn model(&self) -> ModelName {
        self.model
    }

    /// How long the data answer is cached, and where user state lives (for the startup log).
    pub fn describe(&self) -> (Duration, &'static str) {
        (self.cache.ttl(), self.users.backend().kind())
    }

    /// The data client.
    pub fn data(&self) -> &DataClient {
        &self.data
    }
}

impl Agent for AppState {
    const NAME: &'static str = "recommendation";
    const ABOUT: &'static str = "The recommendation agent: GET /recommend builds a recommendation on the data agent's answer. \
        `recommendation eval --help`: compare the models offline.";
    type Config = Config;
    type Error = DataClientError;
    type ApiDoc = ApiDoc;

    /// Builds the state (including the pooled data client) from settings.
    fn new(config: &Config) -> Result<Self, DataClientError> {
        let core = Core::new(config);
        let sidecar = core.sidecar().cloned();
        let sidecar_headers = sidecar.as_ref().map(Sidecar::auth_headers).unwrap_or_default();
        let data = DataClient::new(config)?.with_sidecar_headers(sidecar_headers);
        let store = || match &sidecar {
            Some(sidecar) => Backend::Dapr { sidecar: sidecar.clone(), store: config.state.state_store.clone() },
            None => Backend::memory_with_capacity(
                std::num::NonZeroUsize::new(config.state.state_memory_max_entries)
                    .expect("STATE_MEMORY_MAX_ENTRIES was checked when parsed"),
            ),
        };
        // Without a sidecar, predictions get an in-process store of their own (see `predictions`).
        let (backend, prediction_store) = (store(), store());
        predict::describe_metrics();
        let dapr = &config.common.dapr;
        let events = Events {
            subscription: sidecar.as_ref().map(|_| Subscription {
                pubsubname: dapr.pubsub_name.clone(),
                topic: dapr.pubsub_topic.clone(),
                route: events::DELIVERY_ROUTE.to_owned(),
            }),
            counts: Arc::new(EventCounts::default()),
        };
        let (reachability, counts, state_kind) = (data.clone(), events.counts.clone(), backend.kind());
        let core = core.with_readiness_details(move || {
            serde_json::json!({ "data": reachability.reachability(), "state": state_kind, "events": counts.snapshot() })
        });
        Ok(Self {
            core,
            data,
            cache: DataCache::new(config.data_cache_ttl()),
            users: UserState::new(backend, config.state.state_ttl, config.state.state_write_retries),
            events,
            model: config.model.model,
            predictions: Predictions::new(
                prediction_store,
                config.prediction_cache_ttl(),
                config.state.state_write_retries,
            )
            .revalidating(config.prediction_revalidate()),
        })
    }

    fn core(&self) -> &Core {
        &self.core
    }

    fn routes(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/recommend", get(recommend))
            .route("/users/{user_id}/preferences", get(users::get_preferences).put(users::put_preferences))
            .route("/dapr/subscribe", get(events::subscribe))
            .route(events::DELIVERY_ROUTE, post(events::data_updated))
            .with_state(self.clone())
    }

    fn started(&self, addr: SocketAddr) {
        let (data_cache_ttl, state_backend) = self.describe();
        tracing::info!(
            %addr,
            version = env!("CARGO_PKG_VERSION"),
            data_mode = self.data.mode().as_str(),
            data_endpoint = %self.data.endpoint(),
            data_cache_ttl = ?data_cache_ttl,
            state_backend,
            model = %self.model,
            prediction_cache_ttl = ?self.predictions.ttl(),
            prediction_revalidate = self.predictions.revalidates(),
            "recommendation agent listening"
        );
    }
}

/// Header set to `true` on a 200 built on the last good data answer because data was unavailable.
pub const DATA_STALE: &str = "x-data-stale";
/// Header giving the age in whole seconds of the stale data answer a 200 was built on.
pub const DATA_AGE: &str = "x-data-age";

/// A recommendation built on the data agent's current answer; with `user`, the items the model recommends to them.
#[utoipa::path(get, path = "/recommend", tag = "recommendation", params(RecommendParams),
    responses(
        (status = 200, description = "The recommendation. When data is unavailable and STALE_CACHE_TTL allows it, \
            built on the last good data answer (and, with `user`, the last good insights of that user) and marked \
            by the stale headers", body = RecommendationBody,
            headers(
                ("x-data-stale" = String, description = "`true` when the data part is a cached, stale answer"),
                ("x-data-age" = u64, description = "Age in seconds of the stale data answer"),
            )),
        (status = 422, description = "A query parameter is invalid", body = ValidationErrorBody),
        (status = 502, description = "The data agent answered with an error status or a body that is not JSON",
            body = shared::fastapi::errors::ErrorBody),
        (status = 503, description = "The data agent is unreachable, its circuit breaker is open, this agent is \
            at capacity, or (with `user`) the state store is unavailable (see Retry-After)",
            body = shared::fastapi::errors::ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait before trying again"))),
        (status = 504, description = "The data agent did not answer within the data timeout or the request deadline",
            body = shared::fastapi::errors::ErrorBody),
    ))]
pub async fn recommend(
    State(state): State<Arc<AppState>>,
    query: QueryParams,
    trace: TraceHeaders,
) -> Result<Response, ApiError> {
    let limit = query.optional_int("limit", LIMIT_RANGE).map_err(|issue| *issue);
    let user = query.get("user").map(check_recommend_user).transpose();
    // Every invalid parameter is reported at once, in declaration order, as FastAPI does.
    let (limit, user) = match (limit, user) {
        (Ok(limit), Ok(user)) => (limit, user),
        (limit, user) => {
            let mut detail: Vec<_> = limit.err().into_iter().collect();
            detail.extend(user.err().into_iter().flat_map(|body| body.detail));
            return Err(ApiError::Validation(ValidationErrorBody { detail }));
        }
    };
    tracing::debug!(limit, user, "recommendation requested");
    let Some(user) = user else {
        let DataAnswer { data, stale_age } = state.cache.get(&state.data, &trace).await?;
        let body = RecommendationBody {
            recommendation: "Based on data".to_owned(),
            data,
            model: None,
            items: None,
            user: None,
            preferences: None,
            recommendations_served: None,
        };
        return Ok(with_stale_headers(Json(body), stale_age));
    };
    let preferences = state.users.preferences(&user).await?.map(|(p, _)| p).unwrap_or_default();
    let limit = limit.unwrap_or(preferences.max_results) as usize;
    // The seed answer and the prediction are independent: fetched concurrently.
    let (data, prediction) = tokio::join!(
        state.cache.get(&state.data, &trace),
        predict::predict(&state, &user, limit, &preferences.categories, &trace),
    );
    let (DataAnswer { data, stale_age }, prediction) = (data?, prediction?);
    let items: Vec<RecommendedItem> = prediction.items.into_iter().map(RecommendedItem::from).collect();
    let last = serde_json::json!({
        "recommendation": "Based on data",
        "data": data,
        "model": state.model,
        "items": items.iter().map(|item| item.id.as_str()).collect::<Vec<_>>(),
    });
    let served = state.users.record(&user, &last).await?;
    let body = RecommendationBody {
        recommendation: "Based on data".to_owned(),
        data,
        model: Some(state.model),
        items: Some(items),
        user: Some(user),
        preferences: Some(preferences),
        recommendations_served: Some(served),
    };
    Ok(with_stale_headers(Json(body), stale_age.max(prediction.stale_age)))
}

/// Checks `?user=`: a user id, and not `.` or `..`, which the pattern allows but which cannot be a segment of the
/// data agent's `/insights/users/{user}` path (URLs resolve them as dot segments).
fn check_recommend_user(raw: &str) -> Result<String, ValidationErrorBody> {
    let user = state::check_user_id(raw, "query", "user")?;
    if user == "." || user == ".." {
        return Err(ValidationErrorBody {
            detail: vec![shared::fastapi::ValidationIssue {
                kind: "value_error".to_owned(),
                loc: vec![serde_json::json!("query"), serde_json::json!("user")],
                msg: "Value error, a user id cannot be `.` or `..`".to_owned(),
                input: Value::String(user),
                ctx: Some(serde_json::json!({"error": {}})),
            }],
        });
    }
    Ok(user)
}

/// The answer, marked when it was built on a stale data answer `stale_age` old.
fn with_stale_headers(body: Json<RecommendationBody>, stale_age: Option<Duration>) -> Response {
    match stale_age {
        None => body.into_response(),
        Some(age) => {
            ([(DATA_STALE, HeaderValue::from_static("true")), (DATA_AGE, HeaderValue::from(age.as_secs()))], body)
                .into_response()
        }
    }
}

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "recommendation agent", description = "Builds recommendations on what the data agent returns."),
    paths(recommend, users::get_preferences, users::put_preferences, events::subscribe, events::data_updated,
        shared::http::health::healthz, shared::http::health::readyz, shared::obs::metrics::metrics_handler),
    components(schemas(RecommendationBody, RecommendedItem, Preferences, Subscription, events::DeliveryAnswer, events::DeliveryStatus,
        shared::fastapi::errors::ErrorBody, ValidationErrorBody)),
    tags((name = "recommendation", description = "Recommendations"), (name = "users", description = "User preferences"),
        (name = "events", description = "Dapr pub/sub subscription (called by the sidecar)"),
        (name = "health", description = "Probes"), (name = "observability", description = "Metrics")),
)]
pub struct ApiDoc;
