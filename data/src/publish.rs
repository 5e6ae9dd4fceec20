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
        let event = serde_json::to_value(snapshot).expect("a snapshot is plain JSON");
        match self.sidecar.publish(&self.pubsub, &self.topic, &event, trace.headers()).await {
            Ok(()) => {
                tracing::info!(pubsub = %self.pubsub, topic = %self.topic, version = snapshot.version, "data change published");
                EventOutcome::Published
            }
            Err(err) => {
                tracing::warn!(pubsub = %self.pubsub, topic = %self.topic, version = snapshot.version, error = %err,
                    "data change not published");
                EventOutcome::Failed
            }
        }
    }
}
