//! A data set: a catalog, the users seen, and their interactions with items, in time order. Read from `DATA_FILE`
//! (see [`mod@crate::load`]) or generated (see [`crate::generate`]); [`crate::Insights`] is built from it.

use std::sync::Arc;

use foldhash::HashMap;

use crate::catalog::{Catalog, ItemIdx};

/// Position of a user in a [`Users`] table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserIdx(pub(crate) u32);

impl UserIdx {
    /// The position as an index into per-user vectors.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// The users seen so far: ids interned to dense indices, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Users {
    ids: Vec<String>,
    by_id: HashMap<String, UserIdx>,
}

impl Users {
    /// The user with this id.
    pub fn find(&self, id: &str) -> Option<UserIdx> {
        self.by_id.get(id).copied()
    }

    /// The id of a user.
    pub fn id(&self, user: UserIdx) -> &str {
        &self.ids[user.index()]
    }

    /// Every user id, in index order.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is no user.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The user with this (already validated) id, added if new. Callers bound the number of users far below
    /// `u32::MAX` (see [`Limits::max_users`]).
    pub(crate) fn intern(&mut self, id: &str) -> UserIdx {
        if let Some(&user) = self.by_id.get(id) {
            return user;
        }
        let user = UserIdx(self.ids.len() as u32);
        self.ids.push(id.to_owned());
        self.by_id.insert(id.to_owned(), user);
        user
    }
}

/// One interaction: `user` did something with `item` at `time`, as strong as `weight`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    /// Who.
    pub user: UserIdx,
    /// With what.
    pub item: ItemIdx,
    /// How strong a signal (0 < weight ≤ [`crate::validate::MAX_WEIGHT`]).
    pub weight: f32,
    /// When, in seconds since 1970.
    pub time: u64,
}

/// Bounds on what a data set may hold, so a file cannot exhaust memory. The defaults allow five times the
/// 100 000-item / 1 000 000-interaction set that `bench/recsys.sh` measures. Counts above `u32::MAX` are read as
/// `u32::MAX`: items, users and interactions are addressed by 32-bit indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line of `DATA_FILE`, in bytes, without its line break.
    pub max_line_bytes: usize,
    /// Most items in the catalog.
    pub max_items: usize,
    /// Most distinct users.
    pub max_users: usize,
    /// Most interactions.
    pub max_interactions: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_line_bytes: 4096, max_items: 500_000, max_users: 1_000_000, max_interactions: 5_000_000 }
    }
}

/// A catalog, its users and their interactions, sorted by time (ties keep their original order).
///
/// Two data sets are equal when they have the same catalog and the same interactions by id, whatever order their
/// users were first seen in (which changes when a data set is written in time order and read back).
#[derive(Debug, Clone)]
pub struct DataSet {
    catalog: Arc<Catalog>,
    users: Users,
    interactions: Vec<Interaction>,
}

impl DataSet {
    /// A data set from parts whose indices are known to be in range; sorts the interactions by time.
    pub(crate) fn from_parts(catalog: Catalog, users: Users, mut interactions: Vec<Interaction>) -> Self {
        debug_assert!(interactions.iter().all(|i| i.item.index() < catalog.len() && i.user.index() < users.len()));
        interactions.sort_by_key(|interaction| interaction.time);
        Self { catalog: Arc::new(catalog), users, interactions }
    }

    /// The same catalog and users with other interactions (a subset of these, for evaluation splits).
    pub(crate) fn with_interactions(&self, interactions: Vec<Interaction>) -> Self {
        Self { catalog: Arc::clone(&self.catalog), users: self.users.clone(), interactions }
    }

    /// The interactions with user and item ids instead of indices.
    fn by_id(&self) -> impl Iterator<Item = (&str, &str, f32, u64)> {
        self.interactions.iter().map(|i| (self.users.id(i.user), &*self.catalog.item(i.item).id, i.weight, i.time))
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The users.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The interactions, oldest first.
    pub fn interactions(&self) -> &[Interaction] {
        &self.interactions
    }
}

impl PartialEq for DataSet {
    fn eq(&self, other: &Self) -> bool {
        self.catalog == other.catalog && self.users.len() == other.users.len() && self.by_id().eq(other.by_id())
    }
}
