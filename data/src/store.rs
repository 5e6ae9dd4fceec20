//! The data the agent serves, changeable at run time with `PUT /data`; every change gets the next version.

use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the agent serves before anyone changes it (the original tutorial's answer).
pub const INITIAL: &str = "some_insights";

/// The current data and its version (0 until the first change).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"version": 1, "processed_data": "fresh_insights"}))]
pub struct Snapshot {
    /// Number of changes since the process started.
    pub version: u64,
    /// The insights.
    pub processed_data: String,
}

/// The in-process store: readers never wait on a change for longer than a copy of a short string.
#[derive(Debug, Clone)]
pub struct DataStore(Arc<RwLock<Snapshot>>);

impl Default for DataStore {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(Snapshot { version: 0, processed_data: INITIAL.to_owned() })))
    }
}

impl DataStore {
    /// The current snapshot.
    pub fn current(&self) -> Snapshot {
        self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Replaces the data and returns the new snapshot.
    pub fn replace(&self, processed_data: String) -> Snapshot {
        let mut guard = self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.version += 1;
        guard.processed_data = processed_data;
        guard.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_bumps_the_version() {
        let store = DataStore::default();
        assert_eq!(store.current().processed_data, INITIAL);
        assert_eq!(store.replace("a".to_owned()).version, 1);
        assert_eq!(store.replace("b".to_owned()), Snapshot { version: 2, processed_data: "b".to_owned() });
    }
}
