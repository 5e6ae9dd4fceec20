//! Announces data changes: a `data-updated` event through the Dapr sidecar's pub/sub API.

use serde::{Deserialize, Serialize};
use shared::{dapr::Sidecar, obs::TraceHeaders};
use utoipa::ToSchema;

use crate::store::Snapshot;

/// What became of the event announcing a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventOutcome {
    /// The sidecar accepted the event.
    Published,
    /// The sidecar refused it or could not be reached; subscribers learn of the change only when their caches
    /// expire.
    Failed,
    /// No sidecar is configured (DAPR_HTTP_PORT unset), so no events are sent.
    Disabled,
}

/// The `data` of a `data-updated` CloudEvent. `PUT /data` publishes `{"version","processed_data"}` exactly as
/// before insights existed (subscribers that refuse unknown fields keep working); `POST /interactions` adds
/// `insights_version`, the version of `GET /insights` after the batches announced, so a subscriber can tell which
/// cached predictions are stale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"version": 0, "processed_data": "some_insights", "insights_version": 3}))]
pub struct DataUpdated {
    /// The data served by `GET /data`, and its version.
    #[serde(flatten)]
    pub snapshot: Snapshot,
    /// The insights' version, on events announcing new interactions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insights_version: Option<u64>,
}

/// Publisher of `data-updated` events.
#[derive(Debug, Clone)]
pub struct Publisher {
    sidecar: Sidecar,
    pubsub: String,
    topic: String,
}

impl Publisher {
    /// A publisher to `topic` on component `pubsub` through `sidecar`.
    pub fn new(sidecar: Sidecar, pubsub: String, topic: String) -> Self {
        Self { sidecar, pubsub, topic }
    }

    /// The sidecar used.
    pub fn sidecar(&self) -> &Sidecar {
        &self.sidecar
    }

    /// Publishes `snapshot` (its JSON is the CloudEvent's `data`), continuing the caller's trace.
    pub async fn publish(&self, snapshot: &Snapshot, trace: &TraceHeaders) -> EventOutcome {
        self.send(&DataUpdated { snapshot: snapshot.clone(), insights_version: None }, trace).await
    }

    /// Publishes that the insights reached `insights_version`, with the current `snapshot`, continuing `trace`
    /// (the trace of the latest batch of the burst announced).
    pub async fn publish_insights(
        &self,
        snapshot: Snapshot,
        insights_version: u64,
        trace: &TraceHeaders,
    ) -> EventOutcome {
        self.send(&DataUpdated { snapshot, insights_version: Some(insights_version) }, trace).await
    }

    async fn send(&self, event: &DataUpdated, trace: &TraceHeaders) -> EventOutcome {
        let data = serde_json::to_value(event).expect("an event is plain JSON");
        let (version, insights_version) = (event.snapshot.version, event.insights_version);
        match self.sidecar.publish(&self.pubsub, &self.topic, &data, trace.headers()).await {
            Ok(()) => {
                tracing::info!(pubsub = %self.pubsub, topic = %self.topic, version, insights_version,
                    "data change published");
                EventOutcome::Published
            }
            Err(err) => {
                tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, version, insights_version, error = %err,
                    "data change not published");
                EventOutcome::Failed
            }
        }
    }
}
