//! The two bounded structures behind the insights: memory stays proportional to `k` per list, not to the number
//! of interactions.
//!
//! - [`TopK`] keeps the `k` best items of a score that only grows (popularity: weights are positive). For such
//!   scores a bounded list is exact: an item outside it scores at most the list's last entry, and can only enter by
//!   growing past it, which [`TopK::raise`] sees.
//! - [`SpaceSaving`] keeps the most frequent neighbours of one item in a fixed number of counters (Metwally,
//!   Agrawal, El Abbadi, "Efficient computation of frequent and top-k elements in data streams", 2005): when the
//!   counters are full, a new neighbour takes over the smallest counter and inherits its count as a possible
//!   overestimate, which is remembered, so `count - error` is a guaranteed lower bound of the true count, and every
//!   neighbour seen more than `n / capacity` times out of `n` is guaranteed to be kept.
//!
//! Both are written here rather than taken from a crate: they are a few dozen lines each, they must break ties the
//! same way as the rest of the crate (by item id, through [`Catalog::id_rank`](crate::Catalog::id_rank)) so that
//! answers are deterministic, and no well-kept crate offers weighted top-k of growing scores with that control.

use std::cmp::Ordering;

use crate::catalog::ItemIdx;

/// An item with a score and its id rank: orders best first (higher score, then lower id).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ranked {
    pub(crate) score: f64,
    pub(crate) rank: u32,
    pub(crate) item: ItemIdx,
}

impl Ranked {
    /// Best first: the higher score, then the lower id rank (ranks are unique per catalog, so this is total).
    pub(crate) fn order(&self, other: &Self) -> Ordering {
        other.score.total_cmp(&self.score).then(self.rank.cmp(&other.rank))
    }
}

/// The `k` best items of a score that never decreases, best first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TopK {
    k: usize,
    entries: Vec<Ranked>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        Self { k, entries: Vec::with_capacity(k.min(1024)) }
    }

    /// Records that `item` (id rank `rank`) went from `old` to `new` (`new >= old`).
    pub(crate) fn raise(&mut self, item: ItemIdx, rank: u32, old: f64, new: f64) {
        debug_assert!(new >= old);
        let before = Ranked { score: old, rank, item };
        let after = Ranked { score: new, rank, item };
        // A member sits at its old key; keys are unique, so a binary search finds it or proves it absent.
        if old > 0.0
            && let Ok(position) = self.entries.binary_search_by(|entry| entry.order(&before))
        {
            self.entries.remove(position);
        } else if self.entries.len() == self.k {
            match self.entries.last() {
                Some(last) if after.order(last) == Ordering::Less => {
                    self.entries.pop();
                }
                _ => return,
            }
        }
        let position = self.entries.partition_point(|entry| entry.order(&after) == Ordering::Less);
        self.entries.insert(position, after);
    }

    /// The entries, best first.
    pub(crate) fn entries(&self) -> &[Ranked] {
        &self.entries
    }
}

/// One counter: how often `item` was counted, of which up to `error` may have been inherited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counter {
    pub(crate) item: ItemIdx,
    pub(crate) count: u32,
    pub(crate) error: u32,
}

impl Counter {
    /// What is known for certain: the item was counted at least this often.
    pub(crate) fn guaranteed(&self) -> u32 {
        self.count - self.error
    }
}

/// The most frequent items of a stream, in at most `capacity` counters (the capacity is passed by the caller, the
/// same for every list, so it is not stored a hundred thousand times).
///
/// The items are kept apart from their counts: the search for an item, which every update does, then reads a few
/// contiguous cache lines of ids only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SpaceSaving {
    items: Vec<ItemIdx>,
    /// `(count, error)` of `items[i]`.
    counts: Vec<(u32, u32)>,
}

impl SpaceSaving {
    /// Counts one occurrence of `item`.
    pub(crate) fn add(&mut self, item: ItemIdx, capacity: usize) {
        if let Some(position) = self.items.iter().position(|&i| i == item) {
            let count = &mut self.counts[position].0;
            *count = count.saturating_add(1);
        } else if self.items.len() < capacity {
            if self.items.capacity() == self.items.len() {
                // Grow in steps but never past the capacity: most items have few neighbours.
                let more = self.items.len().max(4).min(capacity - self.items.len());
                self.items.reserve_exact(more);
                self.counts.reserve_exact(more);
            }
            self.items.push(item);
            self.counts.push((1, 0));
        } else if let Some((position, &(smallest, _))) =
            self.counts.iter().enumerate().min_by_key(|(_, (count, _))| *count)
        {
            // `min_by_key` returns the first smallest: the choice is deterministic.
            self.items[position] = item;
            self.counts[position] = (smallest.saturating_add(1), smallest);
        }
    }

    /// The counters, in no particular order.
    pub(crate) fn counters(&self) -> impl Iterator<Item = Counter> + '_ {
        self.items.iter().zip(&self.counts).map(|(&item, &(count, error))| Counter { item, count, error })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The exact top k of `scores`, best first, ties by index (the index doubles as id rank in these tests).
    fn exact_top(scores: &HashMap<u32, f64>, k: usize) -> Vec<(u32, f64)> {
        let mut all: Vec<_> = scores.iter().map(|(&i, &s)| (i, s)).filter(|&(_, s)| s > 0.0).collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn top_k_of_growing_scores_is_exact() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut top = TopK::new(5);
        let mut scores: HashMap<u32, f64> = HashMap::new();
        for step in 0..5000 {
            // Skewed choice, integer weights so that ties happen.
            let item = (rng.f64().powi(3) * 40.0) as u32;
            let old = scores.get(&item).copied().unwrap_or(0.0);
            let new = old + f64::from(rng.u8(1..=3));
            scores.insert(item, new);
            top.raise(ItemIdx(item), item, old, new);
            let kept: Vec<_> = top.entries().iter().map(|e| (e.item.0, e.score)).collect();
            assert_eq!(kept, exact_top(&scores, 5), "after step {step}");
        }
        assert_eq!(top.entries().len(), 5);
    }

    #[test]
    fn a_short_list_is_not_full() {
        let mut top = TopK::new(3);
        top.raise(ItemIdx(1), 1, 0.0, 1.0);
        top.raise(ItemIdx(2), 2, 0.0, 1.0);
        top.raise(ItemIdx(1), 1, 1.0, 1.5);
        let order: Vec<_> = top.entries().iter().map(|e| e.item.0).collect();
        assert_eq!(order, [1, 2]);
    }

    #[test]
    fn space_saving_keeps_frequent_items_with_honest_bounds() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut sketch = SpaceSaving::default();
        let mut truth: HashMap<u32, u32> = HashMap::new();
        let capacity = 8;
        let n = 20_000;
        for _ in 0..n {
            // Three heavy hitters and a long tail.
            let item = if rng.f64() < 0.6 { rng.u32(0..3) } else { rng.u32(3..500) };
            *truth.entry(item).or_default() += 1;
            sketch.add(ItemIdx(item), capacity);
        }
        assert_eq!(sketch.counters().count(), capacity);
        for counter in sketch.counters() {
            let real = truth[&counter.item.0];
            assert!(counter.guaranteed() <= real && real <= counter.count, "{counter:?} vs {real}");
        }
        for (&item, &count) in &truth {
            if count as usize > n / capacity {
                assert!(sketch.counters().any(|c| c.item.0 == item), "heavy item {item} ({count}) lost");
            }
        }
    }

    #[test]
    fn space_saving_never_grows_past_its_capacity() {
        let mut sketch = SpaceSaving::default();
        for item in 0..100 {
            sketch.add(ItemIdx(item), 6);
            assert!(sketch.items.capacity() <= 6 && sketch.counts.capacity() <= 6);
        }
        assert_eq!(sketch.counters().count(), 6);
    }
}
