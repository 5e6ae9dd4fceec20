//! One user's recommendation: the cached prediction when it is current ([`crate::predictions`]; with
//! revalidation, when data answers 304 to the insights request made conditional on the prediction's tag), else the
//! user's insights from the data agent ([`crate::DataClient::user_insights`]) turned into items by the model MODEL
//! names; and the metrics that compare the models.
//!
//! Metrics, all labelled by `model` (`v1` | `v2`), so a dashboard can set the canary beside the stable version:
//! - `recommendations_total{model, outcome}`: personal recommendations answered (`ok`) or failed (the data call's
//!   outcome, such as `unreachable` or `timeout`, or `state`);
//! - `recommendation_duration_seconds{model, outcome}`: the time to produce them (cache, data call and model);
//! - `prediction_cache_lookups_total{model, result}`: `hit` (a cached prediction was served, after a 304 when
//!   revalidating) or `miss` (it was computed: none was stored, or data's insights changed, or the call failed);
//!   nothing is counted while the cache is off.

use std::time::Duration;

use metrics::{Unit, describe_counter, describe_histogram};
use recsys::{ModelName, Recommendation};
use shared::obs::TraceHeaders;
use tokio::time::Instant;

use crate::{
    ApiError, AppState, DataError, InsightsAnswer,
    predictions::{Hit, PredictionKey},
};

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
    let mut lookup = state.predictions.lookup(&key).await?;
    let cache_on = lookup.is_some();
    let count = |result: &'static str| {
        if cache_on {
            metrics::counter!(PREDICTION_CACHE_LOOKUPS, "model" => model.as_str(), "result" => result).increment(1);
        }
    };
    // Revalidating, a current prediction is served only once data confirms its insights (304); one without a tag
    // cannot be confirmed, so it is computed again, as when nothing is cached.
    let condition = match lookup.as_mut().and_then(|lookup| lookup.hit.take()) {
        Some(Hit { items, version, .. }) if !state.predictions.revalidates() => {
            count("hit");
            tracing::debug!(user, %model, version, "prediction served from the cache");
            return Ok(Prediction { items, stale_age: None });
        }
        Some(Hit { items, insights_etag, .. }) => insights_etag.map(|etag| (etag, items)),
        None => None,
    };
    let recommender = model.model();
    let if_none_match = condition.as_ref().map(|(etag, _)| etag.as_str());
    let answer =
        state.data.user_insights(user, limit, categories, recommender.neighbours(), if_none_match, trace).await;
    let (insights, etag, stale_age) = match (answer, condition) {
        (Ok(InsightsAnswer::NotModified), Some((etag, items))) => {
            count("hit");
            tracing::debug!(user, %model, etag, "prediction revalidated by data, served from the cache");
            return Ok(Prediction { items, stale_age: None });
        }
        // The data client answers NotModified only to a conditional call; should that ever break, a 304 without a
        // prediction to serve is a status this call cannot use (502), not a reason to stop the process.
        (Ok(InsightsAnswer::NotModified), None) => {
            count("miss");
            return Err(DataError::DataBadStatus(axum::http::StatusCode::NOT_MODIFIED).into());
        }
        (Ok(InsightsAnswer::Modified { insights, etag, stale_age }), _) => (insights, etag, stale_age),
        (Err(err), _) => {
            count("miss");
            return Err(err.into());
        }
    };
    count("miss");
    let preferences = recsys::Preferences { categories: categories.to_vec() };
    let items = recommender.recommend(&insights, &preferences, limit);
    // A prediction from a stale answer is served once, marked, and never cached; nor is one revalidation could
    // never confirm (see `Predictions::keeps`).
    if let Some(lookup) = lookup.filter(|_| stale_age.is_none() && state.predictions.keeps(etag.as_deref())) {
        state.predictions.store_items(lookup, insights.version, etag.as_deref(), categories, &items).await;
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
        "Prediction cache lookups, by model and result (hit: served from the cache, after a 304 when revalidating; \
        miss: computed)."
    );
}
