//! The data-updated subscription: Dapr asks `GET /dapr/subscribe` which topics to deliver, then POSTs each event
//! as a CloudEvent to the route given there.
//!
//! The answer follows Dapr's contract: `{"status":"SUCCESS"}` when handled, `{"status":"RETRY"}` to have the
//! event delivered again later, `{"status":"DROP"}` to have it discarded (logged by Dapr, never redelivered).
//! - an event that is not a data-updated CloudEvent (not JSON, no `data`, wrong shape) will never become one:
//!   DROP;
//! - a good event first drops every cached prediction, for every replica (Dapr delivers the event to one replica
//!   only; see [`crate::predictions`] for how one write reaches them all): if the state store cannot be written
//!   now, RETRY;
//! - then it clears the cached data answer, and this agent fetches the new answer right away, so the event
//!   is only acknowledged once this replica can serve the new data. If data cannot be fetched now: RETRY (the
//!   cache stays cleared meanwhile, so no stale answer is served either way).
//!
//! The payload is read tolerantly (fields other than `version` are optional, unknown ones ignored), so a data
//! agent that says more about the change (which insights version, how many interactions) is still understood.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::{
    fastapi::{BodyBytes, BodyRejection},
    obs::TraceHeaders,
};
use utoipa::ToSchema;

use crate::AppState;

/// Route the sidecar delivers data-updated events to.
pub const DELIVERY_ROUTE: &str = "/events/data-updated";

/// One entry of the programmatic subscription list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Subscription {
    /// Pub/sub component.
    pub pubsubname: String,
    /// Topic.
    pub topic: String,
    /// Path of this app the events are POSTed to.
    pub route: String,
}

/// The answer to one delivery, as Dapr reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Handled.
    Success,
    /// Deliver again later.
    Retry,
    /// Discard; never deliver again.
    Drop,
}

/// Body of a delivery answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryAnswer {
    /// What Dapr should do with the event.
    pub status: DeliveryStatus,
}

/// The `data` of a data-updated event (what the data agent publishes); other fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
pub struct DataUpdated {
    /// Version of the data after the change.
    pub version: u64,
    /// The new seed answer, when the change was a `PUT /data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_data: Option<String>,
    /// The insights' version, when the change was new interactions (`POST /interactions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insights_version: Option<u64>,
}

/// Counts of delivery answers since start, shown in the readiness body.
#[derive(Debug, Default)]
pub struct EventCounts {
    success: AtomicU64,
    retry: AtomicU64,
    drop: AtomicU64,
}

impl EventCounts {
    fn record(&self, status: DeliveryStatus) {
        let counter = match status {
            DeliveryStatus::Success => &self.success,
            DeliveryStatus::Retry => &self.retry,
            DeliveryStatus::Drop => &self.drop,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as JSON.
    pub fn snapshot(&self) -> Value {
        json!({
            "success": self.success.load(Ordering::Relaxed),
            "retry": self.retry.load(Ordering::Relaxed),
            "drop": self.drop.load(Ordering::Relaxed),
        })
    }
}

/// What the subscription needs: where to subscribe, and the counters.
#[derive(Debug, Clone)]
pub struct Events {
    /// The subscription, `None` without a sidecar.
    pub subscription: Option<Subscription>,
    /// Delivery answers so far.
    pub counts: Arc<EventCounts>,
}

/// Topics this agent subscribes to (read by the Dapr sidecar at startup); empty without a sidecar.
#[utoipa::path(get, path = "/dapr/subscribe", tag = "events",
    responses((status = 200, description = "The subscriptions", body = [Subscription])))]
pub async fn subscribe(State(state): State<Arc<AppState>>) -> Json<Vec<Subscription>> {
    Json(state.events.subscription.iter().cloned().collect())
}

/// Receives a data-updated CloudEvent from the sidecar: clears the data cache and refetches (see module docs).
#[utoipa::path(post, path = "/events/data-updated", tag = "events",
    request_body(content = Option<Value>, description = "A CloudEvent whose `data` is {version, processed_data}; \
        Dapr always sends one. Anything else, an empty body included, is answered DROP",
        content_type = "application/cloudevents+json"),
    responses(
        (status = 200, description = "SUCCESS, RETRY or DROP, as Dapr's pub/sub contract defines",
            body = DeliveryAnswer),
        shared::fastapi::BodyReadErrors,
    ))]
pub async fn data_updated(
    State(state): State<Arc<AppState>>,
    trace: TraceHeaders,
    body: Result<BodyBytes, BodyRejection>,
) -> Response {
    let BodyBytes(body) = match body {
        Ok(body) => body,
        Err(unreadable) => return unreadable.into_response(),
    };
    let status = handle(&state, &trace, &body).await;
    state.events.counts.record(status);
    Json(DeliveryAnswer { status }).into_response()
}

async fn handle(state: &AppState, trace: &TraceHeaders, body: &[u8]) -> DeliveryStatus {
    let event: Value = match serde_json::from_slice(body) {
        Ok(event) => event,
        Err(err) => {
            tracing::warn!(error = %err, "event dropped: not JSON");
            return DeliveryStatus::Drop;
        }
    };
    let id = event.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let update = match event.get("data").cloned().map(serde_json::from_value::<DataUpdated>) {
        Some(Ok(update)) => update,
        Some(Err(err)) => {
            tracing::warn!(event_id = id, error = %err, "event dropped: data is not a data-updated payload");
            return DeliveryStatus::Drop;
        }
        None => {
            tracing::warn!(event_id = id, "event dropped: no data");
            return DeliveryStatus::Drop;
        }
    };
    if let Err(err) = state.predictions.drop_all().await {
        tracing::warn!(event_id = id, version = update.version, error = %err,
            "data updated but the cached predictions cannot be dropped now; asking for redelivery");
        return DeliveryStatus::Retry;
    }
    state.cache.invalidate();
    match state.cache.get(&state.data, trace).await {
        Ok(answer) if answer.stale_age.is_some() => {
            tracing::warn!(
                event_id = id,
                version = update.version,
                "data updated but only a stale answer is available now; asking for redelivery"
            );
            DeliveryStatus::Retry
        }
        Ok(_) => {
            tracing::info!(
                event_id = id,
                version = update.version,
                insights_version = update.insights_version,
                "data updated; cached predictions dropped and data answer refreshed"
            );
            DeliveryStatus::Success
        }
        Err(err) => {
            tracing::warn!(event_id = id, version = update.version, error = %err,
                "data updated but cannot be fetched now; asking for redelivery");
            DeliveryStatus::Retry
        }
    }
}
