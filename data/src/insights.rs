//! The insights the data agent serves (`GET /insights`, `GET /insights/users/{user}`) and where they live.
//!
//! [`InsightsStore`] holds one [`recsys::Insights`], built once at start-up from `DATA_FILE` or the default data
//! set, behind a `std::sync::RwLock`. Reads (`user_insights`, about 60 µs on the default set and 120 µs on a
//! 1 M-interaction set) hold the read lock; a batch of new interactions is applied on the blocking pool under the
//! write lock, all or nothing, so a reader sees a batch entirely or not at all.
//!
//! Why a lock rather than an immutable snapshot swapped in with `arc-swap`: the insights are not small (about
//! 140 MiB for 1 M interactions), and a snapshot per batch means copying them whole on every `POST /interactions`,
//! which costs far more than the apply itself and doubles the memory while it runs; keeping two copies and applying
//! each batch twice (left-right) doubles the memory for good. Under the lock, readers wait at most for one batch of
//! at most [`recsys::insights::MAX_BATCH`] rows: README "Insights under load" gives the measured cost (a 500-row
//! `POST /interactions` takes 15 ms p50 end to end on the 1 M set, lock included; each apply logs `locked_us`). `std`'s lock is used because no lock is held across an `.await`,
//! and on Linux it stops admitting new readers while a writer waits, so a stream of reads cannot starve a batch.
//!
//! Both routes answer with the insights' `ETag` ([`recsys::Insights::etag`]: a content fingerprint and the
//! version), and a request whose `If-None-Match` matches it gets 304 with no body ([`if_none_match`]). The check
//! runs under the same read lock as the answer would, after the query is validated and before anything is
//! computed: a caller revalidating what it cached costs data a lock and a string comparison, not the 60 µs of
//! `user_insights` and the encoding.

use std::{
    path::Path,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json,
    extract::{RawQuery, State},
    http::{
        HeaderMap, HeaderValue, StatusCode,
        header::{ETAG, IF_NONE_MATCH},
    },
    response::{IntoResponse, Response},
};
use recsys::{
    Applied, BatchError, Catalog, Insights, Limits, LoadError, UserQuery,
    insights::{MAX_CATEGORIES, MAX_LIMIT, NEIGHBOURS},
    validate::{self, MAX_CATEGORY_CHARS},
    wire::{InsightsSummary, NewInteraction, UserInsights},
};
use serde_json::{Value, json};
use shared::fastapi::{LossyPathParams, QueryParams, ValidationErrorBody, ValidationIssue, errors::ErrorBody};
use utoipa::IntoParams;

use crate::AppState;

/// `limit` when a request gives none: the recommendation agent's default number of recommendations.
pub const DEFAULT_LIMIT: usize = 10;

/// The insights of the data set being served, shared by every request.
#[derive(Debug, Clone)]
pub struct InsightsStore {
    insights: Arc<RwLock<Insights>>,
    catalog: Arc<Catalog>,
}

/// The default data set's insights, built once per process: test suites start many data agents.
fn default_insights() -> &'static Insights {
    static DEFAULT: OnceLock<Insights> = OnceLock::new();
    DEFAULT.get_or_init(|| Insights::build(&recsys::default_dataset(), &Limits::default()))
}

impl InsightsStore {
    /// Loads `data_file` (the default data set when `None`) and processes it into insights. A bad file is refused
    /// whole, with the file and line in the error.
    pub fn load(data_file: Option<&Path>) -> Result<Self, LoadError> {
        let started = Instant::now();
        let insights = match data_file {
            None => default_insights().clone(),
            Some(path) => Insights::build(&recsys::load(path)?, &Limits::default()),
        };
        tracing::info!(
            source = data_file.map_or_else(|| "default data set".to_owned(), |p| p.display().to_string()),
            items = insights.catalog().len(),
            users = insights.users().len(),
            interactions = insights.interactions(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "insights built"
        );
        Ok(Self::new(insights))
    }

    /// A store holding `insights`.
    pub fn new(insights: Insights) -> Self {
        Self { catalog: Arc::clone(insights.catalog()), insights: Arc::new(RwLock::new(insights)) }
    }

    /// The catalog (it never changes while the process runs, so reading it takes no lock).
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Runs `read` on the current insights. A panic in an earlier apply cannot leave them half-changed (apply
    /// checks the whole batch before changing anything), so a poisoned lock is still read.
    pub fn read<R>(&self, read: impl FnOnce(&Insights) -> R) -> R {
        read(&self.insights.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies a batch on the blocking pool (a full batch takes milliseconds on a large set, too long for an
    /// async worker), all or nothing. Rows without a time get the current time.
    pub async fn apply(&self, batch: Vec<NewInteraction>) -> Result<Applied, BatchError> {
        let insights = Arc::clone(&self.insights);
        let task = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
            let started = Instant::now();
            let applied = insights.write().unwrap_or_else(PoisonError::into_inner).apply(&batch, now);
            (applied, started.elapsed())
        });
        let (applied, took) = task.await.expect("applying a batch does not panic");
        if let Ok(applied) = &applied {
            tracing::info!(
                version = applied.version,
                interactions = applied.interactions,
                new_users = applied.new_users,
                locked_us = took.as_micros() as u64,
                "interactions applied"
            );
        }
        applied
    }
}

/// Query parameters of `GET /insights/users/{user}` (documentation; parsing is in the handler, since `category`
/// repeats).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserInsightsParams {
    /// How many candidates each popularity list holds: the number of recommendations wanted.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub limit: Option<i64>,
    /// A preferred category (repeat the parameter for several, at most 10; each 1 to 40 characters); `popular_in`
    /// answers each once, in the order given. A category the catalog does not have gets an empty list.
    #[param(max_items = 10)]
    pub category: Option<Vec<String>>,
    /// How many neighbours of each history item `neighbours` lists, 0 to 10 (a client that reads none, such as
    /// model v1, asks for 0: the answer is then a fraction of the size).
    #[param(minimum = 0, maximum = 10, default = 10)]
    pub neighbours: Option<i64>,
}

/// Query parameters of `GET /insights` (documentation).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryParams {
    /// How many of the most popular items to list, overall and per category.
    #[param(minimum = 1, maximum = 100, default = 10)]
    pub limit: Option<i64>,
}

fn query_issue(kind: &str, loc: Vec<Value>, msg: String, input: Value, ctx: Value) -> ValidationIssue {
    ValidationIssue { kind: kind.to_owned(), loc, msg, input, ctx: Some(ctx) }
}

/// A user id from the path, with FastAPI's 422 when it breaks [`validate::ID_PATTERN`].
pub fn path_id(path: &LossyPathParams, name: &str) -> Result<String, Box<ValidationIssue>> {
    let raw = path.get(name).unwrap_or_default();
    match validate::id(raw) {
        Ok(()) => Ok(raw.to_owned()),
        Err(_) => Err(Box::new(ValidationIssue::pattern_mismatch(
            vec![json!("path"), json!(name)],
            raw,
            validate::ID_PATTERN,
        ))),
    }
}

/// The `limit` query parameter, 1 to 100, [`DEFAULT_LIMIT`] when absent.
pub fn limit_param(query: &QueryParams) -> Result<usize, Box<ValidationIssue>> {
    let limit = query.optional_int("limit", 1..=MAX_LIMIT as i64)?;
    Ok(limit.map_or(DEFAULT_LIMIT, |n| n as usize))
}

/// Every `category` of the raw query, in order, each checked as pydantic checks a `list[constr(min_length=1,
/// max_length=40)]` with `max_length=10`.
fn categories_param(raw: &str) -> Result<Vec<String>, Vec<ValidationIssue>> {
    let categories: Vec<String> = form_urlencoded::parse(raw.as_bytes())
        .filter(|(name, _)| name == "category")
        .map(|(_, value)| value.into_owned())
        .collect();
    if categories.len() > MAX_CATEGORIES {
        return Err(vec![query_issue(
            "too_long",
            vec![json!("query"), json!("category")],
            format!("List should have at most {MAX_CATEGORIES} items after validation, not {}", categories.len()),
            json!(categories),
            json!({"field_type": "List", "max_length": MAX_CATEGORIES, "actual_length": categories.len()}),
        )]);
    }
    let issues: Vec<ValidationIssue> = categories
        .iter()
        .enumerate()
        .filter_map(|(index, category)| {
            let loc = vec![json!("query"), json!("category"), json!(index)];
            let input = Value::String(category.clone());
            if category.is_empty() {
                Some(query_issue(
                    "string_too_short",
                    loc,
                    "String should have at least 1 character".to_owned(),
                    input,
                    json!({"min_length": 1}),
                ))
            } else if category.chars().count() > MAX_CATEGORY_CHARS {
                Some(query_issue(
                    "string_too_long",
                    loc,
                    format!("String should have at most {MAX_CATEGORY_CHARS} characters"),
                    input,
                    json!({"max_length": MAX_CATEGORY_CHARS}),
                ))
            } else {
                None
            }
        })
        .collect();
    if issues.is_empty() { Ok(categories) } else { Err(issues) }
}

/// Whether an `If-None-Match` field (all its lines) matches `etag` (RFC 9110 §13.1.2): `*`, or a list of entity
/// tags one of which has the same opaque tag, by weak comparison (a `W/` prefix is ignored, as it must be for
/// `If-None-Match`). A malformed field matches nothing, so its sender gets the full answer.
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    let mut lines = headers.get_all(IF_NONE_MATCH).iter().peekable();
    if lines.peek().is_none() {
        return false;
    }
    let mut matched = false;
    for line in lines {
        match std::str::from_utf8(line.as_bytes()).ok().and_then(|field| list_matches(field, etag)) {
            Some(found) => matched |= found,
            None => return false,
        }
    }
    matched
}

/// One `If-None-Match` line: `Some(whether it matches)`, `None` when malformed.
fn list_matches(field: &str, etag: &str) -> Option<bool> {
    const OWS: [char; 2] = [' ', '\t'];
    let field = field.trim_matches(OWS);
    if field == "*" {
        return Some(true);
    }
    let (mut rest, mut matched) = (field, false);
    loop {
        // `#entity-tag`: empty list elements (and the whitespace around them) are allowed.
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(matched);
        }
        let tag = rest.strip_prefix("W/").unwrap_or(rest);
        let opaque_len = tag.strip_prefix('"')?.find('"')? + 2;
        let opaque = &tag[..opaque_len];
        // etagc: `!`, `#` to `~`, or obs-text; no space, no control character.
        if !opaque[1..opaque_len - 1].bytes().all(|b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80) {
            return None;
        }
        matched |= opaque == etag;
        rest = tag[opaque_len..].trim_start_matches(OWS);
        if !(rest.is_empty() || rest.starts_with(',')) {
            return None;
        }
    }
}

/// `answer` with the insights' `etag`: the body with 200, or 304 Not Modified and no body when it is `None` (the
/// caller's `If-None-Match` matched).
fn tagged<T: serde::Serialize>(etag: &str, answer: Option<T>) -> Response {
    let etag = [(ETAG, HeaderValue::from_str(etag).expect("an entity tag is visible ASCII"))];
    match answer {
        Some(answer) => (etag, Json(answer)).into_response(),
        None => (StatusCode::NOT_MODIFIED, etag).into_response(),
    }
}

/// Everything a model needs to recommend to one user: the contract between the data and recommendation agents
/// (see the recsys crate docs). A user never seen is not an error: the answer is a cold user's (`interacted` 0,
/// no history), so the recommendation agent falls back to popularity.
///
/// The `ETag` identifies the content of the insights (see [`recsys::Insights::etag`]); a request whose
/// `If-None-Match` matches it gets 304 without the insights being computed or encoded. The query is validated
/// first: an invalid one is a 422 whatever `If-None-Match` says.
#[utoipa::path(get, path = "/insights/users/{user}", tag = "insights",
    params(("user" = String, Path, description = "User id", pattern = "^[A-Za-z0-9._-]{1,64}$"), UserInsightsParams,
        ("if-none-match" = Option<String>, Header, description = "Entity tags of insights the caller holds (or `*`): \
            when one is the current `ETag`, the answer is 304 without a body")),
    responses(
        (status = 200, description = "The user's history, the popular items they have not seen (overall and in each \
            category asked for) and the neighbours of their latest items", body = UserInsights,
            headers(("etag" = String, description = "Strong entity tag of the insights' content, \
                `\"<16 hex digits of fingerprint>-<version>\"`: it changes with every applied batch, and differs \
                between data sets"))),
        (status = 304, description = "`If-None-Match` matched: the insights are unchanged since that tag, and an \
            answer computed from them is still current",
            headers(("etag" = String, description = "The current entity tag"))),
        (status = 422, description = "Invalid user id, limit or category", body = ValidationErrorBody),
    ))]
pub async fn user_insights(
    State(state): State<Arc<AppState>>,
    path: LossyPathParams,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ValidationErrorBody> {
    let raw = raw.unwrap_or_default();
    let query = QueryParams::parse(&raw);
    let neighbours = query.optional_int("neighbours", 0..=NEIGHBOURS as i64);
    // Every invalid input is reported at once, path first, then the query in declaration order, as FastAPI does.
    let (user, limit, categories, neighbours) =
        match (path_id(&path, "user"), limit_param(&query), categories_param(&raw), neighbours) {
            (Ok(user), Ok(limit), Ok(categories), Ok(neighbours)) => (user, limit, categories, neighbours),
            (user, limit, categories, neighbours) => {
                let mut detail: Vec<ValidationIssue> =
                    user.err().into_iter().chain(limit.err()).map(|issue| *issue).collect();
                detail.extend(categories.err().unwrap_or_default());
                detail.extend(neighbours.err().map(|issue| *issue));
                return Err(ValidationErrorBody { detail });
            }
        };
    let neighbours = neighbours.map_or(NEIGHBOURS, |n| n as usize);
    let query = UserQuery { user: &user, limit, categories: &categories, neighbours };
    // The tag and the answer come from the same read, so the tag always names what the body holds.
    let (etag, answer) = state.insights.read(|insights| {
        let etag = insights.etag();
        let answer = (!if_none_match(&headers, &etag)).then(|| insights.user_insights(&query));
        (etag, answer)
    });
    // Every rule user_insights enforces was checked above with FastAPI's shapes.
    Ok(tagged(&etag, answer.map(|answer| answer.expect("the query was validated"))))
}

/// What the insights hold: counts, and the most popular items overall and per category. Tagged and answered 304
/// on a matching `If-None-Match` as `GET /insights/users/{user}` is.
#[utoipa::path(get, path = "/insights", tag = "insights",
    params(SummaryParams,
        ("if-none-match" = Option<String>, Header, description = "Entity tags of insights the caller holds (or `*`): \
            when one is the current `ETag`, the answer is 304 without a body")),
    responses(
        (status = 200, description = "The insights' version, counts and most popular items", body = InsightsSummary,
            headers(("etag" = String, description = "Strong entity tag of the insights' content (as on \
                `/insights/users/{user}`)"))),
        (status = 304, description = "`If-None-Match` matched: the insights are unchanged since that tag",
            headers(("etag" = String, description = "The current entity tag"))),
        (status = 422, description = "Invalid limit", body = ValidationErrorBody),
    ))]
pub async fn summary(
    State(state): State<Arc<AppState>>,
    query: QueryParams,
    headers: HeaderMap,
) -> Result<Response, ValidationErrorBody> {
    let limit = limit_param(&query).map_err(|issue| ValidationErrorBody { detail: vec![*issue] })?;
    let (etag, answer) = state.insights.read(|insights| {
        let etag = insights.etag();
        let answer = (!if_none_match(&headers, &etag)).then(|| insights.summary(limit));
        (etag, answer)
    });
    Ok(tagged(&etag, answer))
}

/// The answer when the insights have no room for a batch's new users (the bound of `recsys::Limits`).
pub fn no_room(max: usize) -> Response {
    let detail = format!("No room for new users: the data agent keeps at most {max}");
    shared::fastapi::Failure::attach(
        (StatusCode::INSUFFICIENT_STORAGE, Json(ErrorBody::new(detail))).into_response(),
        "batch refused: user bound reached",
    )
}
