//! The two bounded structures behind the insights: memory stays proportional to `k` per list, not to the number
//! of interactions.
//!
//! - [`TopK`] keeps the `k` best items of a score that only grows (popularity: weights are positive). For such
//!   scores a bounded list is exact: an item outside it scores at most the list's last entry, and can only enter by
//!   growing past it, which [`TopK::raise`] sees.
//! - [`SpaceSaving`] keeps the most frequent neighbours of each item in a fixed number of counters (Metwally,
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
            // A growing score only moves towards the front: shift the entries it overtakes, not the whole tail
            // twice (a remove and an insert), which popular items, raised at every interaction, would pay.
            let target = self.entries[..position].partition_point(|entry| entry.order(&after) == Ordering::Less);
            self.entries[target..=position].rotate_right(1);
            self.entries[target] = after;
            return;
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

/// The most frequent partners of every item of a catalog, each in at most `capacity` Space-Saving counters.
///
/// Stored flat rather than as one list per item: the lists of all items live in two shared arrays, in blocks of
/// `capacity` counters, and an item gets its block when it gets its first partner. Building the insights of a large
/// data set spends most of its time here, counting a new item into the lists of the user's previous items, which
/// are scattered over the catalog: with a list per item, each count chased three pointers to three cache misses
/// (the list, its ids, its counts); here the item's block is found from one small per-item entry, and no list is
/// ever reallocated as it grows. An item with any partner takes a whole block (12 bytes per counter), which is what
/// most items of a large set fill anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpaceSaving {
    capacity: usize,
    /// Per item: its block and how many of the block's counters are in use (`NO_BLOCK` before its first partner).
    lists: Vec<(u32, u32)>,
    /// The partners, block after block; ids apart from counts, so the search for a partner, which every count
    /// does, reads a few contiguous cache lines of ids only.
    items: Vec<ItemIdx>,
    /// `(count, error)` of `items[i]`.
    counts: Vec<(u32, u32)>,
}

/// Marks an item without a block.
const NO_BLOCK: u32 = u32::MAX;

impl SpaceSaving {
    /// Empty lists of at most `capacity` counters for `items` items.
    pub(crate) fn new(items: usize, capacity: usize) -> Self {
        Self { capacity, lists: vec![(NO_BLOCK, 0); items], items: Vec::new(), counts: Vec::new() }
    }

    /// The counters of `of` in use, as a range of `items` and `counts`.
    fn range(&self, of: ItemIdx) -> std::ops::Range<usize> {
        match self.lists[of.index()] {
            (NO_BLOCK, _) => 0..0,
            (block, used) => {
                let start = block as usize * self.capacity;
                start..start + used as usize
            }
        }
    }

    /// Counts one occurrence of `partner` with `of`.
    pub(crate) fn add(&mut self, of: ItemIdx, partner: ItemIdx) {
        if self.capacity == 0 {
            return;
        }
        let (block, used) = &mut self.lists[of.index()];
        if *block == NO_BLOCK {
            // Blocks are numbered from 0; the number of blocks is at most the number of items, which fits a u32.
            *block = (self.items.len() / self.capacity) as u32;
            self.items.resize(self.items.len() + self.capacity, ItemIdx(0));
            self.counts.resize(self.counts.len() + self.capacity, (0, 0));
        }
        let start = *block as usize * self.capacity;
        let in_use = start..start + *used as usize;
        if let Some(position) = self.items[in_use.clone()].iter().position(|&i| i == partner) {
            let count = &mut self.counts[start + position].0;
            *count = count.saturating_add(1);
        } else if (*used as usize) < self.capacity {
            self.items[in_use.end] = partner;
            self.counts[in_use.end] = (1, 0);
            *used += 1;
        } else if let Some((position, &(smallest, _))) =
            self.counts[in_use].iter().enumerate().min_by_key(|(_, (count, _))| *count)
        {
            // `min_by_key` returns the first smallest: the choice is deterministic.
            self.items[start + position] = partner;
            self.counts[start + position] = (smallest.saturating_add(1), smallest);
        }
    }

    /// The counters of `of`, in no particular order.
    pub(crate) fn counters(&self, of: ItemIdx) -> impl Iterator<Item = Counter> + '_ {
        let range = self.range(of);
        self.items[range.clone()].iter().zip(&self.counts[range]).map(|(&item, &(count, error))| Counter {
            item,
            count,
            error,
        })
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
        let capacity = 8;
        let mut sketch = SpaceSaving::new(3, capacity);
        let mut truth: HashMap<u32, u32> = HashMap::new();
        let n = 20_000;
        for _ in 0..n {
            // Three heavy hitters and a long tail, counted for item 1; item 2 gets noise of its own in between.
            let item = if rng.f64() < 0.6 { rng.u32(0..3) } else { rng.u32(3..500) };
            *truth.entry(item).or_default() += 1;
            sketch.add(ItemIdx(1), ItemIdx(item));
            sketch.add(ItemIdx(2), ItemIdx(rng.u32(0..500)));
        }
        assert_eq!(sketch.counters(ItemIdx(1)).count(), capacity);
        for counter in sketch.counters(ItemIdx(1)) {
            let real = truth[&counter.item.0];
            assert!(counter.guaranteed() <= real && real <= counter.count, "{counter:?} vs {real}");
        }
        for (&item, &count) in &truth {
            if count as usize > n / capacity {
                assert!(sketch.counters(ItemIdx(1)).any(|c| c.item.0 == item), "heavy item {item} ({count}) lost");
            }
        }
        assert_eq!(sketch.counters(ItemIdx(0)).count(), 0, "an item without partners has no counters");
    }

    #[test]
    fn space_saving_lists_are_independent_and_bounded() {
        // The same stream, counted alone and interleaved with other items' streams, gives the same counters.
        let mut rng = fastrand::Rng::with_seed(5);
        let stream: Vec<u32> = (0..2000).map(|_| (rng.f64().powi(2) * 60.0) as u32).collect();
        let mut alone = SpaceSaving::new(4, 6);
        let mut shared = SpaceSaving::new(4, 6);
        for (n, &partner) in stream.iter().enumerate() {
            alone.add(ItemIdx(3), ItemIdx(partner));
            shared.add(ItemIdx((n % 3) as u32), ItemIdx(partner + 1000));
            shared.add(ItemIdx(3), ItemIdx(partner));
        }
        let counters = |sketch: &SpaceSaving, of| sketch.counters(ItemIdx(of)).collect::<Vec<_>>();
        assert_eq!(counters(&shared, 3), counters(&alone, 3));
        for of in 0..4 {
            assert_eq!(counters(&shared, of).len(), 6, "item {of} keeps exactly its capacity");
        }
        assert_eq!(shared.items.len(), 4 * 6, "one block per item with partners");
        assert_eq!(alone.items.len(), 6);
    }
}
