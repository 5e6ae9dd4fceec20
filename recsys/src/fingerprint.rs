//! The content fingerprint of [`crate::Insights`]: a 64-bit FNV-1a hash over the data set they were built from
//! (catalog, users, interactions), chained with every batch applied since (the rows as applied, times filled in).
//!
//! The data agent serves it in the `ETag` of its insights, which the recommendation agent revalidates cached
//! predictions with (`If-None-Match`). A version counter alone cannot be that tag: a data agent restarted on
//! another `DATA_FILE` starts at version 0 again, and two replicas that applied different batches both reach
//! version 1. The fingerprint tells those apart, and is equal for two processes that loaded the same data and
//! applied the same batches in the same order (replicas started on the same data share tags until a batch reaches
//! one of them; rows without a time get each process's clock, so even the same batch applied twice differs).
//!
//! The data alone does not decide the insights: the code that turns it into them does too (how many candidates,
//! how co-occurrence is scored, the wire shape). So the hash starts from [`INSIGHTS_CODE`], which names this crate's
//! version and the insights' format: a rolling update to a data agent that computes insights differently changes
//! every tag, so no prediction computed from the old insights is confirmed by the new agent's 304.
//!
//! FNV-1a because it is fixed by its definition: every build, process and platform computes the same value (the
//! standard library's hasher is randomly keyed and may change between releases). It is not collision resistant
//! against someone crafting data, which nobody gains anything from here; for data that merely differs, 64 bits
//! make a repeat negligible. Interactions are hashed by their dense indices (20 bytes each), which the catalog
//! and user lists hashed before them pin to ids: on the 1 M-interaction set it costs about 30 ms of a load and
//! build of about 3 s (README "Insights under load").

use crate::dataset::DataSet;

const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// A running FNV-1a (64-bit) hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(OFFSET_BASIS)
    }
}

impl Fnv1a {
    /// Continues from a finished hash, so a fingerprint can be chained with more content.
    pub fn resume(hash: u64) -> Self {
        Self(hash)
    }

    /// Adds bytes.
    pub fn bytes(&mut self, bytes: &[u8]) {
        let mut hash = self.0;
        for &byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
        self.0 = hash;
    }

    /// Adds a number (little-endian).
    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    /// Adds a string, preceded by its length so that consecutive strings cannot run into each other.
    pub fn str(&mut self, value: &str) {
        self.u64(value.len() as u64);
        self.bytes(value.as_bytes());
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// What the fingerprint starts from: the code that computes insights. Bump the format whenever a change to
/// `crate::insights` or the wire types changes an answer for the same data without changing the crate's version.
pub const INSIGHTS_CODE: &str = concat!("recsys ", env!("CARGO_PKG_VERSION"), ", insights format 1");

/// The fingerprint of a data set: [`INSIGHTS_CODE`], then its catalog (every field of every item, in catalog order),
/// its users (in index order) and its interactions (in their order).
pub fn of_dataset(dataset: &DataSet) -> u64 {
    let mut hash = Fnv1a::default();
    hash.str(INSIGHTS_CODE);
    let items = dataset.catalog().items();
    hash.u64(items.len() as u64);
    for item in items {
        hash.str(&item.id);
        hash.str(&item.title);
        hash.str(&item.category);
    }
    let users = dataset.users().ids();
    hash.u64(users.len() as u64);
    for user in users {
        hash.str(user);
    }
    let interactions = dataset.interactions();
    hash.u64(interactions.len() as u64);
    for interaction in interactions {
        let mut row = [0; 20];
        row[..4].copy_from_slice(&interaction.user.0.to_le_bytes());
        row[4..8].copy_from_slice(&interaction.item.0.to_le_bytes());
        row[8..12].copy_from_slice(&interaction.weight.to_bits().to_le_bytes());
        row[12..].copy_from_slice(&interaction.time.to_le_bytes());
        hash.bytes(&row);
    }
    hash.finish()
}

/// `previous` chained with one applied batch: each row's user id, item id, weight and time (as applied).
pub fn chain<'a>(previous: u64, rows: impl ExactSizeIterator<Item = (&'a str, &'a str, f64, u64)>) -> u64 {
    let mut hash = Fnv1a::resume(previous);
    hash.u64(rows.len() as u64);
    for (user, item, weight, time) in rows {
        hash.str(user);
        hash.str(item);
        hash.u64(weight.to_bits());
        hash.u64(time);
    }
    hash.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv): "" and "a" and "foobar", 64-bit FNV-1a.
        for (input, expected) in
            [("", 0xcbf2_9ce4_8422_2325), ("a", 0xaf63_dc4c_8601_ec8c), ("foobar", 0x8594_4171_f739_67e8)]
        {
            let mut hash = Fnv1a::default();
            hash.bytes(input.as_bytes());
            assert_eq!(hash.finish(), expected, "{input:?}");
        }
    }

    #[test]
    fn batches_chain_in_order_and_rows_cannot_run_into_each_other() {
        let a = [("u1", "i1", 1.0, 5)];
        let b = [("u2", "i1", 1.0, 5)];
        let start = 42;
        assert_ne!(
            chain(chain(start, a.into_iter()), b.into_iter()),
            chain(chain(start, b.into_iter()), a.into_iter())
        );
        assert_ne!(
            chain(start, [("u1", "i1x", 1.0, 5)].into_iter()),
            chain(start, [("u1i", "1x", 1.0, 5)].into_iter())
        );
        assert_ne!(chain(start, a.into_iter()), chain(start, [("u1", "i1", 1.0, 6)].into_iter()), "the time counts");
        assert_ne!(chain(start, a.into_iter()), chain(start, [("u1", "i1", 2.0, 5)].into_iter()), "the weight counts");
        assert_eq!(chain(start, a.into_iter()), chain(start, a.into_iter()));
    }

    #[test]
    fn every_part_of_the_data_set_counts() {
        let limits = crate::Limits::default();
        let read = |lines: &[String]| crate::load::read(lines.join("\n").as_bytes(), "test", &limits).unwrap();
        let mut text = Vec::new();
        crate::load::write(&crate::default_dataset(), &mut text).unwrap();
        let lines: Vec<String> = String::from_utf8(text).unwrap().lines().map(str::to_owned).collect();
        let fingerprint = of_dataset(&read(&lines));
        assert_eq!(fingerprint, of_dataset(&read(&lines)), "the same data, the same fingerprint");

        // One record changed: `edit` applied to the first line whose object has `field`.
        let changed = |field: &str, edit: &dyn Fn(&mut serde_json::Value)| {
            let mut lines = lines.clone();
            let line = lines.iter_mut().find(|line| line.contains(&format!("\"{field}\""))).unwrap();
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            edit(&mut record[field]);
            *line = record.to_string();
            of_dataset(&read(&lines))
        };
        let title = changed("title", &|v| *v = format!("{}!", v.as_str().unwrap()).into());
        let weight = changed("weight", &|v| *v = (v.as_f64().unwrap() + 1.0).into());
        let time = changed("time", &|v| *v = (v.as_u64().unwrap() + 1).into());
        let fewer = of_dataset(&read(&lines[..lines.len() - 1]));
        for (what, other) in [("a title", title), ("a weight", weight), ("a time", time), ("an interaction", fewer)] {
            assert_ne!(other, fingerprint, "{what} changed, the fingerprint did not");
        }
    }
}
