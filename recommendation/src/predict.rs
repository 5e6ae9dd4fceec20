//! One user's recommendation: the cached prediction when it is current ([`crate::predictions`]), else the user's
//! insights from the data agent ([`crate::DataClient::user_insights`]) turned into items by the model MODEL names;
//! and the metrics that compare the models.
//!
//! Metrics, all labelled by `model` (`v1` | `v2`), so a dashboard can set the canary beside the stable version:
//! - `recommendations_total{model, outcome}`: personal recommendations answered (`ok`) or failed (the data call's
//!   outcome, such as `unreachable` or `timeout`, or `state`);
//! - `recommendation_duration_seconds{model, outcome}`: the time to produce them (cache, data call and model);
//! - `prediction_cache_lookups_total{model, result}`: `hit` or `miss` (nothing is counted while the cache is off).

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_histogram};
use recsys::{ModelName, Recommendation};
use shared::obs::TraceHeaders;
use tokio::time::Instant;

use crate::{ApiError, AppState, predictions::PredictionKey};

/// Personal recommendations answered, by `model` and `outcome`.
pub const RECOMMENDATIONS: &str = "recommendations_total";
/// Time to produce a personal recommendation, by `model` and `outcome`.
pub const RECOMMENDATION_DURATION: &str = "recommendation_duration_seconds";
/// Prediction cache lookups, by `model` and `result` (`hit` | `miss`).
pub const PREDICTION_CACHE_LOOKUPS: &str = "prediction_cache_lookups_total";

/// What the model recommends to one user.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The items, best first.
    pub items: Vec<Recommendation>,
    /// `Some(age)` when data was unavailable and the items were computed from its last good answer for this user.
    pub stale_age: Option<Duration>,
}

/// The items `model` recommends to `user`: exactly `limit` when the catalog has that many the user has not seen.
pub async fn predict(
    state: &AppState,
    user: &str,
    limit: usize,
    categories: &[String],
    trace: &TraceHeaders,
) -> Result<Prediction, ApiError> {
    let model = state.model;
    let started = Instant::now();
    let result = cached_or_computed(state, model, user, limit, categories, trace).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::Data(err)) => err.outcome(),
        Err(ApiError::State(_)) => "state",
        Err(ApiError::Validation(_)) => "invalid",
    };
    let labels = [("model", model.as_str()), ("outcome", outcome)];
    metrics::counter!(RECOMMENDATIONS, &labels).increment(1);
    metrics::histogram!(RECOMMENDATION_DURATION, &labels).record(started.elapsed());
    result
}

async fn cached_or_computed(
    state: &AppState,
    model: ModelName,
    user: &str,
    limit: usize,
    categories: &[String],
    trace: &TraceHeaders,
) -> Result<Prediction, ApiError> {
    let key = PredictionKey { model, user, limit, categories };
    let lookup = state.predictions.lookup(&key).await?;
    if let Some(lookup) = &lookup {
        let result = if lookup.hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(PREDICTION_CACHE_LOOKUPS, "model" => model.as_str(), "result" => result).increment(1);
    }
    if let Some((items, version)) = lookup.as_ref().and_then(|l| l.hit.clone()) {
        tracing::debug!(user, %model, version, "prediction served from the cache");
        return Ok(Prediction { items, stale_age: None });
    }
    let recommender = model.model();
    let (insights, stale_age) =
        state.data.user_insights(user, limit, categories, recommender.neighbours(), trace).await?;
    let preferences = recsys::Preferences { categories: categories.to_vec() };
    let items = recommender.recommend(&insights, &preferences, limit);
    // A prediction from a stale answer is served once, marked, and never cached.
    if let Some(lookup) = lookup.filter(|_| stale_age.is_none()) {
        state.predictions.store_items(lookup, insights.version, categories, &items).await;
    }
    Ok(Prediction { items, stale_age })
}

/// Describes the metrics above (once, at startup).
pub fn describe_metrics() {
    describe_counter!(
        RECOMMENDATIONS,
        Unit::Count,
        "Personal recommendations (/recommend?user=), by model (v1|v2) and outcome (ok, or why it failed)."
    );
    describe_histogram!(
        RECOMMENDATION_DURATION,
        Unit::Seconds,
        "Time to produce a personal recommendation (prediction cache, data call, model), by model and outcome."
    );
    describe_counter!(
        PREDICTION_CACHE_LOOKUPS,
        Unit::Count,
        "Prediction cache lookups, by model and result (hit|miss)."
    );
}
