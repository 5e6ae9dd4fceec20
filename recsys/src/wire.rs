//! The JSON the agents exchange: what the data agent answers for one user ([`UserInsights`], the input of every
//! model), the overall insights ([`InsightsSummary`]), and the rows of a batch of new interactions
//! ([`NewInteraction`]).
//!
//! Answers are tolerant readers (unknown fields are ignored), so during a rolling upgrade or a canary a newer data
//! agent can add fields without breaking an older recommendation agent. Input from users is strict: a batch row with
//! an unknown field is refused, because a misspelt `wieght` silently defaulting would lose data.

use serde::{Deserialize, Serialize};

/// An item offered as a candidate, with its popularity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Candidate {
    /// Item id.
    pub id: String,
    /// Item title.
    pub title: String,
    /// Item category.
    pub category: String,
    /// Popularity relative to the most popular item of the catalog: 1 for it, 0 for items nobody interacted with.
    pub popularity: f64,
}

/// An item often chosen together with one of the user's items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Neighbour {
    /// Item id.
    pub id: String,
    /// Item title.
    pub title: String,
    /// Item category.
    pub category: String,
    /// Popularity, as in [`Candidate::popularity`].
    pub popularity: f64,
    /// Cosine similarity of the two items' audiences, in (0, 1]: users who chose both, over the geometric mean of
    /// the users who chose each.
    pub similarity: f64,
}

/// An item the user interacted with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryItem {
    /// Item id.
    pub id: String,
    /// Item title (models quote it in their reasons).
    pub title: String,
    /// Item category.
    pub category: String,
    /// Sum of the user's interaction weights with the item.
    pub weight: f64,
    /// Number of the user's interactions with the item.
    pub interactions: u32,
    /// The user's latest interaction with the item, in seconds since 1970.
    pub last_time: u64,
}

/// The neighbours of one item of the user's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Neighbours {
    /// The history item.
    pub item: String,
    /// Its neighbours, most similar first; none that the user interacted with.
    pub neighbours: Vec<Neighbour>,
}

/// The most popular items of one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CategoryCandidates {
    /// The category, as requested (empty `items` when the catalog has no such category).
    pub category: String,
    /// Its most popular items the user has not interacted with, most popular first.
    pub items: Vec<Candidate>,
}

/// Everything a model needs to recommend to one user, and nothing more. See the crate docs for the design.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInsights {
    /// The user.
    pub user: String,
    /// Version of the insights this was computed from (it changes with every applied batch).
    pub version: u64,
    /// Number of distinct items the user interacted with (0 for a user never seen: a cold user).
    pub interacted: usize,
    /// The user's items, latest first, at most [`crate::insights::HISTORY_LIMIT`].
    pub history: Vec<HistoryItem>,
    /// The most popular items the user has not interacted with, most popular first: `limit` of them when the
    /// catalog has that many.
    pub popular: Vec<Candidate>,
    /// For each requested category, in the order asked: its most popular items the user has not interacted with,
    /// up to `limit`.
    pub popular_in: Vec<CategoryCandidates>,
    /// For each item of `history`, in the same order: its closest neighbours the user has not interacted with, at
    /// most [`crate::insights::NEIGHBOURS`].
    pub neighbours: Vec<Neighbours>,
}

/// One row of a batch of new interactions (`POST /interactions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewInteraction {
    /// User id.
    pub user: String,
    /// Item id, which must be in the catalog.
    pub item: String,
    /// How strong a signal, 0 < weight ≤ 1000.
    pub weight: f64,
    /// When, in seconds since 1970; the time the batch is applied when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<u64>,
}

/// The state of a category in [`InsightsSummary`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CategorySummary {
    /// The category.
    pub category: String,
    /// Number of items in it.
    pub items: usize,
    /// Its most popular items, most popular first.
    pub popular: Vec<Candidate>,
}

/// What the insights hold, for people and dashboards rather than for models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InsightsSummary {
    /// Version, as in [`UserInsights::version`].
    pub version: u64,
    /// Number of catalog items.
    pub items: usize,
    /// Number of users seen.
    pub users: usize,
    /// Number of interactions processed.
    pub interactions: u64,
    /// The most popular items overall, most popular first.
    pub popular: Vec<Candidate>,
    /// Every category, in catalog order.
    pub categories: Vec<CategorySummary>,
}
