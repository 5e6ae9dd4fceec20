//! # recsys: the recommender core of agent-mesh
//!
//! Pure logic, no I/O besides reading and writing a data file: the data agent uses it to hold the catalog and the
//! interactions and to turn them into insights; the recommendation agent uses it to turn one user's insights into
//! recommendations with model `v1` or `v2`; the `recsys` command evaluates the models and measures the crate.
//!
//! ```text
//!  DATA_FILE ──load──▶ DataSet ──build──▶ Insights ◀──apply── batches of NewInteraction (POST /interactions)
//!  (or the default                          │
//!   generated set)              user_insights(user, limit, categories)
//!                                           │  UserInsights, as JSON: data agent ──▶ recommendation agent
//!                                           ▼
//!                             Recommender::recommend (v1 Popularity | v2 CoOccurrence) ──▶ [Recommendation]
//! ```
//!
//! ## Data
//! A catalog of [`Item`]s (`id`, `title`, `category`) and interactions (`user`, `item`, `weight`, `time`). Without a
//! `DATA_FILE` the agents use [`default_dataset`]: 480 items in 8 categories, 1 000 users (`u1` to `u1000`) and
//! 30 000 interactions, generated deterministically at start-up from a fixed seed, with the structure real logs
//! have (popular items, users with tastes for a few themes): [`generate`] documents it.
//!
//! ### The `DATA_FILE` format
//! [JSON Lines](https://jsonlines.org/): one JSON object per line, UTF-8, `\n` or `\r\n` line breaks, blank lines
//! ignored. Each object has a `type`, and exactly the fields of its type:
//!
//! ```json
//! {"type":"item","id":"books-001","title":"Harbor Chronicles","category":"books"}
//! {"type":"item","id":"music-001","title":"Ember Sessions","category":"music"}
//! {"type":"interaction","user":"u1","item":"books-001","weight":1,"time":1700000000}
//! {"type":"interaction","user":"u1","item":"music-001","weight":5,"time":1700000060}
//! ```
//!
//! | field | rule |
//! |---|---|
//! | `id`, `user`, `item` | `^[A-Za-z0-9._-]{1,64}$` (the agents' user id pattern: safe in URLs); item ids unique |
//! | `title` | 1 to 200 characters, no control characters, no leading or trailing white space |
//! | `category` | 1 to 40 characters, same rules (the bound of a preferred category, so every one can be preferred) |
//! | `weight` | a number, 0 < weight ≤ 1000: how strong a signal (say 1 view, 2 like, 5 purchase) |
//! | `time` | an integer, seconds since 1970, at most 253402300799 (milliseconds are refused) |
//!
//! Items and interactions may come in any order; interactions are processed in time order (equal times keep
//! file order). A line is at most 4 KiB; a file at most 500 000 items, 1 000 000 users and 5 000 000
//! interactions ([`Limits`]). Unknown fields, missing fields and fields of the other type are errors.
//!
//! Why JSON Lines: `DATA_FILE` is one setting, so one file holds both record types; each line stands alone, so an
//! error names its line and a file can be appended to or streamed; titles with commas or quotes need no CSV
//! dialect; and the records are the JSON the agents already speak. Loading is all or nothing: the first problem
//! stops it with a [`LoadError`] such as `data.jsonl:12: \`weight\` must be greater than 0` or
//! `data.jsonl:7: item \`b1\` is defined twice (first on line 3)`, and nothing is loaded.
//!
//! ## Insights
//! [`Insights`] keeps item popularity overall and per category (top [`insights::POPULAR_K`], exact),
//! item–item co-occurrence (each item's most frequent partners in bounded counters) and each user's items. It is
//! built once from a data set and then updated with batches of [`NewInteraction`]s ([`Insights::apply`]), which are
//! checked whole first and applied entirely or not at all. Applying in batches gives exactly what building at once
//! gives (a test proves it). Memory is bounded by items × counters plus distinct (user, item) pairs.
//!
//! ## The wire: one small answer per request
//! The models run in the recommendation agent; the data lives in the data agent. Per request the recommendation
//! agent asks the data agent for [`UserInsights`] of one user, with the number of items wanted (`limit`) and the
//! user's preferred categories, and gets everything both models need and nothing more:
//! - `history`: the user's latest [`insights::HISTORY_LIMIT`] items (with weight, count and time);
//! - `popular`: the `limit` most popular items the user has not interacted with;
//! - `popular_in`: the same within each preferred category;
//! - `neighbours`: for each history item, its [`insights::NEIGHBOURS`] most similar items the user has not
//!   interacted with (cosine similarity of their audiences).
//!
//! So a request costs a few kilobytes of JSON (at most `limit` × (1 + categories) candidates, 10 history items and
//! 100 neighbours; about 10 kB for `limit` 10 on the default set), whatever the size of the catalog or of the
//! co-occurrence data; the data agent does the filtering
//! it alone can do (it knows the user's whole history), and the model stays a pure function of its input, which
//! is what makes v1 and v2 comparable on the same answer. The alternatives were worse: shipping the co-occurrence
//! matrix or the catalog to every recommendation replica would copy megabytes on every `data-updated`; computing
//! the recommendation in the data agent would make the canary (a recommendation Deployment with `MODEL=v2`)
//! meaningless. Answers are tolerant readers (unknown fields ignored) so either agent can be upgraded first.
//!
//! ## Models
//! [`Recommender`] is the trait; [`ModelName`] (`v1` | `v2`, as `MODEL` says) picks one:
//! - `v1` ([`Popularity`]): popular items the user has not seen, items of the user's preferred categories first;
//! - `v2` ([`CoOccurrence`]): items chosen together with the user's latest items, weighted by how strong and how
//!   recent each was; popularity breaks near ties and fills the list; cold users get v1's answer.
//!
//! Every [`Recommendation`] has an `id`, a `title`, a `score` and a short `reason`. Lists have exactly `limit`
//! items when the catalog has that many the user has not seen, never one the user interacted with, and are
//! deterministic (ties by id).
//!
//! ## Evaluation
//! [`eval::evaluate`] (and `recsys eval`) splits a data set leave-last-out per user and prints precision@10,
//! recall@10 and nDCG@10 of both models side by side. On the default data set (`cargo run --release -p recsys --
//! eval`):
//!
//! ```text
//! leave-last-out: 996 users evaluated, 4 with fewer than two items left out, lists of 10
//! model    precision@10      recall@10        nDCG@10
//! v1             0.0171         0.1707         0.1071
//! v2             0.0581         0.5813         0.3621
//! ```
//!
//! v2 finds the held-out item 3.4 times as often as v1, and ranks it higher: the default data was generated with
//! user tastes, the structure co-occurrence exploits, while popularity only catches the share of interactions that
//! follow global popularity. Both figures will be lower on real data; the comparison is what the canary is about.
//! (Precision@10 is recall@10 / 10 here, since each user has exactly one held-out item.)
//!
//! ## Scale
//! `bench/recsys.sh` generates 100 000 items, 50 000 users and 1 000 000 interactions (`recsys generate`, a 96 MiB
//! `DATA_FILE`), then measures with a release build the time to load and process them, the peak memory, and the
//! time per request of the data side (`user_insights` and its JSON) and of each model (JSON decoding, `recommend`
//! and JSON encoding), on that set and on the default one. Measured on the 2-core development machine while other
//! builds kept its load average between 7 and 10 (wall times are inflated accordingly; CPU times are not):
//!
//! | | 1 000 000 interactions | default set |
//! |---|---|---|
//! | load + process | 7.6 to 12.0 s wall; 5.5 to 6.0 s CPU (load 1.5–1.7 s, process 4.0–4.3 s) | 0.04 s |
//! | the same, 2026-12-01, load average 9 to 11 | 8.8 to 19 s wall; 5.9 to 6.4 s CPU (load 1.35–1.5 s, process 4.6–4.9 s) | |
//! | peak RSS / RSS after | 159 MiB / 136 MiB (164 / 141 before the flat partner lists) | 6 MiB / 5 MiB |
//! | per request, data side, p50 / p99 | 117 µs / 4.2 ms | 58 µs / 162 µs |
//! | per request, v1, p50 / p99 | 77 µs / 1.1 ms | 57 µs / 176 µs |
//! | per request, v2, p50 / p99 | 95 µs / 2.4 ms | 76 µs / 212 µs |
//!
//! Processing is bound by memory latency: each new (user, item) pair updates the partner lists of up to
//! [`insights::CO_OCCURRENCE_WINDOW`] other items, scattered over the catalog (a `perf record -e cpu-clock` profile
//! of the 1 000 000-interaction build puts a third of the CPU time in those updates, almost all of it waiting for
//! cache misses). The partner lists are therefore stored flat, one block per item in shared arrays, rather than as
//! two small vectors per item: one pointer chase less per update, no reallocation as lists grow, and 5 MiB less
//! memory (peak 159 MiB instead of 164 MiB on the 1 000 000-interaction set).
//!
//! The maps from item, user and category ids to indices use [`foldhash`] rather than std's SipHash: loading looks
//! up two ids per line, and with SipHash hashing was a tenth of the load time. foldhash is the hasher hashbrown
//! itself defaults to (so it was already in the dependency tree), is seeded per process at random, and claims
//! only "minimal" resistance to chosen-collision attacks: the ids come from the operator's `DATA_FILE` and from
//! `POST /interactions`, which the mesh keeps closed to other workloads, and are at most 64 bytes each. With it
//! the load part dropped from 1.8–2.2 s to 1.35–1.5 s of CPU (2026-12-01, load average 9, interleaved runs).

pub mod catalog;
pub mod dataset;
pub mod eval;
pub mod fingerprint;
pub mod generate;
pub mod insights;
pub mod load;
pub mod models;
mod topk;
pub mod validate;
pub mod wire;

pub use catalog::{Catalog, Item};
pub use dataset::{DataSet, Limits};
pub use generate::default_dataset;
pub use insights::{Applied, BatchError, Insights, QueryError, UserQuery};
pub use load::{LoadError, load};
pub use models::{CoOccurrence, ModelName, Popularity, Preferences, Recommendation, Recommender};
pub use wire::{NewInteraction, UserInsights};
