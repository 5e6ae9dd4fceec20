//! A cache of the data agent's answer, cleared by data-updated events.
//!
//! With a sidecar delivering events the answer can be reused for a while (DATA_CACHE_TTL) and every change still
//! shows up on the next request; without events the cache is off by default, so the agent behaves as before. (The
//! prediction cache, [`crate::predictions`], is on without events too: it revalidates with data's `ETag` and 304.
//! The seed `/data` answer carries no tag to revalidate with, and costs data next to nothing to produce.)
//! Each clearing starts a new generation, and an answer fetched before a clearing is never stored after it: a
//! slow fetch that raced an event cannot put the old data back.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;
use shared::obs::TraceHeaders;

use crate::{DataAnswer, DataClient, DataError};
use tokio::time::Instant;

#[derive(Debug, Default)]
struct Inner {
    generation: u64,
    entry: Option<Entry>,
}

#[derive(Debug)]
struct Entry {
    value: Value,
    expires: Instant,
}

/// The cached answer of the data agent, shared by every request of the process.
#[derive(Debug, Clone)]
pub struct DataCache {
    ttl: Duration,
    inner: Arc<Mutex<Inner>>,
}

impl DataCache {
    /// A cache keeping answers for `ttl` (zero: never cached).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, inner: Arc::default() }
    }

    /// How long answers are kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached answer if still fresh, else a new one from `client` (stored unless cleared meanwhile, or stale:
    /// the client's own fallback to its last good answer is never cached here).
    pub async fn get(&self, client: &DataClient, trace: &TraceHeaders) -> Result<DataAnswer, DataError> {
        if self.ttl.is_zero() {
            return client.fetch(trace).await;
        }
        let generation = {
            let inner = self.lock();
            if let Some(entry) = inner.entry.as_ref().filter(|e| e.expires > Instant::now()) {
                tracing::debug!("data answer served from the cache");
                return Ok(DataAnswer { data: entry.value.clone(), stale_age: None });
            }
            inner.generation
        };
        let answer = client.fetch(trace).await?;
        let mut inner = self.lock();
        if inner.generation == generation && answer.stale_age.is_none() {
            inner.entry = Some(Entry { value: answer.data.clone(), expires: Instant::now() + self.ttl });
        }
        Ok(answer)
    }

    /// Forgets the cached answer; fetches already under way will not store theirs.
    pub fn invalidate(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.entry = None;
    }
}
