//! The prediction cache: the items a model computed for one (model, user, limit, preferred categories), kept in
//! the state store (the Dapr state store with a sidecar, else a bounded in-process one) for PREDICTION_CACHE_TTL
//! (`ttlInSeconds`, 5m unless set), and never served once data changed. Two ways keep it fresh:
//!
//! - *Revalidation* (PREDICTION_REVALIDATE, on by default without a sidecar, when no `data-updated` event would
//!   say that data changed): each prediction keeps the `ETag` of the insights it was computed from, and a lookup
//!   that finds one sends the insights request with `If-None-Match: <that tag>`
//!   ([`crate::predict`]). Data answers 304 without computing or sending anything while its insights are
//!   unchanged (the prediction is served), else 200 with the new insights (the prediction is recomputed and
//!   stored with the new tag). Data's tag names the content of its insights, not a counter, so a data agent
//!   restarted on another data set, or another replica that applied other batches, never confirms a prediction
//!   it did not compute. An answer without an `ETag` (a data agent that predates them) is not cached at all:
//!   nothing could tell when it went stale.
//! - *Events* (the default with a sidecar): every `data-updated` event drops every prediction, for every replica,
//!   by starting a new generation (below), and a lookup serves a current prediction without asking data.
//!
//! ## Why a generation, not a delete
//! Dapr delivers each `data-updated` event to one replica of the app id (its consumer group), and the state API
//! cannot delete keys by prefix. So dropping predictions cannot be a delete run by whoever got the event. Instead
//! one key, [`GENERATION_KEY`], holds a random token, the current *generation*; every prediction is stored with
//! the generation read before its insights were fetched, and a lookup uses it only if that is still the current
//! one. The replica that receives the event writes a new token ([`Predictions::drop_all`]); from then on every
//! replica, reading the same key in the same store, misses on every older prediction, and the TTL removes them.
//! A prediction computed from insights fetched before the event but stored after it carries the old token, so a
//! slow request racing an event cannot bring old data back.
//!
//! The token is random rather than a counter so that losing the key (an in-process store dropping it as least
//! recently used, a flushed Redis) can never make old predictions current again: a missing generation is
//! replaced by a fresh token, which no stored prediction has.
//!
//! ## Preferences
//! The key holds the preferred categories (hashed) and the limit (which defaults to the stored `max_results`), so
//! a preferences change makes that user's next lookup miss: the old predictions, computed for other preferences,
//! are never served for the new ones, and expire with their TTL. Each stored prediction also holds its categories,
//! which a lookup compares, so even a hash collision cannot serve another set's answer.
//!
//! ## Cost
//! A lookup reads the generation and the prediction concurrently (two state reads, in one round trip time); a
//! miss adds one write. Revalidating, a hit adds the conditional insights call: a round trip to data that answers
//! 304 with no body, where a miss costs data the insights (about 60 µs) and both sides up to 10 kB of JSON.
//! Without a sidecar the in-process store is a separate one from users' preferences (STATE_MEMORY_MAX_ENTRIES
//! each), so predictions can never push preferences out.
//!
//! ## Memory
//! In the in-process store a prediction is kept as its JSON text in one string value rather than as a JSON object:
//! that store keeps `serde_json::Value`s, and ten items as a tree of maps took about 13 kB of RSS each (10 000
//! predictions, the default bound, 127 MB: past the 64 MB a compose container and the 128 MiB a pod may use), as
//! text about 1.7 kB each (17 MB). A hit also clones and decodes one string instead of a tree. The Dapr state
//! store still gets the JSON object, as before (Redis holds it as text anyway).

use std::time::Duration;

use recsys::{ModelName, Recommendation};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::dapr::SidecarError;

use crate::state::{Backend, StateError};

/// The state key holding the current generation of predictions.
pub const GENERATION_KEY: &str = "predictions-generation";

/// What a prediction is computed for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictionKey<'a> {
    /// The model.
    pub model: ModelName,
    /// The user.
    pub user: &'a str,
    /// How many items.
    pub limit: usize,
    /// The user's preferred categories, in their stored order.
    pub categories: &'a [String],
}

impl PredictionKey<'_> {
    /// The state key: `prediction-<model>-<user>-<limit>-<hash of the categories>`, safe in a URL path (user ids
    /// are `[A-Za-z0-9._-]`).
    pub fn state_key(&self) -> String {
        format!("prediction-{}-{}-{}-{:016x}", self.model, self.user, self.limit, fnv1a(self.categories))
    }
}

/// FNV-1a over the categories, each followed by a 0 byte (categories have no control characters): stable across
/// builds and processes, unlike the standard library's hasher, so every replica computes the same key.
fn fnv1a(categories: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in categories.iter().flat_map(|c| c.bytes().chain([0])) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// One stored prediction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    /// The generation current when its insights were fetched.
    generation: String,
    /// The insights version they were computed from.
    version: u64,
    /// The entity tag of those insights (absent when data sent none, or in a prediction stored before tags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    insights_etag: Option<String>,
    /// The preferred categories they were computed for.
    categories: Vec<String>,
    /// The items.
    items: Vec<Recommendation>,
}

impl Stored {
    /// The stored form in `store`: for the in-process store the JSON text as one string value, for Dapr's the
    /// JSON object (see "Memory" in the module docs).
    fn encode(&self, store: &Backend) -> Value {
        match store {
            Backend::Memory(_) => Value::String(serde_json::to_string(self).expect("a prediction is plain JSON")),
            Backend::Dapr { .. } => serde_json::to_value(self).expect("a prediction is plain JSON"),
        }
    }

    /// The prediction in `value`, in either stored form; anything else reads as no prediction (it is recomputed
    /// and overwritten).
    fn decode(value: Value) -> Option<Self> {
        match value {
            Value::String(text) => serde_json::from_str(&text).ok(),
            object => serde_json::from_value(object).ok(),
        }
    }
}

/// A current prediction (of the current generation, for the same categories).
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The items.
    pub items: Vec<Recommendation>,
    /// The insights version they came from.
    pub version: u64,
    /// The entity tag of those insights, which revalidation sends as `If-None-Match`.
    pub insights_etag: Option<String>,
}

/// What a lookup found: the prediction when it is current, and what storing a new one needs.
#[derive(Debug)]
pub struct Lookup {
    key: String,
    generation: String,
    etag: Option<String>,
    /// The prediction, when current.
    pub hit: Option<Hit>,
}

/// The prediction cache.
#[derive(Debug, Clone)]
pub struct Predictions {
    store: Backend,
    ttl: Duration,
    revalidate: bool,
    retries: u32,
}

impl Predictions {
    /// Predictions in `store`, kept for `ttl` (zero: off), served without revalidation (see
    /// [`Predictions::revalidating`]); conflicting generation writes are retried `retries` times.
    pub fn new(store: Backend, ttl: Duration, retries: u32) -> Self {
        Self { store, ttl, revalidate: false, retries }
    }

    /// The same cache, with predictions revalidated against data's `ETag` before they are served when
    /// `revalidate` (see the module docs).
    pub fn revalidating(self, revalidate: bool) -> Self {
        Self { revalidate, ..self }
    }

    /// Whether a current prediction is revalidated with data before it is served.
    pub fn revalidates(&self) -> bool {
        self.revalidate
    }

    /// How long predictions are kept (zero: the cache is off).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether a prediction computed from insights tagged `insights_etag` may be stored: without revalidation
    /// always (events or the TTL end it), with it only when tagged (nothing else could tell when it went stale).
    pub fn keeps(&self, insights_etag: Option<&str>) -> bool {
        !self.ttl.is_zero() && (!self.revalidate || insights_etag.is_some())
    }

    /// Where they are kept.
    pub fn store(&self) -> &Backend {
        &self.store
    }

    /// The prediction for `key` if it is current, and what [`Predictions::store_items`] needs; `None` when the
    /// cache is off.
    pub async fn lookup(&self, key: &PredictionKey<'_>) -> Result<Option<Lookup>, StateError> {
        if self.ttl.is_zero() {
            return Ok(None);
        }
        let state_key = key.state_key();
        let (generation, entry) = tokio::join!(self.store.get(GENERATION_KEY), self.store.get(&state_key));
        let generation = match generation.map_err(StateError::Unavailable)? {
            Some(item) => item.value.as_str().map(str::to_owned),
            None => None,
        };
        let generation = match generation {
            Some(generation) => generation,
            None => self.start_generation().await?,
        };
        let entry = entry.map_err(StateError::Unavailable)?;
        let etag = entry.as_ref().and_then(|item| item.etag.clone());
        let hit = entry
            .and_then(|item| Stored::decode(item.value))
            .filter(|stored| stored.generation == generation && stored.categories == key.categories)
            .map(|stored| Hit { items: stored.items, version: stored.version, insights_etag: stored.insights_etag });
        Ok(Some(Lookup { key: state_key, generation, etag, hit }))
    }

    /// Stores `items`, computed from insights of `version` tagged `insights_etag` fetched after `lookup`, for the
    /// TTL. Best effort: a failure only costs a later recomputation, so it is logged, never the request's failure.
    pub async fn store_items(
        &self,
        lookup: Lookup,
        version: u64,
        insights_etag: Option<&str>,
        categories: &[String],
        items: &[Recommendation],
    ) {
        let stored = Stored {
            generation: lookup.generation,
            version,
            insights_etag: insights_etag.map(str::to_owned),
            categories: categories.to_vec(),
            items: items.to_vec(),
        };
        let value = stored.encode(&self.store);
        match self.store.save(&lookup.key, &value, lookup.etag.as_deref(), Some(self.ttl)).await {
            Ok(()) => {}
            // Another request stored the same prediction meanwhile: theirs is as good.
            Err(SidecarError::Conflict) => tracing::debug!(key = lookup.key, "prediction stored concurrently"),
            Err(err) => tracing::warn!(key = lookup.key, error = %err, "prediction not cached"),
        }
    }

    /// Drops every prediction, for every replica sharing the store, by starting a new generation (see the module
    /// docs); returns it.
    pub async fn drop_all(&self) -> Result<String, StateError> {
        let token = new_token();
        self.store.update(GENERATION_KEY, None, self.retries, |_| Value::String(token.clone())).await?;
        Ok(token)
    }

    /// Creates the generation when there is none; if another request created it first, that one is current.
    async fn start_generation(&self) -> Result<String, StateError> {
        let token = new_token();
        match self.store.save(GENERATION_KEY, &Value::String(token.clone()), None, None).await {
            Ok(()) => Ok(token),
            Err(SidecarError::Conflict) => {
                let current = self.store.get(GENERATION_KEY).await.map_err(StateError::Unavailable)?;
                Ok(current.and_then(|item| item.value.as_str().map(str::to_owned)).unwrap_or(token))
            }
            Err(err) => Err(StateError::Unavailable(err)),
        }
    }
}

/// A fresh generation token: 128 random bits, as hex.
fn new_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str) -> Recommendation {
        Recommendation { id: id.to_owned(), title: id.to_uppercase(), score: 1.0, reason: "test".to_owned() }
    }

    fn key<'a>(user: &'a str, categories: &'a [String]) -> PredictionKey<'a> {
        PredictionKey { model: ModelName::V1, user, limit: 5, categories }
    }

    #[test]
    fn keys_differ_by_every_part_and_are_stable() {
        let books = vec!["books".to_owned()];
        let base = key("u1", &books);
        // FNV-1a of "books\0", as an independent implementation computes it.
        assert_eq!(base.state_key(), "prediction-v1-u1-5-18a5be80fb370463");
        let others = [
            PredictionKey { model: ModelName::V2, ..base.clone() },
            PredictionKey { limit: 6, ..base.clone() },
            key("u2", &books),
            key("u1", &[]),
        ];
        for other in others {
            assert_ne!(other.state_key(), base.state_key(), "{other:?}");
        }
        let split = ["ab".to_owned(), "c".to_owned()];
        let joined = ["a".to_owned(), "bc".to_owned()];
        assert_ne!(fnv1a(&split), fnv1a(&joined), "category boundaries count");
    }

    #[tokio::test]
    async fn a_prediction_is_served_until_a_new_generation_drops_it_for_every_replica() {
        let shared = Backend::memory();
        let (replica_a, replica_b) = (
            Predictions::new(shared.clone(), Duration::from_secs(60), 3),
            Predictions::new(shared.clone(), Duration::from_secs(60), 3),
        );
        let none = Vec::new();
        let lookup = replica_a.lookup(&key("u1", &none)).await.unwrap().unwrap();
        assert!(lookup.hit.is_none());
        replica_a.store_items(lookup, 7, Some("\"t-7\""), &none, &[item("a")]).await;
        let seen_by_b = replica_b.lookup(&key("u1", &none)).await.unwrap().unwrap();
        let expected = Hit { items: vec![item("a")], version: 7, insights_etag: Some("\"t-7\"".to_owned()) };
        assert_eq!(seen_by_b.hit, Some(expected), "replicas share the store, the insights' tag with the items");

        // Replica B computes from insights fetched before the event, and stores after it: never served.
        let racing = replica_b.lookup(&key("u2", &none)).await.unwrap().unwrap();
        replica_a.drop_all().await.unwrap();
        replica_b.store_items(racing, 7, None, &none, &[item("old")]).await;
        for replica in [&replica_a, &replica_b] {
            assert!(replica.lookup(&key("u1", &none)).await.unwrap().unwrap().hit.is_none());
            assert!(replica.lookup(&key("u2", &none)).await.unwrap().unwrap().hit.is_none());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn predictions_expire_with_their_ttl() {
        let predictions = Predictions::new(Backend::memory(), Duration::from_secs(30), 3);
        let none = Vec::new();
        let lookup = predictions.lookup(&key("u1", &none)).await.unwrap().unwrap();
        predictions.store_items(lookup, 1, None, &none, &[item("a")]).await;
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(predictions.lookup(&key("u1", &none)).await.unwrap().unwrap().hit.is_some());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(predictions.lookup(&key("u1", &none)).await.unwrap().unwrap().hit.is_none(), "expired");
    }

    #[tokio::test]
    async fn a_lost_generation_never_revives_old_predictions() {
        let store = Backend::memory();
        let predictions = Predictions::new(store.clone(), Duration::from_secs(60), 3);
        let none = Vec::new();
        let lookup = predictions.lookup(&key("u1", &none)).await.unwrap().unwrap();
        predictions.store_items(lookup, 1, None, &none, &[item("a")]).await;
        let Backend::Memory(memory) = &store else { unreachable!() };
        memory.remove(GENERATION_KEY);
        assert!(predictions.lookup(&key("u1", &none)).await.unwrap().unwrap().hit.is_none());
    }

    #[tokio::test]
    async fn the_cache_is_off_at_ttl_zero() {
        let predictions = Predictions::new(Backend::memory(), Duration::ZERO, 3);
        assert!(predictions.lookup(&key("u1", &[])).await.unwrap().is_none());
    }

    #[test]
    fn an_untagged_prediction_is_kept_only_without_revalidation() {
        let on = Predictions::new(Backend::memory(), Duration::from_secs(60), 3);
        assert!(on.keeps(None) && on.keeps(Some("\"t\"")));
        let revalidating = on.clone().revalidating(true);
        assert!(revalidating.keeps(Some("\"t\"")));
        assert!(!revalidating.keeps(None), "nothing could tell when it went stale");
        let off = Predictions::new(Backend::memory(), Duration::ZERO, 3).revalidating(true);
        assert!(!off.keeps(Some("\"t\"")));
    }

    #[test]
    fn a_prediction_is_stored_as_text_in_memory_and_as_an_object_in_dapr_and_reads_back() {
        let stored = Stored {
            generation: "g".to_owned(),
            version: 3,
            insights_etag: Some("\"t-3\"".to_owned()),
            categories: vec!["books".to_owned()],
            items: vec![item("a")],
        };
        let encoded = stored.encode(&Backend::memory());
        assert!(encoded.is_string(), "one string, not a tree of maps: {encoded}");
        assert_eq!(Stored::decode(encoded), Some(stored.clone()));
        let sidecar = shared::dapr::Sidecar::new(3500, None, Duration::from_secs(1)).unwrap();
        let encoded = stored.encode(&Backend::Dapr { sidecar, store: "statestore".to_owned() });
        assert!(encoded.is_object(), "Dapr's store gets the object, as before: {encoded}");
        assert_eq!(Stored::decode(encoded), Some(stored));
        let untagged = serde_json::json!({"generation": "g", "version": 3, "categories": [], "items": []});
        assert_eq!(Stored::decode(untagged).map(|s| s.insights_etag), Some(None), "stored before tags");
        assert_eq!(Stored::decode(Value::Bool(true)), None);
    }
}
