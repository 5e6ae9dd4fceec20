//! The two recommendation models, behind one trait. Both are pure functions of a [`UserInsights`] (what the data
//! agent answers for the user), the user's stored [`Preferences`] and the number of items wanted: no I/O, no
//! clock, no randomness, so the same input always gives the same list.
//!
//! - **v1, [`Popularity`]**: the most popular items the user has not interacted with. Items of the user's preferred
//!   categories get [`PREFERENCE_BOOST`] added to their relative popularity (which is at most 1), so they come
//!   first whenever their categories have items left; the rest follow by popularity.
//! - **v2, [`CoOccurrence`]**: items chosen together with the user's latest items. Each history item contributes
//!   `ln(1 + weight) × RECENCY_DECAY^position` times its neighbours' similarity (position 0 is the latest item), so
//!   strong and recent interactions count most; a small share of the v1 score ([`POPULARITY_PRIOR`]) breaks near
//!   ties and ranks the items without co-occurrence evidence, which fill the list when the evidence runs out. A user
//!   without history (a cold user) gets exactly v1's answer.
//!
//! Ties are broken by item id (lower first). Items the user interacted with are never recommended: the data agent
//! leaves them out of every candidate list, and the models drop the ones of the history again, in case the input
//! comes from elsewhere.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::{insights::NEIGHBOURS, wire::UserInsights};

/// Added to the relative popularity (at most 1) of items in a preferred category.
pub const PREFERENCE_BOOST: f64 = 1.0;
/// Share of the v1 score that v2 adds to its own.
pub const POPULARITY_PRIOR: f64 = 0.05;
/// How much less each older history item counts in v2.
pub const RECENCY_DECAY: f64 = 0.85;

/// A model's name, as `MODEL` and the JSON say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelName {
    /// [`Popularity`].
    V1,
    /// [`CoOccurrence`].
    V2,
}

impl ModelName {
    /// Every model, in order.
    pub const ALL: [Self; 2] = [Self::V1, Self::V2];

    /// `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        }
    }

    /// The model itself.
    pub fn model(self) -> &'static dyn Recommender {
        match self {
            Self::V1 => &Popularity,
            Self::V2 => &CoOccurrence,
        }
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not a model's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model `{0}` (expected `v1` or `v2`)")]
pub struct UnknownModel(pub String);

impl FromStr for ModelName {
    type Err = UnknownModel;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|model| model.as_str() == name).ok_or_else(|| UnknownModel(name.to_owned()))
    }
}

/// What the user told us they like: the part of the recommendation agent's stored preferences that models use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Preferred categories.
    pub categories: Vec<String>,
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Item id.
    pub id: String,
    /// Item title.
    pub title: String,
    /// The model's score, higher is better, rounded to four decimals; comparable within one answer only.
    pub score: f64,
    /// Why, in a few words, for the user.
    pub reason: String,
}

/// A recommendation model.
pub trait Recommender: Send + Sync {
    /// Which model this is.
    fn name(&self) -> ModelName;

    /// Up to `limit` items for the user, best first: exactly `limit` when the input offers that many candidates
    /// (the data agent offers `limit` popular items whenever the catalog has that many the user has not seen).
    /// `insights` must have been asked for with the same `limit` and the preferences' categories.
    fn recommend(&self, insights: &UserInsights, preferences: &Preferences, limit: usize) -> Vec<Recommendation>;

    /// How many neighbours of each history item the model reads ([`UserQuery::neighbours`]): its input can be
    /// asked for with that many and gives the same answer as with all of them.
    ///
    /// [`UserQuery::neighbours`]: crate::insights::UserQuery::neighbours
    fn neighbours(&self) -> usize;
}

/// A candidate while it is ranked: the reason is only written for the ones kept.
struct Scored<'a> {
    id: &'a str,
    title: &'a str,
    score: f64,
    why: Why<'a>,
}

enum Why<'a> {
    /// v1: popular, in a preferred category or not.
    Popular { category: &'a str, popularity: f64, preferred: bool },
    /// v2: chosen with this history item.
    ChosenWith { title: &'a str },
}

impl Why<'_> {
    fn reason(&self) -> String {
        match *self {
            Why::Popular { category, popularity, preferred: true } if popularity > 0.0 => {
                format!("Popular in {category}, one of your preferred categories")
            }
            Why::Popular { category, preferred: true, .. } => {
                format!("From {category}, one of your preferred categories")
            }
            Why::Popular { popularity, .. } if popularity > 0.0 => "One of the most popular items".to_owned(),
            Why::Popular { category, .. } => format!("From the {category} catalog, not tried by anyone yet"),
            Why::ChosenWith { title } => format!("Often chosen with “{title}”, which you picked"),
        }
    }
}

/// Best first, ties by id; the first `limit`, with their reasons.
fn finish(mut scored: Vec<Scored>, limit: usize) -> Vec<Recommendation> {
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(b.id)));
    scored
        .into_iter()
        .take(limit)
        .map(|s| Recommendation {
            id: s.id.to_owned(),
            title: s.title.to_owned(),
            score: (s.score * 1e4).round() / 1e4,
            reason: s.why.reason(),
        })
        .collect()
}

fn history_ids(insights: &UserInsights) -> HashSet<&str> {
    insights.history.iter().map(|item| item.id.as_str()).collect()
}

/// v1's score of an item: relative popularity, boosted in preferred categories.
fn popularity_score<'a>(category: &'a str, popularity: f64, preferences: &Preferences) -> (f64, Why<'a>) {
    let preferred = preferences.categories.iter().any(|c| c == category);
    let score = popularity + if preferred { PREFERENCE_BOOST } else { 0.0 };
    (score, Why::Popular { category, popularity, preferred })
}

/// Every v1 candidate (popular overall and in the preferred categories), each once, unranked.
fn popular_candidates<'a>(insights: &'a UserInsights, preferences: &Preferences) -> Vec<Scored<'a>> {
    let seen = history_ids(insights);
    let mut offered = HashSet::new();
    insights
        .popular
        .iter()
        .chain(insights.popular_in.iter().flat_map(|list| &list.items))
        .filter(|c| !seen.contains(c.id.as_str()) && offered.insert(c.id.as_str()))
        .map(|c| {
            let (score, why) = popularity_score(&c.category, c.popularity, preferences);
            Scored { id: &c.id, title: &c.title, score, why }
        })
        .collect()
}

/// v1: popularity, filtered, boosted by preferences.
#[derive(Debug, Clone, Copy, Default)]
pub struct Popularity;

impl Recommender for Popularity {
    fn name(&self) -> ModelName {
        ModelName::V1
    }

    fn recommend(&self, insights: &UserInsights, preferences: &Preferences, limit: usize) -> Vec<Recommendation> {
        finish(popular_candidates(insights, preferences), limit)
    }

    fn neighbours(&self) -> usize {
        0
    }
}

/// v2: personalised item–item co-occurrence on the user's history; v1 for cold users.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoOccurrence;

impl Recommender for CoOccurrence {
    fn name(&self) -> ModelName {
        ModelName::V2
    }

    fn recommend(&self, insights: &UserInsights, preferences: &Preferences, limit: usize) -> Vec<Recommendation> {
        if insights.history.is_empty() {
            return Popularity.recommend(insights, preferences, limit);
        }
        let seen = history_ids(insights);
        // How much each history item counts: its weight, dampened, and its recency.
        let strength: HashMap<&str, (f64, &str)> = insights
            .history
            .iter()
            .enumerate()
            .map(|(position, item)| {
                let strength = (1.0 + item.weight).ln() * RECENCY_DECAY.powi(position as i32);
                (item.id.as_str(), (strength, item.title.as_str()))
            })
            .collect();

        // Co-occurrence evidence per candidate, and the history item that contributed most.
        let mut evidence: HashMap<&str, Scored> = HashMap::new();
        let mut best: HashMap<&str, f64> = HashMap::new();
        for list in &insights.neighbours {
            let Some(&(strength, history_title)) = strength.get(list.item.as_str()) else { continue };
            for n in list.neighbours.iter().filter(|n| !seen.contains(n.id.as_str())) {
                let contribution = strength * n.similarity;
                let entry = evidence.entry(&n.id).or_insert_with(|| {
                    let (prior, _) = popularity_score(&n.category, n.popularity, preferences);
                    Scored {
                        id: &n.id,
                        title: &n.title,
                        score: POPULARITY_PRIOR * prior,
                        why: Why::ChosenWith { title: history_title },
                    }
                });
                entry.score += contribution;
                // Lists come latest history item first: on equal contributions the more recent one is named.
                let strongest = best.entry(&n.id).or_insert(0.0);
                if contribution > *strongest {
                    *strongest = contribution;
                    entry.why = Why::ChosenWith { title: history_title };
                }
            }
        }
        let mut scored: Vec<Scored> = popular_candidates(insights, preferences)
            .into_iter()
            .filter(|c| !evidence.contains_key(c.id))
            .map(|c| Scored { score: POPULARITY_PRIOR * c.score, ..c })
            .collect();
        scored.extend(evidence.into_values());
        finish(scored, limit)
    }

    fn neighbours(&self) -> usize {
        NEIGHBOURS
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;
    use crate::{
        dataset::{DataSet, Limits},
        generate::default_dataset,
        insights::{Insights, UserQuery},
    };

    fn default_insights() -> &'static (DataSet, Insights) {
        static INSIGHTS: OnceLock<(DataSet, Insights)> = OnceLock::new();
        INSIGHTS.get_or_init(|| {
            let data = default_dataset();
            let insights = Insights::build(&data, &Limits::default());
            (data, insights)
        })
    }

    /// What `model` recommends to `user`, through the same steps as the agents: the data agent's answer (with the
    /// neighbours the model reads), as JSON.
    fn recommend(model: ModelName, user: &str, categories: &[&str], limit: usize) -> Vec<Recommendation> {
        let preferences = Preferences { categories: categories.iter().map(|&c| c.to_owned()).collect() };
        let query = UserQuery {
            neighbours: model.model().neighbours(),
            ..UserQuery::new(user, limit, &preferences.categories)
        };
        let answer = default_insights().1.user_insights(&query).unwrap();
        let wire: UserInsights = serde_json::from_slice(&serde_json::to_vec(&answer).unwrap()).unwrap();
        assert_eq!(wire, answer, "the wire keeps every figure exactly");
        model.model().recommend(&wire, &preferences, limit)
    }

    fn ids(list: &[Recommendation]) -> Vec<&str> {
        list.iter().map(|r| r.id.as_str()).collect()
    }

    /// Every item `user` interacted with in the default data set.
    fn seen_by(user: &str) -> HashSet<String> {
        let data = &default_insights().0;
        data.interactions()
            .iter()
            .filter(|i| data.users().id(i.user) == user)
            .map(|i| data.catalog().item(i.item).id.clone())
            .collect()
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!("v2".parse::<ModelName>(), Ok(ModelName::V2));
        assert_eq!("v3".parse::<ModelName>().unwrap_err().to_string(), "unknown model `v3` (expected `v1` or `v2`)");
        assert_eq!(serde_json::to_string(&ModelName::V1).unwrap(), "\"v1\"");
        for name in ModelName::ALL {
            assert_eq!(name.model().name(), name);
        }
    }

    #[test]
    fn the_neighbours_a_model_asks_for_give_the_answer_all_of_them_give() {
        let insights = &default_insights().1;
        for model in ModelName::ALL {
            for user in ["u1", "u2", "u77", "u500", "u999", "newcomer"] {
                for categories in [vec![], vec!["garden".to_owned(), "books".to_owned()]] {
                    let all = insights.user_insights(&UserQuery::new(user, 10, &categories)).unwrap();
                    let asked =
                        UserQuery { neighbours: model.model().neighbours(), ..UserQuery::new(user, 10, &categories) };
                    let asked = insights.user_insights(&asked).unwrap();
                    let preferences = Preferences { categories };
                    assert_eq!(
                        model.model().recommend(&asked, &preferences, 10),
                        model.model().recommend(&all, &preferences, 10),
                        "{model} {user} {preferences:?}"
                    );
                }
            }
        }
        assert_eq!(ModelName::V1.model().neighbours(), 0, "v1 reads no neighbours: its input is small");
    }

    #[test]
    fn exactly_limit_items_none_already_seen() {
        for model in ModelName::ALL {
            for user in ["u1", "u2", "u500", "u999", "newcomer"] {
                let seen = seen_by(user);
                for limit in [1, 5, 10, 37, 100] {
                    let list = recommend(model, user, &["garden"], limit);
                    assert_eq!(list.len(), limit, "{model} {user} {limit}");
                    assert!(list.iter().all(|r| !seen.contains(&r.id)), "{model} recommended a seen item to {user}");
                    let distinct: HashSet<_> = ids(&list).into_iter().collect();
                    assert_eq!(distinct.len(), limit, "no item twice");
                    assert!(list.windows(2).all(|w| w[0].score >= w[1].score), "best first");
                    assert!(list.iter().all(|r| !r.reason.is_empty() && !r.title.is_empty()));
                }
            }
        }
    }

    #[test]
    fn preferences_change_v1() {
        let plain = recommend(ModelName::V1, "u1", &[], 5);
        let toys = recommend(ModelName::V1, "u1", &["toys"], 5);
        assert_ne!(ids(&plain), ids(&toys));
        let catalog = default_insights().0.catalog();
        for r in &toys {
            assert_eq!(catalog.item(catalog.find(&r.id).unwrap()).category, "toys");
            assert_eq!(r.reason, "Popular in toys, one of your preferred categories");
        }
        assert_eq!(plain[0].reason, "One of the most popular items");
        // Two categories: both are offered, each ahead of the rest.
        let two = recommend(ModelName::V1, "u1", &["toys", "garden"], 30);
        assert!(two.iter().all(|r| r.reason.contains("preferred")));
        assert!(two.iter().any(|r| r.id.starts_with("toys-")) && two.iter().any(|r| r.id.starts_with("garden-")));
    }

    #[test]
    fn v2_personalises_for_users_with_history() {
        let v1 = recommend(ModelName::V1, "u1", &[], 5);
        let v2 = recommend(ModelName::V2, "u1", &[], 5);
        assert_ne!(ids(&v1), ids(&v2));
        assert!(v2[0].reason.starts_with("Often chosen with “"), "{}", v2[0].reason);
    }

    #[test]
    fn v2_falls_back_to_v1_for_cold_users() {
        for categories in [&[][..], &["music"]] {
            let v1 = recommend(ModelName::V1, "newcomer", categories, 8);
            assert_eq!(recommend(ModelName::V2, "newcomer", categories, 8), v1);
        }
    }

    #[test]
    fn answers_are_deterministic() {
        for model in ModelName::ALL {
            let first = recommend(model, "u42", &["books"], 20);
            assert_eq!(recommend(model, "u42", &["books"], 20), first);
        }
    }

    #[test]
    fn ties_are_broken_by_id_and_history_is_never_offered() {
        let json = serde_json::json!({
            "user": "u", "version": 0, "interacted": 1,
            "history": [
                {"id": "h", "title": "Held", "category": "c", "weight": 1.0, "interactions": 1, "last_time": 1},
            ],
            "popular": [
                {"id": "h", "title": "Held", "category": "c", "popularity": 1.0},
                {"id": "b", "title": "B", "category": "c", "popularity": 0.5},
                {"id": "a", "title": "A", "category": "c", "popularity": 0.5},
            ],
            "popular_in": [],
            "neighbours": [{"item": "h", "neighbours": [
                {"id": "z", "title": "Z", "category": "c", "popularity": 0.1, "similarity": 0.5},
                {"id": "y", "title": "Y", "category": "c", "popularity": 0.1, "similarity": 0.5},
                {"id": "h", "title": "Held", "category": "c", "popularity": 1.0, "similarity": 0.9},
            ]}],
        });
        let insights: UserInsights = serde_json::from_value(json).unwrap();
        let none = Preferences::default();
        assert_eq!(ids(&Popularity.recommend(&insights, &none, 3)), ["a", "b"]);
        let v2 = CoOccurrence.recommend(&insights, &none, 4);
        assert_eq!(ids(&v2), ["y", "z", "a", "b"]);
        assert_eq!(v2[0].reason, "Often chosen with “Held”, which you picked");
        assert_eq!(v2[0].score, 0.3516, "ln 2 × 0.5 + 0.05 × 0.1, rounded");
    }
}
