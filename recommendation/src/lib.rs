//! The recommendation agent: `GET /recommend` fetches the data agent's answer (directly or through Dapr) and
//! answers `{"recommendation":"Based on data","data":<that answer>}`, as the original FastAPI agent does.

pub mod breaker;
pub mod cache;
pub mod config;
pub mod data_client;
pub mod data_telemetry;
pub mod error;
pub mod events;
pub mod retry;
pub mod state;

use std::{future::Future, io, sync::Arc, time::Duration};

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
    dapr::Sidecar,
    health::Health,
    limits::Limits,
    propagation::TraceHeaders,
    server::{DrainOutcome, ServeOptions},
    validation::{QueryParams, ValidationErrorBody},
};
use tokio::net::TcpListener;
use utoipa::{IntoParams, OpenApi, ToSchema};

use cache::DataCache;
pub use config::{Cli, Config};
pub use data_client::{DataAnswer, DataClient};
pub use error::Error;
use events::{EventCounts, Events, Subscription};
use state::{Backend, Preferences, StateError, UserState};

/// Bound on one call to the Dapr sidecar's state, publish or secrets API.
const SIDECAR_TIMEOUT: Duration = Duration::from_secs(2);

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

/// Query parameters of `GET /recommend` (documentation; parsing is in the handler).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RecommendParams {
    /// Upper bound on how many items of the data agent's answer the recommendation may use. The data agent answers
    /// a single record today, so every valid value gives the same answer.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A user id: the recommendation then uses that user's stored preferences and is recorded as their last one.
    #[param(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub user: Option<String>,
}

/// Shared state of one recommendation agent process.
#[derive(Debug, Clone)]
pub struct AppState {
    health: Health,
    data: DataClient,
    serve_options: ServeOptions,
    limits: Limits,
    cache: DataCache,
    users: UserState,
    events: Events,
    sidecar: Option<Sidecar>,
    app_api_token: Option<String>,
}

impl AppState {
    /// Builds the state (including the pooled data client) from settings.
    pub fn new(config: &Config) -> Result<Self, reqwest::Error> {
        let sidecar = config.sidecar_port().map(|port| {
            Sidecar::new(port, config.dapr.dapr_api_token(), SIDECAR_TIMEOUT)
                .expect("the sidecar client builds: DAPR_API_TOKEN was checked when parsed")
        });
        let sidecar_headers = sidecar.as_ref().map(Sidecar::auth_headers).unwrap_or_default();
        let data = DataClient::new(&config.data)?.with_sidecar_headers(sidecar_headers);
        let backend = match &sidecar {
            Some(sidecar) => Backend::Dapr { sidecar: sidecar.clone(), store: config.state.state_store.clone() },
            None => Backend::memory_with_capacity(
                std::num::NonZeroUsize::new(config.state.state_memory_max_entries)
                    .expect("STATE_MEMORY_MAX_ENTRIES was checked when parsed"),
            ),
        };
        let events = Events {
            subscription: sidecar.as_ref().map(|_| Subscription {
                pubsubname: config.state.pubsub_name.clone(),
                topic: config.state.pubsub_topic.clone(),
                route: events::DELIVERY_ROUTE.to_owned(),
            }),
            counts: Arc::new(EventCounts::default()),
        };
        let (reachability, counts, state_kind) = (data.clone(), events.counts.clone(), backend.kind());
        let health = Health::new().with_details(move || {
            serde_json::json!({ "data": reachability.reachability(), "state": state_kind, "events": counts.snapshot() })
        });
        Ok(Self {
            health,
            data,
            serve_options: ServeOptions::from(&config.server),
            limits: Limits::from(&config.server),
            cache: DataCache::new(config.data_cache_ttl()),
            users: UserState::new(backend, config.state.state_ttl, config.state.state_write_retries),
            events,
            sidecar,
            app_api_token: config.dapr.app_api_token().map(str::to_owned),
        })
    }

    /// The Dapr sidecar, when the agent has one.
    pub fn sidecar(&self) -> Option<&Sidecar> {
        self.sidecar.as_ref()
    }

    /// Sets the token calls must carry (read from the secret store at startup).
    pub fn set_app_api_token(&mut self, token: Option<String>) {
        self.app_api_token = token;
    }

    /// How long the data answer is cached, and where user state lives (for the startup log).
    pub fn describe(&self) -> (Duration, &'static str) {
        (self.cache.ttl(), self.users.backend().kind())
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

/// Failure of `/recommend`: the data call, or the user's state.
#[derive(Debug)]
pub enum RecommendFailure {
    /// The data call or the query parameters.
    Data(Error),
    /// The user's state.
    State(StateError),
}

impl From<Error> for RecommendFailure {
    fn from(err: Error) -> Self {
        Self::Data(err)
    }
}

impl From<StateError> for RecommendFailure {
    fn from(err: StateError) -> Self {
        Self::State(err)
    }
}

impl IntoResponse for RecommendFailure {
    fn into_response(self) -> Response {
        match self {
            Self::Data(err) => err.into_response(),
            Self::State(err) => err.into_response(),
        }
    }
}

/// Header set to `true` on a 200 built on the last good data answer because data was unavailable.
pub const DATA_STALE: &str = "x-data-stale";
/// Header giving the age in whole seconds of the stale data answer a 200 was built on.
pub const DATA_AGE: &str = "x-data-age";

/// A recommendation built on the data agent's current answer.
#[utoipa::path(get, path = "/recommend", tag = "recommendation", params(RecommendParams),
    responses(
        (status = 200, description = "The recommendation. When data is unavailable and STALE_CACHE_TTL allows it, \
            built on the last good data answer and marked by the stale headers", body = RecommendationBody,
            headers(
                ("x-data-stale" = String, description = "`true` when the data part is a cached, stale answer"),
                ("x-data-age" = u64, description = "Age in seconds of the stale data answer"),
            )),
        (status = 422, description = "A query parameter is invalid", body = ValidationErrorBody),
        (status = 502, description = "The data agent answered with an error status or a body that is not JSON",
            body = shared::errors::ErrorBody),
        (status = 503, description = "The data agent is unreachable, its circuit breaker is open, this agent is \
            at capacity, or (with `user`) the state store is unavailable (see Retry-After)",
            body = shared::errors::ErrorBody,
            headers(("retry-after" = u64, description = "Seconds to wait before trying again"))),
        (status = 504, description = "The data agent did not answer within the data timeout or the request deadline",
            body = shared::errors::ErrorBody),
    ))]
pub async fn recommend(
    State(state): State<AppState>,
    query: QueryParams,
    trace: TraceHeaders,
) -> Result<Response, RecommendFailure> {
    let limit = query.optional_int("limit", LIMIT_RANGE).map_err(|issue| *issue);
    let user = query.get("user").map(|raw| state::check_user_id(raw, "query", "user")).transpose();
    // Every invalid parameter is reported at once, in declaration order, as FastAPI does.
    let (limit, user) = match (limit, user) {
        (Ok(limit), Ok(user)) => (limit, user),
        (limit, user) => {
            let mut detail: Vec<_> = limit.err().into_iter().collect();
            detail.extend(user.err().into_iter().flat_map(|body| body.detail));
            return Err(Error::Validation(ValidationErrorBody { detail }).into());
        }
    };
    tracing::debug!(limit, user, "recommendation requested");
    let DataAnswer { data, stale_age } = state.cache.get(&state.data, &trace).await?;
    let mut body = RecommendationBody {
        recommendation: "Based on data".to_owned(),
        data,
        user: None,
        preferences: None,
        recommendations_served: None,
    };
    if let Some(user) = user {
        let preferences = state.users.preferences(&user).await?.map(|(p, _)| p).unwrap_or_default();
        let last = serde_json::json!({"recommendation": body.recommendation, "data": body.data});
        body.recommendations_served = Some(state.users.record(&user, &last).await?);
        body.preferences = Some(preferences);
        body.user = Some(user);
    }
    let body = Json(body);
    Ok(match stale_age {
        None => body.into_response(),
        Some(age) => {
            ([(DATA_STALE, HeaderValue::from_static("true")), (DATA_AGE, HeaderValue::from(age.as_secs()))], body)
                .into_response()
        }
    })
}

/// The OpenAPI description of every route.
#[derive(OpenApi)]
#[openapi(
    info(title = "recommendation agent", description = "Builds recommendations on what the data agent returns."),
    paths(recommend, state::get_preferences, state::put_preferences, events::subscribe, events::data_updated,
        shared::health::healthz, shared::health::readyz, shared::metrics::metrics_handler),
    components(schemas(RecommendationBody, Preferences, Subscription, events::DeliveryAnswer, events::DeliveryStatus,
        shared::errors::ErrorBody, ValidationErrorBody)),
    tags((name = "recommendation", description = "Recommendations"), (name = "users", description = "User preferences"),
        (name = "events", description = "Dapr pub/sub subscription (called by the sidecar)"),
        (name = "health", description = "Probes"), (name = "observability", description = "Metrics")),
)]
pub struct ApiDoc;

/// All routes with the shared layers; no I/O, so tests can drive it with `oneshot`.
pub fn router(state: AppState) -> Router {
    let own_routes = Router::new()
        .route("/recommend", get(recommend))
        .route("/users/{user_id}/preferences", get(state::get_preferences).put(state::put_preferences))
        .route("/dapr/subscribe", get(events::subscribe))
        .route(events::DELIVERY_ROUTE, post(events::data_updated))
        .with_state(state.clone());
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
