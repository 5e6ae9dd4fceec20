//! The insights the data agent keeps: item popularity overall and per category, item–item co-occurrence, and each
//! user's items. Built from a [`DataSet`] and then updated incrementally, batch by batch ([`Insights::apply`]):
//! applying interactions in batches gives exactly the insights that building from all of them at once gives.
//!
//! What is kept, and its bounds:
//! - popularity: the sum of interaction weights per item, and the [`POPULAR_K`] most popular items overall and per
//!   category (a bounded top-k list, exact because popularity only grows);
//! - co-occurrence: when a user interacts with an item for the first time, it is paired with the user's previous
//!   [`CO_OCCURRENCE_WINDOW`] new items; each item keeps its most frequent partners in [`CO_OCCURRENCE_COUNTERS`]
//!   counters (the Space-Saving algorithm). A pair is counted once per user, so the count is "users who chose
//!   both, close together", and the window keeps a long history from pairing everything with everything;
//! - per user: each distinct item with its summed weight, number of interactions and latest time, and the window.
//!
//! Memory is therefore proportional to items × counters plus distinct (user, item) pairs, whatever the number of
//! interactions; `bench/recsys.sh` measures it.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use crate::{
    catalog::{Catalog, CategoryIdx, ItemIdx},
    dataset::{DataSet, Limits, UserIdx, Users},
    fingerprint,
    topk::{Ranked, SpaceSaving, TopK},
    validate::{self, FieldError},
    wire::{
        Candidate, CategoryCandidates, CategorySummary, HistoryItem, InsightsSummary, Neighbour, Neighbours,
        NewInteraction, UserInsights,
    },
};

/// How many of the most popular items are kept, overall and per category.
pub const POPULAR_K: usize = 250;
/// How many of a user's previous new items a new item is paired with. On the default data set 10 evaluates as
/// well as 20 (and 5 a little worse) while pairing less, which is the bulk of the processing time.
pub const CO_OCCURRENCE_WINDOW: usize = 10;
/// How many partners each item keeps counting. On the default data set 32 counters lose a sixth of v2's nDCG@10
/// (popular items crowd the partners out), while 64 or 96 bring nothing more.
pub const CO_OCCURRENCE_COUNTERS: usize = 48;
/// How many of the user's latest items [`UserInsights::history`] lists.
pub const HISTORY_LIMIT: usize = 10;
/// How many neighbours [`UserInsights::neighbours`] lists per history item.
pub const NEIGHBOURS: usize = 10;
/// Largest `limit` of a [`UserQuery`] (the recommendation agent's bound on `limit`).
pub const MAX_LIMIT: usize = 100;
/// Most categories in a [`UserQuery`] (the recommendation agent's bound on preferred categories).
pub const MAX_CATEGORIES: usize = 10;
/// Most rows in one batch of new interactions.
pub const MAX_BATCH: usize = 1000;

/// A figure in [0, 1] rounded to six decimals: the JSON of a [`UserInsights`] is about 15 % shorter than with all
/// 17 digits, and no ranking needs more.
fn for_the_wire(figure: f64) -> f64 {
    (figure * 1e6).round() / 1e6
}

/// What one user did with one item.
#[derive(Debug, Clone, PartialEq)]
struct UserItem {
    item: ItemIdx,
    weight: f64,
    interactions: u32,
    last_time: u64,
    /// Arrival order of the latest interaction: breaks ties between equal times.
    last_seq: u64,
}

impl UserItem {
    /// Latest first.
    fn recency_order(&self, other: &Self) -> std::cmp::Ordering {
        (other.last_time, other.last_seq).cmp(&(self.last_time, self.last_seq))
    }
}

/// One user's items, sorted by item for lookups, and their latest new items for co-occurrence.
#[derive(Debug, Clone, Default, PartialEq)]
struct Profile {
    items: Vec<UserItem>,
    window: VecDeque<ItemIdx>,
}

impl Profile {
    fn has(&self, item: ItemIdx) -> bool {
        self.items.binary_search_by_key(&item, |entry| entry.item).is_ok()
    }

    /// The `n` items interacted with most recently, latest first.
    fn latest(&self, n: usize) -> Vec<&UserItem> {
        let mut items: Vec<&UserItem> = self.items.iter().collect();
        if items.len() > n && n > 0 {
            items.select_nth_unstable_by(n - 1, |a, b| a.recency_order(b));
        }
        items.truncate(n);
        items.sort_by(|a, b| a.recency_order(b));
        items
    }
}

/// What a model input is asked for.
#[derive(Debug, Clone, Copy)]
pub struct UserQuery<'a> {
    /// The user.
    pub user: &'a str,
    /// How many candidates per popularity list (the number of recommendations wanted), 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// The user's preferred categories, at most [`MAX_CATEGORIES`]; a repeated one is answered once.
    pub categories: &'a [String],
    /// How many neighbours of each history item, 0 to [`NEIGHBOURS`]: a model that reads none (v1, see
    /// [`crate::Recommender::neighbours`]) asks for none, which spares most of the answer's size and cost.
    pub neighbours: usize,
}

impl<'a> UserQuery<'a> {
    /// A query for everything a model may read: [`NEIGHBOURS`] neighbours of each history item.
    pub fn new(user: &'a str, limit: usize, categories: &'a [String]) -> Self {
        Self { user, limit, categories, neighbours: NEIGHBOURS }
    }
}

/// Why a [`UserQuery`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A malformed user id.
    #[error("`user` {0}")]
    User(FieldError),
    /// `limit` out of range.
    #[error("`limit` must be between 1 and {MAX_LIMIT}")]
    Limit,
    /// Too many categories.
    #[error("at most {MAX_CATEGORIES} categories may be given")]
    TooManyCategories,
    /// `neighbours` out of range.
    #[error("`neighbours` must be between 0 and {NEIGHBOURS}")]
    Neighbours,
    /// A malformed category name.
    #[error("category {index} {error}")]
    Category {
        /// Its position in the query.
        index: usize,
        /// The rule broken.
        error: FieldError,
    },
}

/// One refused row of a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {row}: `{field}` {error}")]
pub struct RowError {
    /// The row's position in the batch, from 0.
    pub row: usize,
    /// `user`, `item`, `weight` or `time`.
    pub field: &'static str,
    /// The rule broken.
    pub error: FieldError,
}

/// Why a batch was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// No row at all.
    #[error("the batch is empty")]
    Empty,
    /// More than [`MAX_BATCH`] rows.
    #[error("a batch holds at most {MAX_BATCH} interactions")]
    TooLarge,
    /// Rows that break a rule (every one of them, in row order).
    #[error("{}", rows_message(.0))]
    Rows(Vec<RowError>),
    /// The batch would bring the number of users past the bound.
    #[error("no room for new users: at most {max} are kept")]
    TooManyUsers {
        /// The bound.
        max: usize,
    },
}

fn rows_message(rows: &[RowError]) -> String {
    match rows {
        [] => "invalid rows".to_owned(),
        [only] => only.to_string(),
        [first, ..] => format!("{} invalid rows, the first: {first}", rows.len()),
    }
}

/// What [`Insights::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// The insights' version after the batch.
    pub version: u64,
    /// Rows applied (all of the batch).
    pub interactions: usize,
    /// Users seen for the first time.
    pub new_users: usize,
}

/// The processed data: popularity, co-occurrence and user histories over one catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Insights {
    catalog: Arc<Catalog>,
    max_users: usize,
    users: Users,
    profiles: Vec<Profile>,
    popularity: Vec<f64>,
    /// Distinct users per item: the audience size that co-occurrence is normalised by.
    audience: Vec<u32>,
    popular: TopK,
    popular_by_category: Vec<TopK>,
    co_occurrence: SpaceSaving,
    interactions: u64,
    version: u64,
    /// The content fingerprint ([`crate::fingerprint`]): of the data set built from, chained with each batch.
    fingerprint: u64,
}

impl Insights {
    /// Empty insights over `catalog`, keeping at most `limits.max_users` users.
    pub fn new(catalog: Arc<Catalog>, limits: &Limits) -> Self {
        let items = catalog.len();
        Self {
            // Users are addressed by u32 indices.
            max_users: limits.max_users.min(u32::MAX as usize),
            users: Users::default(),
            profiles: Vec::new(),
            popularity: vec![0.0; items],
            audience: vec![0; items],
            popular: TopK::new(POPULAR_K),
            popular_by_category: vec![TopK::new(POPULAR_K); catalog.categories().len()],
            co_occurrence: SpaceSaving::new(items, CO_OCCURRENCE_COUNTERS),
            interactions: 0,
            version: 0,
            fingerprint: fingerprint::Fnv1a::default().finish(),
            catalog,
        }
    }

    /// The insights of every interaction of `dataset`, in its (time) order; version 0.
    pub fn build(dataset: &DataSet, limits: &Limits) -> Self {
        let mut insights = Self::new(Arc::clone(dataset.catalog()), limits);
        // Users are interned in order of first interaction, as batches would intern them.
        let mut users: Vec<Option<UserIdx>> = vec![None; dataset.users().len()];
        for interaction in dataset.interactions() {
            let user = *users[interaction.user.index()]
                .get_or_insert_with(|| insights.users.intern(dataset.users().id(interaction.user)));
            insights.record(user, interaction.item, f64::from(interaction.weight), interaction.time);
        }
        insights.fingerprint = fingerprint::of_dataset(dataset);
        insights
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The users seen.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// Number of interactions processed.
    pub fn interactions(&self) -> u64 {
        self.interactions
    }

    /// Changes with every applied batch (0 right after [`Insights::build`]).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The content fingerprint: equal for insights built from the same data set with the same batches applied
    /// since, and (but for a 64-bit hash collision) different otherwise. See [`crate::fingerprint`].
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The strong HTTP entity tag of every answer computed from these insights, `"<fingerprint>-<version>"`
    /// (16 hex digits): it changes whenever an answer could, unlike the version alone (which restarts at 0 in a
    /// restarted process and repeats across replicas that applied different batches).
    pub fn etag(&self) -> String {
        format!("\"{:016x}-{}\"", self.fingerprint, self.version)
    }

    /// Applies a batch of new interactions, all or nothing: every row is checked first and the first problem
    /// stops the whole batch. Rows without a time get `now` (seconds since 1970).
    pub fn apply(&mut self, batch: &[NewInteraction], now: u64) -> Result<Applied, BatchError> {
        if batch.is_empty() {
            return Err(BatchError::Empty);
        }
        if batch.len() > MAX_BATCH {
            return Err(BatchError::TooLarge);
        }
        let mut rows = Vec::with_capacity(batch.len());
        let mut errors = Vec::new();
        for (row, new) in batch.iter().enumerate() {
            let mut check = |field, result: Result<(), FieldError>| {
                result.map_err(|error| errors.push(RowError { row, field, error })).is_ok()
            };
            let user_ok = check("user", validate::id(&new.user));
            let item =
                validate::id(&new.item).and_then(|()| self.catalog.find(&new.item).ok_or(FieldError::UnknownItem));
            check("item", item.map(|_| ()));
            let weight_ok = check("weight", validate::weight(new.weight));
            let time = new.time.unwrap_or(now);
            let time_ok = check("time", validate::time(time));
            if let (true, Ok(item), true, true) = (user_ok, item, weight_ok, time_ok) {
                rows.push((new.user.as_str(), item, new.weight, time));
            }
        }
        if !errors.is_empty() {
            return Err(BatchError::Rows(errors));
        }
        let new_users: HashSet<&str> =
            rows.iter().map(|row| row.0).filter(|user| self.users.find(user).is_none()).collect();
        if self.users.len() + new_users.len() > self.max_users {
            return Err(BatchError::TooManyUsers { max: self.max_users });
        }
        for &(user, item, weight, time) in &rows {
            let user = self.users.intern(user);
            self.record(user, item, weight, time);
        }
        let applied = rows.iter().map(|&(user, item, weight, time)| (user, &*self.catalog.item(item).id, weight, time));
        self.fingerprint = fingerprint::chain(self.fingerprint, applied);
        self.version += 1;
        Ok(Applied { version: self.version, interactions: rows.len(), new_users: new_users.len() })
    }

    /// Folds one interaction into every insight.
    fn record(&mut self, user: UserIdx, item: ItemIdx, weight: f64, time: u64) {
        let seq = self.interactions;
        self.interactions += 1;
        if user.index() == self.profiles.len() {
            self.profiles.push(Profile::default());
        }
        let profile = &mut self.profiles[user.index()];
        match profile.items.binary_search_by_key(&item, |entry| entry.item) {
            Ok(position) => {
                let entry = &mut profile.items[position];
                entry.weight += weight;
                entry.interactions = entry.interactions.saturating_add(1);
                if time >= entry.last_time {
                    entry.last_time = time;
                    entry.last_seq = seq;
                }
            }
            Err(position) => {
                profile
                    .items
                    .insert(position, UserItem { item, weight, interactions: 1, last_time: time, last_seq: seq });
                self.audience[item.index()] += 1;
                for &other in &profile.window {
                    self.co_occurrence.add(other, item);
                    self.co_occurrence.add(item, other);
                }
                if profile.window.len() == CO_OCCURRENCE_WINDOW {
                    profile.window.pop_front();
                }
                profile.window.push_back(item);
            }
        }
        let old = self.popularity[item.index()];
        let new = old + weight;
        self.popularity[item.index()] = new;
        let rank = self.catalog.id_rank(item);
        self.popular.raise(item, rank, old, new);
        self.popular_by_category[self.catalog.category_of(item).index()].raise(item, rank, old, new);
    }

    /// Everything a model needs to recommend to `query.user`. A user never seen is not an error: it gets an
    /// empty history (a cold user).
    pub fn user_insights(&self, query: &UserQuery) -> Result<UserInsights, QueryError> {
        validate::id(query.user).map_err(QueryError::User)?;
        if !(1..=MAX_LIMIT).contains(&query.limit) {
            return Err(QueryError::Limit);
        }
        if query.categories.len() > MAX_CATEGORIES {
            return Err(QueryError::TooManyCategories);
        }
        for (index, category) in query.categories.iter().enumerate() {
            validate::asked_category(category).map_err(|error| QueryError::Category { index, error })?;
        }
        if query.neighbours > NEIGHBOURS {
            return Err(QueryError::Neighbours);
        }
        let profile = self.users.find(query.user).map(|user| &self.profiles[user.index()]);
        let seen = |item: ItemIdx| profile.is_some_and(|profile| profile.has(item));
        let latest = profile.map(|profile| profile.latest(HISTORY_LIMIT)).unwrap_or_default();

        let all = self.catalog.indices();
        let popular = self.popular_unseen(&self.popular, all, self.catalog.len(), query.limit, &seen);
        let mut asked = HashSet::new();
        let popular_in = query
            .categories
            .iter()
            .filter(|category| asked.insert(category.as_str()))
            .map(|category| CategoryCandidates {
                category: category.clone(),
                items: match self.catalog.find_category(category) {
                    Some(idx) => self.popular_in(idx, query.limit, &seen),
                    None => Vec::new(),
                },
            })
            .collect();
        let neighbours = latest
            .iter()
            .map(|entry| Neighbours {
                item: self.catalog.item(entry.item).id.clone(),
                neighbours: match query.neighbours {
                    0 => Vec::new(),
                    n => self.neighbours(entry.item, n, &seen),
                },
            })
            .collect();
        let history = latest
            .iter()
            .map(|entry| {
                let item = self.catalog.item(entry.item);
                HistoryItem {
                    id: item.id.clone(),
                    title: item.title.clone(),
                    category: item.category.clone(),
                    weight: entry.weight,
                    interactions: entry.interactions,
                    last_time: entry.last_time,
                }
            })
            .collect();
        Ok(UserInsights {
            user: query.user.to_owned(),
            version: self.version,
            interacted: profile.map_or(0, |profile| profile.items.len()),
            history,
            popular,
            popular_in,
            neighbours,
        })
    }

    /// The items most often chosen with `id` (none if the catalog has no such item), most similar first.
    pub fn similar_items(&self, id: &str, limit: usize) -> Option<Vec<Neighbour>> {
        self.catalog.find(id).map(|item| self.neighbours(item, limit, &|_| false))
    }

    /// Popularity overall and per category, `k` items each.
    pub fn summary(&self, k: usize) -> InsightsSummary {
        let top = |list: &TopK| list.entries().iter().take(k).map(|entry| self.candidate(entry.item)).collect();
        InsightsSummary {
            version: self.version,
            items: self.catalog.len(),
            users: self.users.len(),
            interactions: self.interactions,
            popular: top(&self.popular),
            categories: self
                .catalog
                .categories()
                .iter()
                .zip(&self.popular_by_category)
                .enumerate()
                .map(|(idx, (name, list))| CategorySummary {
                    category: name.clone(),
                    items: self.catalog.items_in(CategoryIdx(idx as u32)).len(),
                    popular: top(list),
                })
                .collect(),
        }
    }

    /// Popularity relative to the most popular item.
    fn relative_popularity(&self, item: ItemIdx) -> f64 {
        match self.popular.entries().first() {
            Some(best) if best.score > 0.0 => for_the_wire(self.popularity[item.index()] / best.score),
            _ => 0.0,
        }
    }

    fn candidate(&self, idx: ItemIdx) -> Candidate {
        let item = self.catalog.item(idx);
        Candidate {
            id: item.id.clone(),
            title: item.title.clone(),
            category: item.category.clone(),
            popularity: self.relative_popularity(idx),
        }
    }

    fn popular_in(&self, category: CategoryIdx, limit: usize, seen: &dyn Fn(ItemIdx) -> bool) -> Vec<Candidate> {
        let pool = self.catalog.items_in(category);
        self.popular_unseen(&self.popular_by_category[category.index()], pool.iter().copied(), pool.len(), limit, seen)
    }

    /// The `limit` most popular items of `pool` (of `pool_len` items) that are not `seen`: from the top list when it
    /// has enough, otherwise (a user who has seen most popular items, or items nobody chose yet) from a scan.
    fn popular_unseen(
        &self,
        top: &TopK,
        pool: impl Iterator<Item = ItemIdx>,
        pool_len: usize,
        limit: usize,
        seen: &dyn Fn(ItemIdx) -> bool,
    ) -> Vec<Candidate> {
        let mut chosen: Vec<ItemIdx> =
            top.entries().iter().map(|entry| entry.item).filter(|&item| !seen(item)).take(limit).collect();
        if chosen.len() < limit && top.entries().len() < pool_len {
            let mut rest: Vec<Ranked> = pool
                .filter(|&item| !seen(item))
                .map(|item| Ranked { score: self.popularity[item.index()], rank: self.catalog.id_rank(item), item })
                .collect();
            if rest.len() > limit {
                rest.select_nth_unstable_by(limit - 1, Ranked::order);
                rest.truncate(limit);
            }
            rest.sort_by(Ranked::order);
            chosen = rest.iter().map(|entry| entry.item).collect();
        }
        chosen.into_iter().map(|item| self.candidate(item)).collect()
    }

    /// The `limit` items most similar to `item` that are not `seen`.
    fn neighbours(&self, item: ItemIdx, limit: usize, seen: &dyn Fn(ItemIdx) -> bool) -> Vec<Neighbour> {
        let audience = f64::from(self.audience[item.index()]);
        let mut similar: Vec<Ranked> = self
            .co_occurrence
            .counters(item)
            .filter(|counter| counter.guaranteed() > 0 && !seen(counter.item))
            .map(|counter| Ranked {
                // Both audiences are at least the guaranteed count, so this is in (0, 1].
                score: f64::from(counter.guaranteed())
                    / (audience * f64::from(self.audience[counter.item.index()])).sqrt(),
                rank: self.catalog.id_rank(counter.item),
                item: counter.item,
            })
            .collect();
        // Only the best `limit` are answered: picked first, so only they are sorted (the order is total, so the
        // list is the one a full sort would start with).
        if similar.len() > limit && limit > 0 {
            similar.select_nth_unstable_by(limit - 1, Ranked::order);
        }
        similar.truncate(limit);
        similar.sort_by(Ranked::order);
        similar
            .iter()
            .map(|entry| {
                let candidate = self.candidate(entry.item);
                Neighbour {
                    id: candidate.id,
                    title: candidate.title,
                    category: candidate.category,
                    popularity: candidate.popularity,
                    similarity: for_the_wire(entry.score),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::{
        generate::{GeneratorConfig, generate},
        load,
    };

    fn small() -> DataSet {
        generate(&GeneratorConfig { items: 120, users: 80, interactions: 2_000, ..GeneratorConfig::DEFAULT }).unwrap()
    }

    fn rows(dataset: &DataSet) -> Vec<NewInteraction> {
        dataset
            .interactions()
            .iter()
            .map(|i| NewInteraction {
                user: dataset.users().id(i.user).to_owned(),
                item: dataset.catalog().item(i.item).id.clone(),
                weight: f64::from(i.weight),
                time: Some(i.time),
            })
            .collect()
    }

    fn query<'a>(user: &'a str, limit: usize, categories: &'a [String]) -> UserQuery<'a> {
        UserQuery::new(user, limit, categories)
    }

    /// A data set from items `(id, category)` and interactions `(user, item)` with weight 1, one second apart.
    fn tiny(items: &[(&str, &str)], interactions: &[(&str, &str)]) -> DataSet {
        let mut text = String::new();
        for (id, category) in items {
            text +=
                &format!("{{\"type\":\"item\",\"id\":\"{id}\",\"title\":\"T {id}\",\"category\":\"{category}\"}}\n");
        }
        for (time, (user, item)) in interactions.iter().enumerate() {
            text += &format!(
                "{{\"type\":\"interaction\",\"user\":\"{user}\",\"item\":\"{item}\",\"weight\":1,\"time\":{time}}}\n"
            );
        }
        load::read(text.as_bytes(), "tiny", &Limits::default()).unwrap()
    }

    fn ids<T>(list: &[T], id: impl Fn(&T) -> &str) -> Vec<&str> {
        list.iter().map(id).collect()
    }

    #[test]
    fn applying_in_batches_equals_building_at_once() {
        let dataset = small();
        let built = Insights::build(&dataset, &Limits::default());
        let mut incremental = Insights::new(Arc::clone(dataset.catalog()), &Limits::default());
        let rows = rows(&dataset);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut start = 0;
        while start < rows.len() {
            let end = (start + rng.usize(1..=300)).min(rows.len());
            incremental.apply(&rows[start..end], 0).unwrap();
            start = end;
        }
        assert!(incremental.version() > 1);
        // Batch boundaries are part of the fingerprint (it chains batches); the content is what must be equal.
        assert_ne!(incremental.fingerprint, built.fingerprint);
        incremental.version = built.version;
        incremental.fingerprint = built.fingerprint;
        assert_eq!(incremental, built);
    }

    #[test]
    fn popularity_lists_equal_a_recomputation() {
        let dataset = small();
        let insights = Insights::build(&dataset, &Limits::default());
        let catalog = dataset.catalog();
        let mut popularity: HashMap<&str, f64> = HashMap::new();
        for i in dataset.interactions() {
            *popularity.entry(&catalog.item(i.item).id).or_default() += f64::from(i.weight);
        }
        let exact = |category: Option<&str>| {
            let mut all: Vec<(&str, f64)> = catalog
                .items()
                .iter()
                .filter(|item| category.is_none_or(|c| item.category == c))
                .filter_map(|item| popularity.get(item.id.as_str()).map(|&p| (item.id.as_str(), p)))
                .collect();
            all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            all.into_iter().take(15).map(|(id, _)| id.to_owned()).collect::<Vec<_>>()
        };
        let summary = insights.summary(15);
        assert_eq!(ids(&summary.popular, |c| &c.id), exact(None));
        assert_eq!(summary.popular[0].popularity, 1.0);
        for category in &summary.categories {
            assert_eq!(ids(&category.popular, |c| &c.id), exact(Some(&category.category)), "{}", category.category);
        }
        assert_eq!(summary.categories.iter().map(|c| c.items).sum::<usize>(), catalog.len());
    }

    #[test]
    fn co_occurrence_is_users_who_chose_both_over_their_audiences() {
        let dataset = tiny(
            &[("a", "x"), ("b", "x"), ("c", "y"), ("d", "y")],
            &[("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "a"), ("u3", "a"), ("u3", "c")],
        );
        let insights = Insights::build(&dataset, &Limits::default());
        let similar = insights.similar_items("a", 10).unwrap();
        let found: Vec<_> = similar.iter().map(|n| (n.id.as_str(), n.similarity)).collect();
        // a: 3 users, b: 2, c: 1; (a, b) chosen by 2 users, (a, c) by 1. The repeat of a by u2 counts once.
        assert_eq!(found, [("b", 0.816497), ("c", 0.57735)], "2 / √6 and 1 / √3");
        assert_eq!(insights.similar_items("d", 10), Some(Vec::new()));
        assert_eq!(insights.similar_items("nope", 10), None);
    }

    #[test]
    fn the_closest_neighbours_are_the_start_of_the_whole_ranking() {
        let dataset = small();
        let insights = Insights::build(&dataset, &Limits::default());
        let mut compared = 0;
        for item in dataset.catalog().items() {
            // More than an item's counters: every partner, fully sorted.
            let all = insights.similar_items(&item.id, CO_OCCURRENCE_COUNTERS + 1).unwrap();
            for k in [1, 3, NEIGHBOURS] {
                let best = insights.similar_items(&item.id, k).unwrap();
                assert_eq!(best[..], all[..all.len().min(k)], "{} k={k}", item.id);
                compared += usize::from(all.len() > k);
            }
        }
        assert!(compared > 100, "lists longer than k were compared: {compared}");
    }

    #[test]
    fn only_items_close_in_a_history_are_paired() {
        let items: Vec<String> = (0..CO_OCCURRENCE_WINDOW + 2).map(|n| format!("i{n}")).collect();
        let catalog: Vec<(&str, &str)> = items.iter().map(|id| (id.as_str(), "c")).collect();
        let history: Vec<(&str, &str)> = items.iter().map(|id| ("u1", id.as_str())).collect();
        let insights = Insights::build(&tiny(&catalog, &history), &Limits::default());
        let partners = |id: &str| insights.similar_items(id, 100).unwrap().len();
        assert_eq!(partners("i0"), CO_OCCURRENCE_WINDOW, "the last item came too late to pair with the first");
        assert_eq!(partners("i1"), CO_OCCURRENCE_WINDOW + 1);
    }

    #[test]
    fn user_insights_leave_out_what_the_user_has_seen() {
        let dataset = small();
        let insights = Insights::build(&dataset, &Limits::default());
        let user = dataset.users().id(dataset.interactions().last().unwrap().user).to_owned();
        let categories = vec![dataset.catalog().categories()[1].clone(), "no such category".to_owned()];
        let answer = insights.user_insights(&query(&user, 7, &categories)).unwrap();
        let seen: HashSet<&str> = dataset
            .interactions()
            .iter()
            .filter(|i| dataset.users().id(i.user) == user)
            .map(|i| dataset.catalog().item(i.item).id.as_str())
            .collect();
        assert_eq!(answer.interacted, seen.len());
        assert_eq!(answer.history.len(), seen.len().min(HISTORY_LIMIT));
        assert!(answer.history.windows(2).all(|w| w[0].last_time >= w[1].last_time), "latest first");
        assert_eq!(answer.popular.len(), 7);
        assert_eq!(answer.popular_in.len(), 2);
        assert_eq!(answer.popular_in[0].items.len(), 7);
        assert!(answer.popular_in[0].items.iter().all(|c| c.category == categories[0]));
        assert_eq!(answer.popular_in[1].items, []);
        assert_eq!(ids(&answer.neighbours, |n| &n.item), ids(&answer.history, |h| &h.id));
        let offered = answer
            .popular
            .iter()
            .map(|c| c.id.as_str())
            .chain(answer.popular_in.iter().flat_map(|p| p.items.iter().map(|c| c.id.as_str())))
            .chain(answer.neighbours.iter().flat_map(|n| n.neighbours.iter().map(|c| c.id.as_str())));
        for id in offered {
            assert!(!seen.contains(id), "{id} was offered to {user}, who has seen it");
        }
    }

    #[test]
    fn fewer_neighbours_are_the_first_of_the_full_lists_and_change_nothing_else() {
        let dataset = small();
        let insights = Insights::build(&dataset, &Limits::default());
        let user = dataset.users().id(dataset.interactions().last().unwrap().user).to_owned();
        let full = insights.user_insights(&query(&user, 5, &[])).unwrap();
        assert!(full.neighbours.iter().any(|n| n.neighbours.len() > 2), "the user has neighbours to cut");
        for n in [0, 2] {
            let fewer = insights.user_insights(&UserQuery { neighbours: n, ..query(&user, 5, &[]) }).unwrap();
            assert_eq!(ids(&fewer.neighbours, |n| &n.item), ids(&full.neighbours, |n| &n.item));
            for (few, all) in fewer.neighbours.iter().zip(&full.neighbours) {
                assert_eq!(few.neighbours[..], all.neighbours[..all.neighbours.len().min(n)]);
            }
            assert_eq!(UserInsights { neighbours: full.neighbours.clone(), ..fewer }, full);
        }
    }

    #[test]
    fn a_cold_user_gets_the_most_popular_items() {
        let insights = Insights::build(&small(), &Limits::default());
        let answer = insights.user_insights(&query("newcomer", 5, &[])).unwrap();
        assert_eq!(answer.interacted, 0);
        assert_eq!((answer.history.len(), answer.neighbours.len()), (0, 0));
        assert_eq!(answer.popular, insights.summary(5).popular);
    }

    #[test]
    fn items_nobody_chose_fill_the_list_when_needed() {
        let dataset = tiny(&[("a", "x"), ("b", "x"), ("c", "x"), ("d", "y")], &[("u1", "a"), ("u2", "b"), ("u2", "c")]);
        let insights = Insights::build(&dataset, &Limits::default());
        let answer = insights.user_insights(&query("u2", 5, &["x".to_owned()])).unwrap();
        assert_eq!(ids(&answer.popular, |c| &c.id), ["a", "d"], "popular first, then by id; b and c seen");
        assert_eq!(answer.popular[1].popularity, 0.0);
        assert_eq!(ids(&answer.popular_in[0].items, |c| &c.id), ["a"]);
    }

    #[test]
    fn repeated_categories_are_answered_once() {
        let insights = Insights::build(&small(), &Limits::default());
        let category = insights.catalog().categories()[0].clone();
        let answer = insights.user_insights(&query("u1", 3, &[category.clone(), category])).unwrap();
        assert_eq!(answer.popular_in.len(), 1);
    }

    #[test]
    fn malformed_queries_are_refused() {
        let insights = Insights::build(&small(), &Limits::default());
        assert_eq!(insights.user_insights(&query("a b", 5, &[])), Err(QueryError::User(FieldError::Id)));
        assert_eq!(insights.user_insights(&query("u1", 0, &[])), Err(QueryError::Limit));
        assert_eq!(insights.user_insights(&query("u1", MAX_LIMIT + 1, &[])), Err(QueryError::Limit));
        let many = vec!["c".to_owned(); MAX_CATEGORIES + 1];
        assert_eq!(insights.user_insights(&query("u1", 5, &many)), Err(QueryError::TooManyCategories));
        let too_many_neighbours = UserQuery { neighbours: NEIGHBOURS + 1, ..query("u1", 5, &[]) };
        assert_eq!(insights.user_insights(&too_many_neighbours), Err(QueryError::Neighbours));
        let blank = vec!["books".to_owned(), String::new()];
        assert_eq!(
            insights.user_insights(&query("u1", 5, &blank)),
            Err(QueryError::Category { index: 1, error: FieldError::Empty })
        );
        // A name no catalog category can have (padded) is asked like any other and matches nothing.
        let padded = vec![" books".to_owned()];
        let answer = insights.user_insights(&query("u1", 5, &padded)).unwrap();
        assert_eq!(answer.popular_in.len(), 1);
        assert!(answer.popular_in[0].items.is_empty());
    }

    #[test]
    fn a_batch_with_a_bad_row_changes_nothing() {
        let dataset = small();
        let mut insights = Insights::build(&dataset, &Limits::default());
        let before = insights.clone();
        let item = dataset.catalog().items()[0].id.clone();
        let good = NewInteraction { user: "u1".to_owned(), item: item.clone(), weight: 1.0, time: None };
        let batch = [
            good.clone(),
            NewInteraction { item: "missing".to_owned(), ..good.clone() },
            NewInteraction { weight: f64::NAN, user: "bad id".to_owned(), ..good.clone() },
            NewInteraction { time: Some(u64::MAX), ..good.clone() },
        ];
        let err = insights.apply(&batch, 1_700_000_000).unwrap_err();
        assert_eq!(
            err,
            BatchError::Rows(vec![
                RowError { row: 1, field: "item", error: FieldError::UnknownItem },
                RowError { row: 2, field: "user", error: FieldError::Id },
                RowError { row: 2, field: "weight", error: FieldError::NotFinite },
                RowError { row: 3, field: "time", error: FieldError::TooLate },
            ])
        );
        assert_eq!(err.to_string(), "4 invalid rows, the first: row 1: `item` is not an item of the catalog");
        assert_eq!(insights.apply(&[], 0), Err(BatchError::Empty));
        assert_eq!(insights.apply(&vec![good.clone(); MAX_BATCH + 1], 0), Err(BatchError::TooLarge));
        assert_eq!(insights, before);

        let applied = insights.apply(&[good], 1_700_000_000).unwrap();
        assert_eq!(applied, Applied { version: 1, interactions: 1, new_users: 0 });
        assert_eq!(insights.interactions(), before.interactions() + 1);
    }

    #[test]
    fn the_number_of_users_is_bounded() {
        let dataset = tiny(&[("a", "x")], &[("u1", "a")]);
        let mut insights = Insights::build(&dataset, &Limits { max_users: 2, ..Limits::default() });
        let row = |user: &str| NewInteraction { user: user.to_owned(), item: "a".to_owned(), weight: 1.0, time: None };
        assert_eq!(insights.apply(&[row("u2"), row("u3")], 5), Err(BatchError::TooManyUsers { max: 2 }));
        let applied = insights.apply(&[row("u2"), row("u2"), row("u1")], 5).unwrap();
        assert_eq!(applied.new_users, 1);
        assert_eq!(insights.users().len(), 2);
        assert_eq!(insights.apply(&[row("u3")], 5), Err(BatchError::TooManyUsers { max: 2 }));
    }

    #[test]
    fn a_batch_shows_in_the_next_answer() {
        let dataset = tiny(&[("a", "x"), ("b", "x"), ("c", "x")], &[("u1", "a"), ("u2", "a"), ("u2", "b")]);
        let mut insights = Insights::build(&dataset, &Limits::default());
        let before = insights.user_insights(&query("u3", 3, &[])).unwrap();
        assert_eq!(ids(&before.popular, |c| &c.id), ["a", "b", "c"]);
        let heavy = NewInteraction { user: "u3".to_owned(), item: "c".to_owned(), weight: 10.0, time: None };
        insights.apply(&[heavy], 100).unwrap();
        let after = insights.user_insights(&query("u4", 3, &[])).unwrap();
        assert_eq!(ids(&after.popular, |c| &c.id), ["c", "a", "b"]);
        assert_eq!(after.version, 1);
        let u3 = insights.user_insights(&query("u3", 3, &[])).unwrap();
        assert_eq!(ids(&u3.history, |h| &h.id), ["c"]);
        assert_eq!(u3.history[0].last_time, 100, "a row without time gets the time of the batch");
    }
}
