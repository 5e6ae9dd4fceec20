//! Offline evaluation of the models, leave-last-out: for every user with at least two distinct items, the item of
//! their latest interaction is held out (with all of their interactions with it), the insights are built from
//! everything else, and each model recommends `k` items to the user through the same path the agents use
//! ([`Insights::user_insights`], then the model, without stored preferences). A model scores when the held-out
//! item is among its `k`:
//! - precision@k: hits / k, averaged over users;
//! - recall@k: hits / 1 (one held-out item per user), averaged: the hit rate;
//! - nDCG@k: 1 / log2(position + 1) for a hit at position 1, 2, ... (the ideal is 1), averaged.
//!
//! Users with a single item are left out (after holding it out they would have no history, so both models would
//! give the same answer), and counted in [`Evaluation::skipped`].

use std::fmt;

use crate::{
    catalog::ItemIdx,
    dataset::{DataSet, Limits, UserIdx},
    insights::{Insights, MAX_LIMIT, QueryError, UserQuery},
    models::{ModelName, Preferences},
};

/// A data set split for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Everything but the held-out interactions.
    pub train: DataSet,
    /// Per evaluated user, the held-out item, in user order.
    pub held_out: Vec<(UserIdx, ItemIdx)>,
    /// Users not evaluated: fewer than two distinct items.
    pub skipped: usize,
}

/// Splits `dataset` leave-last-out (see the module docs).
pub fn leave_last_out(dataset: &DataSet) -> Split {
    let users = dataset.users().len();
    let mut last: Vec<Option<ItemIdx>> = vec![None; users];
    let mut pairs: Vec<(UserIdx, ItemIdx)> = Vec::with_capacity(dataset.interactions().len());
    for interaction in dataset.interactions() {
        last[interaction.user.index()] = Some(interaction.item);
        pairs.push((interaction.user, interaction.item));
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut distinct = vec![0usize; users];
    for (user, _) in &pairs {
        distinct[user.index()] += 1;
    }
    let held: Vec<Option<ItemIdx>> =
        last.iter().zip(&distinct).map(|(&item, &count)| if count >= 2 { item } else { None }).collect();
    let train = dataset
        .interactions()
        .iter()
        .filter(|interaction| held[interaction.user.index()] != Some(interaction.item))
        .copied()
        .collect();
    let held_out: Vec<_> =
        held.iter().enumerate().filter_map(|(user, item)| item.map(|item| (UserIdx(user as u32), item))).collect();
    let skipped = distinct.iter().filter(|&&count| count > 0).count() - held_out.len();
    Split { train: dataset.with_interactions(train), held_out, skipped }
}

/// How one model did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelScores {
    /// The model.
    pub model: ModelName,
    /// Mean precision@k.
    pub precision: f64,
    /// Mean recall@k (the share of users whose held-out item was recommended).
    pub recall: f64,
    /// Mean nDCG@k.
    pub ndcg: f64,
}

/// The models side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Length of the recommendation lists.
    pub k: usize,
    /// Users evaluated.
    pub users: usize,
    /// Users left out (fewer than two distinct items).
    pub skipped: usize,
    /// Every model, in [`ModelName::ALL`] order.
    pub models: Vec<ModelScores>,
}

/// One user's precision, recall and nDCG for a held-out item found at `position` (from 0), if found.
fn user_scores(position: Option<usize>, k: usize) -> (f64, f64, f64) {
    match position {
        Some(position) => (1.0 / k as f64, 1.0, 1.0 / (position as f64 + 2.0).log2()),
        None => (0.0, 0.0, 0.0),
    }
}

/// Evaluates every model on `dataset`, leave-last-out, with lists of `k` (1 to [`MAX_LIMIT`]).
pub fn evaluate(dataset: &DataSet, k: usize) -> Result<Evaluation, QueryError> {
    if !(1..=MAX_LIMIT).contains(&k) {
        return Err(QueryError::Limit);
    }
    let split = leave_last_out(dataset);
    let insights = Insights::build(&split.train, &Limits::default());
    let preferences = Preferences::default();
    let mut totals = [(0.0, 0.0, 0.0); ModelName::ALL.len()];
    for &(user, item) in &split.held_out {
        let query = UserQuery::new(split.train.users().id(user), k, &[]);
        let answer = insights.user_insights(&query)?;
        let wanted = &dataset.catalog().item(item).id;
        for (model, total) in ModelName::ALL.iter().zip(&mut totals) {
            let list = model.model().recommend(&answer, &preferences, k);
            let (precision, recall, ndcg) = user_scores(list.iter().position(|r| &r.id == wanted), k);
            total.0 += precision;
            total.1 += recall;
            total.2 += ndcg;
        }
    }
    let users = split.held_out.len();
    let mean = |sum: f64| if users == 0 { 0.0 } else { sum / users as f64 };
    let models = ModelName::ALL
        .iter()
        .zip(totals)
        .map(|(&model, (precision, recall, ndcg))| ModelScores {
            model,
            precision: mean(precision),
            recall: mean(recall),
            ndcg: mean(ndcg),
        })
        .collect();
    Ok(Evaluation { k, users, skipped: split.skipped, models })
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.k;
        writeln!(
            f,
            "leave-last-out: {} users evaluated, {} with fewer than two items left out, lists of {k}",
            self.users, self.skipped
        )?;
        let headers = [format!("precision@{k}"), format!("recall@{k}"), format!("nDCG@{k}")];
        writeln!(f, "{:<6} {:>14} {:>14} {:>14}", "model", headers[0], headers[1], headers[2])?;
        for m in &self.models {
            writeln!(f, "{:<6} {:>14.4} {:>14.4} {:>14.4}", m.model.as_str(), m.precision, m.recall, m.ndcg)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate::default_dataset, load};

    #[test]
    fn the_latest_item_of_each_user_is_held_out_entirely() {
        let text = r#"{"type":"item","id":"a","title":"A","category":"x"}
{"type":"item","id":"b","title":"B","category":"x"}
{"type":"item","id":"c","title":"C","category":"x"}
{"type":"interaction","user":"u1","item":"a","weight":1,"time":1}
{"type":"interaction","user":"u1","item":"b","weight":1,"time":2}
{"type":"interaction","user":"u2","item":"c","weight":1,"time":3}
{"type":"interaction","user":"u2","item":"c","weight":1,"time":4}
{"type":"interaction","user":"u1","item":"a","weight":1,"time":5}
"#;
        let data = load::read(text.as_bytes(), "t", &Limits::default()).unwrap();
        let split = leave_last_out(&data);
        let u1 = data.users().find("u1").unwrap();
        assert_eq!(split.held_out, [(u1, data.catalog().find("a").unwrap())]);
        assert_eq!(split.skipped, 1, "u2 has one distinct item");
        let train: Vec<_> = split
            .train
            .interactions()
            .iter()
            .map(|i| (split.train.users().id(i.user), data.catalog().item(i.item).id.as_str(), i.time))
            .collect();
        assert_eq!(train, [("u1", "b", 2), ("u2", "c", 3), ("u2", "c", 4)]);
    }

    #[test]
    fn scores_follow_the_definitions() {
        assert_eq!(user_scores(None, 10), (0.0, 0.0, 0.0));
        assert_eq!(user_scores(Some(0), 10), (0.1, 1.0, 1.0));
        assert_eq!(user_scores(Some(2), 10), (0.1, 1.0, 0.5), "third place: 1 / log2(4)");
        assert_eq!(user_scores(Some(6), 5).2, 1.0 / 3.0, "seventh place: 1 / log2(8)");
    }

    #[test]
    fn bad_list_lengths_are_refused() {
        let data = default_dataset();
        assert_eq!(evaluate(&data, 0), Err(QueryError::Limit));
        assert_eq!(evaluate(&data, MAX_LIMIT + 1), Err(QueryError::Limit));
    }

    /// The reason the canary exists: on the default data set, v2 beats v1 clearly on every measure.
    #[test]
    fn v2_beats_v1_on_the_default_data_set() {
        let evaluation = evaluate(&default_dataset(), 10).unwrap();
        let [v1, v2] = [evaluation.models[0], evaluation.models[1]];
        assert_eq!((v1.model, v2.model), (ModelName::V1, ModelName::V2));
        assert!(evaluation.users > 900, "{evaluation}");
        assert!(v1.recall > 0.0, "popularity finds some: {evaluation}");
        assert!(v2.recall > 2.0 * v1.recall, "{evaluation}");
        assert!(v2.ndcg > 2.0 * v1.ndcg, "{evaluation}");
        assert!((v2.precision - v2.recall / 10.0).abs() < 1e-12, "one held-out item per user");
        let table = evaluation.to_string();
        assert!(table.contains("precision@10") && table.contains("nDCG@10") && table.contains("\nv2 "), "{table}");
    }
}
