//! Deterministic synthetic data sets: the default data set the agents start with, and larger ones for the scale
//! benchmark. Nothing is downloaded; the same configuration gives the same data set, byte for byte, on every run
//! (the pseudo-random generator is `fastrand`'s, seeded, at the version that Cargo.lock pins; a test pins a
//! fingerprint of the default set so that a change shows).
//!
//! The data has the structure real interaction logs have, and that is documented here because the evaluation
//! depends on it:
//! - The catalog spreads items evenly over eight categories; inside a category, items come in themes of
//!   [`THEME_SIZE`] (a book series, an artist, a product line). Titles are made of a theme word and a category noun.
//! - Items have a global popularity that follows Zipf's law (the item at popularity rank r is chosen in proportion
//!   to 1/r), over a shuffled order, so popularity is unrelated to category and theme.
//! - Each user has two favourite themes (the second in the same category half the time) and an activity level
//!   (exponentially distributed, so a few users are very active). Every user interacts once, then interactions
//!   go to users in proportion to their activity.
//! - An interaction is, with probability [`TASTE_SHARE`], an item of one of the user's favourite themes (the first
//!   two times out of three; inside a theme, the item at position p is chosen in proportion to 1/(p + 1)), and
//!   otherwise an item drawn by global popularity. Its weight is 1 (a view, 70 %), 2 (a like, 20 %) or 5 (a
//!   purchase, 10 %); interactions are 1 to 120 seconds apart.
//!
//! So popularity alone explains part of what users do, and what a user did before explains much of the rest: a
//! personalised model should beat popularity, and the evaluation shows by how much.

use crate::{
    catalog::{CatalogBuilder, Item, ItemIdx},
    dataset::{DataSet, Interaction, Limits, Users},
};

/// Items per theme.
pub const THEME_SIZE: usize = 12;
/// Share of interactions that follow the user's tastes rather than global popularity.
pub const TASTE_SHARE: f64 = 0.7;
/// The first interaction's time: 2023-11-14T22:13:20Z.
const START_TIME: u64 = 1_700_000_000;

/// The eight categories, each with nouns for its titles.
const CATEGORIES: [(&str, [&str; 8]); 8] = [
    ("books", ["Chronicles", "Field Guide", "Atlas", "Stories", "Memoir", "Handbook", "Poems", "Mysteries"]),
    ("music", ["Sessions", "Live", "Anthology", "Sonatas", "Nocturnes", "Songbook", "Remixes", "Suite"]),
    ("movies", ["Rising", "Returns", "Legacy", "Files", "Road Trip", "Nights", "Heist", "Protocol"]),
    ("games", ["Tactics", "Quest", "Racing", "Puzzles", "Odyssey", "Arena", "Tycoon", "Legends"]),
    ("kitchen", ["Skillet", "Knife Set", "Teapot", "Blender", "Cookbook", "Dutch Oven", "Grinder", "Bowls"]),
    ("garden", ["Planter", "Hose Reel", "Seed Kit", "Pruner", "Trellis", "Lantern", "Bench", "Compost Bin"]),
    ("sports", ["Running Shoes", "Yoga Mat", "Racket", "Helmet", "Daypack", "Bottle", "Gloves", "Jersey"]),
    ("toys", ["Puzzle", "Robot", "Train Set", "Blocks", "Kite", "Doll House", "Board Game", "Plush Fox"]),
];

/// Words that name themes.
const THEME_WORDS: [&str; 24] = [
    "Harbor", "Ember", "Willow", "Cobalt", "Juniper", "Summit", "Meadow", "Nimbus", "Orchid", "Quartz", "Saffron",
    "Tundra", "Aurora", "Basalt", "Cedar", "Delta", "Fjord", "Granite", "Heron", "Indigo", "Lagoon", "Mistral",
    "Pebble", "Sierra",
];

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Seed of the pseudo-random generator.
    pub seed: u64,
    /// Number of catalog items.
    pub items: usize,
    /// Number of users (each interacts at least once when there are enough interactions).
    pub users: usize,
    /// Number of interactions.
    pub interactions: usize,
}

impl GeneratorConfig {
    /// The default data set: 480 items, 1 000 users, 30 000 interactions. Generated in milliseconds.
    pub const DEFAULT: Self = Self { seed: 2024, items: 480, users: 1_000, interactions: 30_000 };
    /// The scale benchmark's data set: 100 000 items, 50 000 users, 1 000 000 interactions.
    pub const SCALE: Self = Self { seed: 2024, items: 100_000, users: 50_000, interactions: 1_000_000 };
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A configuration that cannot be generated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot generate {what} = {value}: it must be between 1 and {max}")]
pub struct ConfigError {
    /// `items`, `users` or `interactions`.
    pub what: &'static str,
    /// The value asked for.
    pub value: usize,
    /// The largest allowed (the data set [`Limits`]).
    pub max: usize,
}

/// The data set of the default configuration.
pub fn default_dataset() -> DataSet {
    generate(&GeneratorConfig::DEFAULT).expect("the default configuration is within the limits")
}

/// Cumulative weights, for sampling by binary search.
fn cumulative(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    weights
        .scan(0.0, |total, weight| {
            *total += weight;
            Some(*total)
        })
        .collect()
}

/// An index drawn in proportion to the weights that `cumulative` sums.
fn sample(cumulative: &[f64], rng: &mut fastrand::Rng) -> usize {
    let target = rng.f64() * cumulative.last().copied().unwrap_or(0.0);
    cumulative.partition_point(|&c| c <= target).min(cumulative.len() - 1)
}

/// Generates the data set that `config` describes.
pub fn generate(config: &GeneratorConfig) -> Result<DataSet, ConfigError> {
    let limits = Limits::default();
    for (what, value, max) in [
        ("items", config.items, limits.max_items),
        ("users", config.users, limits.max_users),
        ("interactions", config.interactions, limits.max_interactions),
    ] {
        if !(1..=max).contains(&value) {
            return Err(ConfigError { what, value, max });
        }
    }
    let mut rng = fastrand::Rng::with_seed(config.seed);

    // The catalog: category blocks, themes of THEME_SIZE consecutive items inside each.
    let mut catalog = CatalogBuilder::default();
    let mut themes: Vec<(usize, usize)> = Vec::new(); // [start, end) in catalog order
    let mut themes_of_category: Vec<Vec<usize>> = Vec::new();
    for (c, (category, nouns)) in CATEGORIES.iter().enumerate() {
        let count = config.items / CATEGORIES.len() + usize::from(c < config.items % CATEGORIES.len());
        let width = count.to_string().len().max(3);
        let mut own = Vec::new();
        for n in 0..count {
            if n % THEME_SIZE == 0 {
                own.push(themes.len());
                themes.push((catalog.len(), catalog.len()));
            }
            let theme = themes.len() - 1;
            let word = THEME_WORDS[theme % THEME_WORDS.len()];
            let series = theme / THEME_WORDS.len();
            let title = if series == 0 {
                format!("{word} {}", nouns[rng.usize(..nouns.len())])
            } else {
                format!("{word} {} {}", nouns[rng.usize(..nouns.len())], series + 1)
            };
            let item = Item { id: format!("{category}-{:0width$}", n + 1), title, category: (*category).to_owned() };
            catalog.push(item).expect("generated items are valid and unique");
            themes[theme].1 = catalog.len();
        }
        themes_of_category.push(own);
    }
    let category_of_theme: Vec<usize> =
        themes_of_category.iter().enumerate().flat_map(|(c, own)| own.iter().map(move |_| c)).collect();

    // Global popularity: Zipf over a shuffled order of the items.
    let mut by_popularity: Vec<u32> = (0..config.items as u32).collect();
    rng.shuffle(&mut by_popularity);
    let global = cumulative((1..=config.items).map(|rank| 1.0 / rank as f64));
    let within_theme = cumulative((1..=THEME_SIZE).map(|position| 1.0 / position as f64));

    // Users: two favourite themes and an activity level each.
    let tastes: Vec<(usize, usize)> = (0..config.users)
        .map(|_| {
            let first = rng.usize(..themes.len());
            let siblings = &themes_of_category[category_of_theme[first]];
            let second = if siblings.len() > 1 && rng.bool() {
                let other = siblings[rng.usize(..siblings.len() - 1)];
                if other == first { siblings[siblings.len() - 1] } else { other }
            } else {
                rng.usize(..themes.len())
            };
            (first, second)
        })
        .collect();
    let activity = cumulative((0..config.users).map(|_| 0.1 - (1.0 - rng.f64()).ln()));
    let mut first_turns: Vec<usize> = (0..config.users).collect();
    rng.shuffle(&mut first_turns);

    let mut users = Users::default();
    let user_index: Vec<_> = (1..=config.users).map(|n| users.intern(&format!("u{n}"))).collect();
    let mut interactions = Vec::with_capacity(config.interactions);
    let mut time = START_TIME;
    for step in 0..config.interactions {
        let user = first_turns.get(step).copied().unwrap_or_else(|| sample(&activity, &mut rng));
        let item = if rng.f64() < TASTE_SHARE {
            let (first, second) = tastes[user];
            let (start, end) = themes[if rng.u8(..3) < 2 { first } else { second }];
            start + sample(&within_theme[..end - start], &mut rng)
        } else {
            by_popularity[sample(&global, &mut rng)] as usize
        };
        let weight = match rng.u8(..10) {
            0..7 => 1.0,
            7..9 => 2.0,
            _ => 5.0,
        };
        time += rng.u64(1..=120);
        interactions.push(Interaction { user: user_index[user], item: ItemIdx(item as u32), weight, time });
    }
    Ok(DataSet::from_parts(catalog.build(), users, interactions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load;

    #[test]
    fn the_same_configuration_gives_the_same_data_set() {
        let config = GeneratorConfig { items: 50, users: 20, interactions: 500, seed: 9 };
        assert_eq!(generate(&config), generate(&config));
        assert_ne!(generate(&config), generate(&GeneratorConfig { seed: 10, ..config }));
    }

    /// Pins the default data set: a change of the generator or of the pseudo-random generator shows here (update
    /// the figures, and the evaluation figures in the crate docs, on purpose).
    #[test]
    fn the_default_data_set_is_pinned() {
        let data = default_dataset();
        assert_eq!((data.catalog().len(), data.users().len(), data.interactions().len()), (480, 1_000, 30_000));
        assert_eq!(data.catalog().categories().len(), 8);
        let catalog = data.catalog();
        let first = &catalog.items()[0];
        let last = data.interactions().last().unwrap();
        let fingerprint = (
            first.id.as_str(),
            first.title.as_str(),
            data.users().id(data.interactions()[0].user),
            catalog.item(data.interactions()[0].item).id.as_str(),
            data.users().id(last.user),
            catalog.item(last.item).id.as_str(),
            last.time,
        );
        assert_eq!(
            fingerprint,
            ("books-001", "Harbor Field Guide", "u757", "toys-016", "u349", "kitchen-012", 1_701_822_260)
        );
    }

    #[test]
    fn every_user_interacts_and_tastes_show() {
        let data = default_dataset();
        let mut per_user = vec![0; data.users().len()];
        let mut per_theme: std::collections::HashMap<(usize, usize), usize> = Default::default();
        for i in data.interactions() {
            per_user[i.user.index()] += 1;
            // The default catalog has whole themes only, so themes are blocks of THEME_SIZE items.
            *per_theme.entry((i.user.index(), i.item.index() / THEME_SIZE)).or_default() += 1;
        }
        assert!(per_user.iter().all(|&n| n > 0));
        assert!(data.users().find("u1").is_some());
        // Users' interactions concentrate in few themes: the top two themes of a user hold most of them.
        let mut themes = vec![Vec::new(); per_user.len()];
        for ((user, _), count) in per_theme {
            themes[user].push(count);
        }
        for counts in &mut themes {
            counts.sort_unstable_by(|a, b| b.cmp(a));
        }
        let concentrated = themes
            .iter()
            .zip(&per_user)
            .filter(|&(counts, &total)| counts.iter().take(2).sum::<usize>() * 2 > total)
            .count();
        assert!(concentrated * 10 > data.users().len() * 9, "only {concentrated} users follow their tastes");
    }

    #[test]
    fn the_generated_file_loads_back() {
        let data = generate(&GeneratorConfig { items: 30, users: 10, interactions: 200, seed: 1 }).unwrap();
        let mut file = Vec::new();
        load::write(&data, &mut file).unwrap();
        assert_eq!(load::read(&file[..], "generated", &Limits::default()).unwrap(), data);
    }

    #[test]
    fn impossible_configurations_are_refused() {
        let err = generate(&GeneratorConfig { items: 0, ..GeneratorConfig::DEFAULT }).unwrap_err();
        assert_eq!(err.to_string(), "cannot generate items = 0: it must be between 1 and 500000");
        assert!(generate(&GeneratorConfig { interactions: usize::MAX, ..GeneratorConfig::DEFAULT }).is_err());
    }
}
