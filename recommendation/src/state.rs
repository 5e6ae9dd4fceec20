//! Per-user state, the store behind [`crate::users`]: preferences and the last recommendation with a count of
//! recommendations served, kept in the Dapr state store when the agent has a sidecar and in an in-process map
//! otherwise.
//!
//! Every write uses first-write concurrency: with the ETag read before, it succeeds only if nobody wrote in
//! between; for a new key, only if nobody created it first. A read-modify-write that loses is re-read and
//! retried a bounded number of times (STATE_WRITE_RETRIES), so concurrent requests never lose an update.
//!
//! The in-process store holds at most STATE_MEMORY_MAX_ENTRIES entries (a user's preferences and their history
//! are one entry each) and drops the least recently used one beyond that. Without an app token anyone who can
//! reach the agent can write entries, so a flood of new user ids pushes other users' idle entries out: it is a
//! per-replica store for demos and single instances, and the Dapr state store is the one to rely on. Per-client
//! quotas would not help: behind a sidecar or gateway every caller has the same address, and callers are not
//! authenticated individually.

use std::{
    num::NonZeroUsize,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shared::{
    dapr::{Sidecar, SidecarError, StateItem},
    fastapi::{Fields, ValidationErrorBody, ValidationIssue, json_error},
};
use utoipa::ToSchema;

use tokio::time::Instant;

/// Most entries the in-process store keeps unless configured otherwise (STATE_MEMORY_MAX_ENTRIES).
pub const MEMORY_MAX_ENTRIES: usize = 10_000;

/// Checks a user id against the rule every id of the data set follows ([`recsys::validate::ID_PATTERN`], so any
/// user the data agent knows can be named); `source` is `query` or `path`, `name` the parameter's name, for
/// FastAPI's `loc`.
pub fn check_user_id(raw: &str, source: &str, name: &str) -> Result<String, ValidationErrorBody> {
    match recsys::validate::id(raw) {
        Ok(()) => Ok(raw.to_owned()),
        Err(_) => Err(ValidationErrorBody {
            detail: vec![ValidationIssue::pattern_mismatch(
                vec![json!(source), json!(name)],
                raw,
                recsys::validate::ID_PATTERN,
            )],
        }),
    }
}

/// A user's preferences; other fields are refused (422 `extra_forbidden`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"categories": ["books", "music"], "max_results": 5}))]
pub struct Preferences {
    /// Categories the user cares about: at most 10, each 1 to 40 characters.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub categories: Vec<String>,
    /// How many items a recommendation may use, 1 to 100 (default 10).
    #[serde(default = "default_max_results")]
    #[schema(minimum = 1, maximum = 100)]
    pub max_results: i64,
}

fn default_max_results() -> i64 {
    10
}

impl Default for Preferences {
    fn default() -> Self {
        Self { categories: Vec::new(), max_results: default_max_results() }
    }
}

impl Preferences {
    /// Validates a decoded body with FastAPI's 422 shapes (unknown fields are refused).
    pub fn from_body(body: &Value) -> Result<Self, ValidationErrorBody> {
        let mut fields = Fields::of(body)?;
        let categories = fields.string_list("categories", false, 10, 1, 40);
        let max_results = fields.int("max_results", false, 1, 100);
        fields.finish()?;
        let defaults = Self::default();
        Ok(Self {
            categories: categories.unwrap_or(defaults.categories),
            max_results: max_results.unwrap_or(defaults.max_results),
        })
    }
}

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store (the sidecar or its backend) failed.
    #[error("state store unavailable: {0}")]
    Unavailable(#[source] SidecarError),
    /// Concurrent writers kept winning for longer than the retry bound.
    #[error("state write kept conflicting after {0} attempts")]
    Contention(u32),
    /// `If-Match` named a version that is no longer current.
    #[error("precondition failed: the preferences changed since they were read")]
    PreconditionFailed,
}

impl IntoResponse for StateError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "state operation failed");
        let mut response = match self {
            Self::Unavailable(_) => {
                json_error(StatusCode::SERVICE_UNAVAILABLE, "The state store is unavailable; try again shortly.")
            }
            Self::Contention(_) => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many concurrent updates for this user; try again shortly.",
            ),
            Self::PreconditionFailed => {
                return json_error(
                    StatusCode::PRECONDITION_FAILED,
                    "The preferences changed since they were read; read them again.",
                );
            }
        };
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

#[derive(Debug)]
struct MemoryEntry {
    value: Value,
    version: u64,
    expires: Option<Instant>,
}

/// Where user state lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The Dapr state API of the local sidecar, store `store`.
    Dapr {
        /// The sidecar.
        sidecar: Sidecar,
        /// State store component name.
        store: String,
    },
    /// This process (used without a sidecar): same semantics, lost on restart, not shared between replicas, and
    /// bounded (see the module docs).
    Memory(Arc<MemoryStore>),
}

/// The in-process store behind [`Backend::Memory`]: entries in least-recently-used order, at most its capacity.
#[derive(Debug)]
pub struct MemoryStore(Mutex<LruCache<String, MemoryEntry>>);

impl MemoryStore {
    /// Forgets `key` (tests use it to play a store that lost an entry).
    #[cfg(test)]
    pub(crate) fn remove(&self, key: &str) {
        self.lock().pop(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, MemoryEntry>> {
        // Every change is a single insert or removal, so a panic elsewhere cannot leave an entry half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live entry under `key`, which becomes the most recently used; an expired one is removed.
    fn get(&self, key: &str) -> Option<StateItem> {
        let mut entries = self.lock();
        let entry = entries.get(key)?;
        if entry.expires.is_some_and(|t| t <= Instant::now()) {
            entries.pop(key);
            return None;
        }
        Some(StateItem { value: entry.value.clone(), etag: Some(entry.version.to_string()) })
    }

    /// Stores `value` under `key` with first-write concurrency (see [`Backend::save`]); a new key in a full store
    /// takes the place of the least recently used entry.
    fn save(&self, key: &str, value: &Value, etag: Option<&str>, ttl: Option<Duration>) -> Result<(), SidecarError> {
        let mut entries = self.lock();
        let now = Instant::now();
        let current = entries.peek(key).filter(|e| e.expires.is_none_or(|t| t > now)).map(|e| e.version);
        let version = match (current, etag) {
            (None, None) => 1,
            (Some(current), Some(etag)) if etag == current.to_string() => current + 1,
            _ => return Err(SidecarError::Conflict),
        };
        let entry = MemoryEntry { value: value.clone(), version, expires: ttl.map(|t| now + t) };
        if let Some((dropped, _)) = entries.push(key.to_owned(), entry).filter(|(dropped, _)| dropped != key) {
            metrics::counter!("state_memory_evictions_total").increment(1);
            tracing::debug!(key = dropped, "in-process state full; dropped the least recently used entry");
        }
        Ok(())
    }
}

impl Backend {
    /// The in-process backend with the default bound.
    pub fn memory() -> Self {
        Self::memory_with_capacity(NonZeroUsize::new(MEMORY_MAX_ENTRIES).expect("not zero"))
    }

    /// The in-process backend keeping at most `max_entries`.
    pub fn memory_with_capacity(max_entries: NonZeroUsize) -> Self {
        metrics::describe_counter!(
            "state_memory_evictions_total",
            "Entries the in-process state store dropped because it held STATE_MEMORY_MAX_ENTRIES"
        );
        Self::Memory(Arc::new(MemoryStore(Mutex::new(LruCache::new(max_entries)))))
    }

    /// `dapr` or `memory`, for logs and readiness.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dapr { .. } => "dapr",
            Self::Memory(_) => "memory",
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<StateItem>, SidecarError> {
        match self {
            Self::Dapr { sidecar, store } => sidecar.get_state(store, key).await,
            Self::Memory(store) => Ok(store.get(key)),
        }
    }

    pub(crate) async fn save(
        &self,
        key: &str,
        value: &Value,
        etag: Option<&str>,
        ttl: Option<Duration>,
    ) -> Result<(), SidecarError> {
        match self {
            Self::Dapr { sidecar, store } => sidecar.save_state(store, key, value, etag, ttl).await,
            Self::Memory(store) => store.save(key, value, etag, ttl),
        }
    }

    /// Read-modify-write of `key` with first-write concurrency, retried `retries` times when it loses against a
    /// concurrent writer; returns the value written.
    pub(crate) async fn update(
        &self,
        key: &str,
        ttl: Option<Duration>,
        retries: u32,
        change: impl FnMut(Option<Value>) -> Value,
    ) -> Result<Value, StateError> {
        // Each attempt needs `change` only while it runs, never across an await; a Mutex (not a RefCell) keeps the
        // request's future `Send`.
        let change = Mutex::new(change);
        let attempt = || async {
            let current = self.get(key).await.map_err(|err| Attempt::Failed(StateError::Unavailable(err)))?;
            let etag = current.as_ref().and_then(|c| c.etag.clone());
            let next = (change.lock().unwrap_or_else(PoisonError::into_inner))(current.map(|c| c.value));
            match self.save(key, &next, etag.as_deref(), ttl).await {
                Ok(()) => Ok(next),
                Err(SidecarError::Conflict) => Err(Attempt::Conflict),
                Err(err) => Err(Attempt::Failed(StateError::Unavailable(err))),
            }
        };
        attempt
            .retry(conflict_backoff(retries))
            .when(|failed| matches!(failed, Attempt::Conflict))
            .notify(|_, wait| {
                tracing::debug!(key, wait_us = wait.as_micros() as u64, "state write conflicted; retrying")
            })
            .await
            .map_err(|failed| match failed {
                Attempt::Conflict => StateError::Contention(retries + 1),
                Attempt::Failed(err) => err,
            })
    }
}

/// How one attempt of [`Backend::update`] failed: lost to a concurrent write (retried), or otherwise (not).
enum Attempt {
    Conflict,
    Failed(StateError),
}

/// The pauses before retrying a conflicting write: 5 ms doubling up to 50 ms, each with up to as much again of
/// random jitter, so that writers that collided do not collide again in lockstep.
fn conflict_backoff(retries: u32) -> impl backon::Backoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(5))
        .with_max_delay(Duration::from_millis(50))
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(retries as usize)
        .build()
}

/// User state with its settings.
#[derive(Debug, Clone)]
pub struct UserState {
    backend: Backend,
    ttl: Duration,
    retries: u32,
}

fn preferences_key(user: &str) -> String {
    format!("preferences-{user}")
}

fn history_key(user: &str) -> String {
    format!("history-{user}")
}

impl UserState {
    /// User state in `backend`; last recommendations live for `ttl`; conflicting writes are retried `retries`
    /// times.
    pub fn new(backend: Backend, ttl: Duration, retries: u32) -> Self {
        Self { backend, ttl, retries }
    }

    /// Where the state lives.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Read-modify-write of `key` (see [`Backend::update`]) with this state's retry bound.
    async fn update(
        &self,
        key: &str,
        ttl: Option<Duration>,
        change: impl FnMut(Option<Value>) -> Value,
    ) -> Result<Value, StateError> {
        self.backend.update(key, ttl, self.retries, change).await
    }

    /// How many times a conflicting write is retried.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The user's preferences and their ETag, if stored.
    pub async fn preferences(&self, user: &str) -> Result<Option<(Preferences, Option<String>)>, StateError> {
        let item = self.backend.get(&preferences_key(user)).await.map_err(StateError::Unavailable)?;
        Ok(item.map(|item| {
            // Stored by this agent; anything unreadable is treated as no preferences rather than an error.
            (serde_json::from_value(item.value).unwrap_or_default(), item.etag)
        }))
    }

    /// Stores preferences: with `if_match`, only if they are still at that version.
    pub async fn set_preferences(
        &self,
        user: &str,
        preferences: &Preferences,
        if_match: Option<&str>,
    ) -> Result<Option<String>, StateError> {
        let key = preferences_key(user);
        let value = serde_json::to_value(preferences).expect("preferences are plain JSON");
        match if_match {
            Some(etag) => match self.backend.save(&key, &value, Some(etag), None).await {
                Ok(()) => {}
                Err(SidecarError::Conflict) => return Err(StateError::PreconditionFailed),
                Err(err) => return Err(StateError::Unavailable(err)),
            },
            None => {
                self.update(&key, None, |_| value.clone()).await?;
            }
        }
        // The save API does not return the new ETag: read it back, and name it only if what is stored is still
        // what was written (a concurrent writer may have come in between; then the client has to read first).
        let stored = self.backend.get(&key).await.ok().flatten();
        Ok(stored.filter(|item| item.value == value).and_then(|item| item.etag))
    }

    /// Records `recommendation` as the user's last one (kept for the TTL) and returns how many were served: the
    /// entry `history-<user>` is `{"recommendations_served": <n>, "last": <recommendation>}`.
    pub async fn record(&self, user: &str, recommendation: &Value) -> Result<u64, StateError> {
        let mut served = 0;
        self.update(&history_key(user), Some(self.ttl), |current| {
            // Only the count is read: the last answer stored beside it is replaced whole, so decoding it (a copy of
            // the whole tree, on every personal request) would be wasted.
            let before = current.as_ref().and_then(|v| v.get("recommendations_served")).and_then(Value::as_u64);
            served = before.unwrap_or(0) + 1;
            json!({ "recommendations_served": served, "last": recommendation })
        })
        .await?;
        Ok(served)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(retries: u32) -> UserState {
        UserState::new(Backend::memory(), Duration::from_secs(60), retries)
    }

    #[tokio::test]
    async fn memory_backend_has_first_write_semantics() {
        let backend = Backend::memory();
        backend.save("k", &json!(1), None, None).await.unwrap();
        assert!(matches!(backend.save("k", &json!(2), None, None).await, Err(SidecarError::Conflict)));
        let item = backend.get("k").await.unwrap().unwrap();
        assert!(matches!(backend.save("k", &json!(2), Some("nope"), None).await, Err(SidecarError::Conflict)));
        backend.save("k", &json!(2), item.etag.as_deref(), None).await.unwrap();
        assert!(matches!(backend.save("k", &json!(3), item.etag.as_deref(), None).await, Err(SidecarError::Conflict)));
    }

    #[tokio::test]
    async fn a_full_memory_store_drops_the_least_recently_used_entry() {
        let backend = Backend::memory();
        for n in 0..10_000 {
            backend.save(&format!("user-{n}"), &json!(n), None, None).await.unwrap();
        }
        // user-0 is the oldest entry but was just used, so user-1 is the least recently used one.
        assert!(backend.get("user-0").await.unwrap().is_some());
        backend.save("newcomer", &json!("new"), None, None).await.unwrap();
        assert!(backend.get("user-1").await.unwrap().is_none(), "the least recently used entry goes");
        for kept in ["user-0", "user-2", "user-9999", "newcomer"] {
            assert!(backend.get(kept).await.unwrap().is_some(), "{kept} was dropped");
        }
    }

    #[tokio::test]
    async fn concurrent_records_lose_no_update() {
        let users = users(50);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let users = users.clone();
                tokio::spawn(async move { users.record("alice", &json!({"x": 1})).await.unwrap() })
            })
            .collect();
        let mut counts = Vec::new();
        for task in tasks {
            counts.push(task.await.unwrap());
        }
        counts.sort_unstable();
        assert_eq!(counts, (1..=20).collect::<Vec<_>>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_loses_is_read_again_and_retried_and_past_the_retries_is_contention() {
        let backend = Backend::memory();
        let Backend::Memory(memory) = &backend else { unreachable!() };
        memory.save("k", &json!(0), None, None).unwrap();
        // Another writer gets in between this update's read and its write, `interfere` times.
        let update = |interfere: u32, retries: u32| {
            let (backend, memory) = (backend.clone(), memory.clone());
            async move {
                let mut calls = 0;
                let result = backend
                    .update("k", None, retries, |current| {
                        calls += 1;
                        if calls <= interfere {
                            let seen = memory.get("k").unwrap();
                            memory.save("k", &json!(-1), seen.etag.as_deref(), None).unwrap();
                        }
                        json!(current.and_then(|v| v.as_i64()).unwrap_or(0) + 1)
                    })
                    .await;
                (result, calls)
            }
        };
        let (result, calls) = update(2, 3).await;
        assert_eq!(result.unwrap(), json!(0), "the third read saw the other writer's -1");
        assert_eq!(calls, 3);
        assert_eq!(memory.get("k").unwrap().value, json!(0));
        let (result, calls) = update(5, 2).await;
        assert!(matches!(result, Err(StateError::Contention(3))), "{result:?}");
        assert_eq!(calls, 3, "one attempt and two retries");
    }

    #[tokio::test]
    async fn stale_if_match_is_a_failed_precondition() {
        let users = users(3);
        let prefs = Preferences::default();
        let first = users.set_preferences("bob", &prefs, None).await.unwrap().unwrap();
        let second = users.set_preferences("bob", &prefs, Some(&first)).await.unwrap().unwrap();
        assert_ne!(first, second);
        assert!(matches!(
            users.set_preferences("bob", &prefs, Some(&first)).await,
            Err(StateError::PreconditionFailed)
        ));
    }

    #[test]
    fn user_ids_follow_the_pattern() {
        assert!(check_user_id("alice.b-1_x", "query", "user").is_ok());
        let err = check_user_id("a b", "path", "user_id").unwrap_err();
        assert_eq!(
            serde_json::to_value(err).unwrap(),
            json!({"detail": [{"type": "string_pattern_mismatch", "loc": ["path", "user_id"],
                "msg": "String should match pattern '^[A-Za-z0-9._-]{1,64}$'", "input": "a b",
                "ctx": {"pattern": "^[A-Za-z0-9._-]{1,64}$"}}]})
        );
        assert!(check_user_id(&"x".repeat(65), "query", "user").is_err());
    }
}
