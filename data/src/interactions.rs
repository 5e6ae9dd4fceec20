//! `POST /interactions`: a batch of new interactions, validated row by row with FastAPI's 422 shapes, applied to
//! the insights all or nothing, then announced with a debounced `data-updated` event.
//!
//! The body is checked as FastAPI checks this pydantic model, so clients get the answers they would get from a
//! Python data agent (every issue at once, located at `["body", "interactions", <row>, <field>]`):
//!
//! ```python
//! class Interaction(BaseModel, extra="forbid"):
//!     user: str = Field(pattern=ID_PATTERN)
//!     item: str = Field(pattern=ID_PATTERN)            # and in the catalog (value_error otherwise)
//!     weight: float = Field(gt=0, le=1000, allow_inf_nan=False)
//!     time: int | None = Field(None, ge=0, le=253402300799)
//! class Batch(BaseModel, extra="forbid"):
//!     interactions: list[Interaction] = Field(min_length=1, max_length=1000)
//! ```

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use recsys::{
    BatchError, Catalog,
    insights::{MAX_BATCH, RowError},
    validate::{self, FieldError, MAX_TIME, MAX_WEIGHT},
    wire::NewInteraction,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use shared::{
    fastapi::{BodyRejection, JsonBody, ValidationErrorBody, ValidationIssue, validation::parse_lax_int},
    obs::TraceHeaders,
};
use utoipa::ToSchema;

use crate::{AppState, insights::no_room};

/// The body of `POST /interactions` (documentation; validation is [`parse_batch`]).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"interactions": [
    {"user": "u1", "item": "books-001", "weight": 1.0},
    {"user": "u2", "item": "music-003", "weight": 5, "time": 1700000000}]}))]
pub struct InteractionBatch {
    /// 1 to 1000 rows (and at most MAX_BODY_BYTES of JSON, 64 KiB by default: about 900 rows of typical size).
    #[schema(min_items = 1, max_items = 1000)]
    pub interactions: Vec<NewInteraction>,
}

/// Whether subscribers will be told of a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventSchedule {
    /// A `data-updated` event will be published once this burst of batches pauses (debounced).
    Scheduled,
    /// No sidecar is configured (DAPR_HTTP_PORT unset), so no events are sent.
    Disabled,
}

/// What `POST /interactions` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"applied": 2, "new_users": 0, "version": 7, "event": "scheduled"}))]
pub struct BatchApplied {
    /// Rows applied: all of the batch.
    pub applied: usize,
    /// Users seen for the first time.
    pub new_users: usize,
    /// The insights' version now (`version` of `GET /insights` and of every user's insights).
    pub version: u64,
    /// Whether a `data-updated` event will announce it.
    pub event: EventSchedule,
}

/// Why a batch was refused; nothing of it was applied.
#[derive(Debug)]
pub enum BatchRefused {
    /// 400, 408, 413 or 422: the body could not be read or is invalid.
    Body(BodyRejection),
    /// 507: the batch's new users would pass the bound on users.
    NoRoom {
        /// The bound.
        max: usize,
    },
}

impl From<ValidationErrorBody> for BatchRefused {
    fn from(body: ValidationErrorBody) -> Self {
        Self::Body(BodyRejection::Invalid(body))
    }
}

impl IntoResponse for BatchRefused {
    fn into_response(self) -> Response {
        match self {
            Self::Body(rejection) => rejection.into_response(),
            Self::NoRoom { max } => no_room(max),
        }
    }
}

/// An issue, boxed: most results here carry one on their error side, and it is large.
type Issue = Box<ValidationIssue>;

fn issue(kind: &str, loc: Vec<Value>, msg: impl Into<String>, input: Value, ctx: Option<Value>) -> Issue {
    Box::new(ValidationIssue { kind: kind.to_owned(), loc, msg: msg.into(), input, ctx })
}

/// pydantic's issue for a value that is well typed but breaks a rule of [`validate`].
fn rule_issue(loc: Vec<Value>, input: Value, error: FieldError) -> Issue {
    match error {
        FieldError::Id => Box::new(ValidationIssue::pattern_mismatch(loc, input, validate::ID_PATTERN)),
        FieldError::NotPositive => {
            issue("greater_than", loc, "Input should be greater than 0", input, Some(json!({"gt": 0})))
        }
        FieldError::TooHeavy => issue(
            "less_than_equal",
            loc,
            format!("Input should be less than or equal to {MAX_WEIGHT}"),
            input,
            Some(json!({"le": MAX_WEIGHT})),
        ),
        FieldError::NotFinite => issue("finite_number", loc, "Input should be a finite number", input, None),
        FieldError::UnknownItem => issue(
            "value_error",
            loc,
            "Value error, no item of the catalog has this id",
            input,
            Some(json!({"error": {}})),
        ),
        FieldError::TooLate => issue(
            "less_than_equal",
            loc,
            format!("Input should be less than or equal to {MAX_TIME}"),
            input,
            Some(json!({"le": MAX_TIME})),
        ),
        other => issue("value_error", loc, format!("Value error, {other}"), input, Some(json!({"error": {}}))),
    }
}

/// An id field (`user` or `item`).
fn id_field(value: &Value, loc: Vec<Value>) -> Result<String, Issue> {
    let Value::String(text) = value else {
        return Err(issue("string_type", loc, "Input should be a valid string", value.clone(), None));
    };
    validate::id(text).map_err(|error| rule_issue(loc, value.clone(), error))?;
    Ok(text.clone())
}

/// `weight`, read as pydantic's lax `float` reads it (numbers, numeric strings, booleans).
fn weight_field(value: &Value, loc: Vec<Value>) -> Result<f64, Issue> {
    let weight = match value {
        Value::Number(number) => number.as_f64().unwrap_or(f64::NAN),
        Value::Bool(flag) => f64::from(u8::from(*flag)),
        Value::String(text) => text.trim().parse::<f64>().map_err(|_| {
            issue(
                "float_parsing",
                loc.clone(),
                "Input should be a valid number, unable to parse string as a number",
                value.clone(),
                None,
            )
        })?,
        _ => return Err(issue("float_type", loc, "Input should be a valid number", value.clone(), None)),
    };
    validate::weight(weight).map_err(|error| rule_issue(loc, value.clone(), error))?;
    Ok(weight)
}

/// `time`, read as pydantic's lax `int | None` reads it; `null` is no time.
fn time_field(value: &Value, loc: Vec<Value>) -> Result<Option<u64>, Issue> {
    let below_zero = |loc| {
        issue(
            "greater_than_equal",
            loc,
            "Input should be greater than or equal to 0",
            value.clone(),
            Some(json!({"ge": 0})),
        )
    };
    let time = match value {
        Value::Null => return Ok(None),
        Value::Bool(flag) => u64::from(*flag),
        Value::Number(number) => match (number.as_u64(), number.as_i64(), number.as_f64()) {
            (Some(time), _, _) => time,
            (None, Some(_), _) => return Err(below_zero(loc)),
            (None, None, Some(float)) if float.fract() != 0.0 || !float.is_finite() => {
                return Err(issue(
                    "int_from_float",
                    loc,
                    "Input should be a valid integer, got a number with a fractional part",
                    value.clone(),
                    None,
                ));
            }
            (None, None, Some(float)) if float < 0.0 => return Err(below_zero(loc)),
            // Whole and beyond u64: far past the bound.
            _ => u64::MAX,
        },
        Value::String(text) => match parse_lax_int(text) {
            Some(time) if time < 0 => return Err(below_zero(loc)),
            Some(time) => time as u64,
            None => {
                return Err(issue(
                    "int_parsing",
                    loc,
                    "Input should be a valid integer, unable to parse string as an integer",
                    value.clone(),
                    None,
                ));
            }
        },
        _ => return Err(issue("int_type", loc, "Input should be a valid integer", value.clone(), None)),
    };
    validate::time(time).map_err(|error| rule_issue(loc, value.clone(), error))?;
    Ok(Some(time))
}

/// The value, or `None` with its issue appended to `issues`.
fn keep<T>(result: Result<T, Issue>, issues: &mut Vec<ValidationIssue>) -> Option<T> {
    result.map_err(|issue| issues.push(*issue)).ok()
}

/// One row; its issues are appended to `issues`.
fn parse_row(
    row: &Value,
    index: usize,
    catalog: &Catalog,
    issues: &mut Vec<ValidationIssue>,
) -> Option<NewInteraction> {
    let at = |field: &str| vec![json!("body"), json!("interactions"), json!(index), json!(field)];
    let Value::Object(fields) = row else {
        issues.push(*issue(
            "model_attributes_type",
            vec![json!("body"), json!("interactions"), json!(index)],
            "Input should be a valid dictionary or object to extract fields from",
            row.clone(),
            None,
        ));
        return None;
    };
    let before = issues.len();
    let missing = |name: &str| issue("missing", at(name), "Field required", row.clone(), None);
    // Field by field in declaration order, as pydantic reports them.
    let user = fields.get("user").map_or_else(|| Err(missing("user")), |value| id_field(value, at("user")));
    let item = fields.get("item").map_or_else(
        || Err(missing("item")),
        |value| {
            let id = id_field(value, at("item"))?;
            match catalog.find(&id) {
                Some(_) => Ok(id),
                None => Err(rule_issue(at("item"), value.clone(), FieldError::UnknownItem)),
            }
        },
    );
    let weight = fields.get("weight").map_or_else(|| Err(missing("weight")), |value| weight_field(value, at("weight")));
    let time = fields.get("time").map_or(Ok(None), |value| time_field(value, at("time")));
    let (user, item, weight, time) = (keep(user, issues), keep(item, issues), keep(weight, issues), keep(time, issues));
    for (name, value) in fields {
        if !["user", "item", "weight", "time"].contains(&name.as_str()) {
            issues.push(*issue("extra_forbidden", at(name), "Extra inputs are not permitted", value.clone(), None));
        }
    }
    if issues.len() > before {
        return None;
    }
    Some(NewInteraction { user: user?, item: item?, weight: weight?, time: time? })
}

/// Checks a decoded body against the model in the module docs and every row against the catalog.
pub fn parse_batch(body: &Value, catalog: &Catalog) -> Result<Vec<NewInteraction>, ValidationErrorBody> {
    let Value::Object(object) = body else {
        return Err(ValidationErrorBody {
            detail: vec![*issue(
                "model_attributes_type",
                vec![json!("body")],
                "Input should be a valid dictionary or object to extract fields from",
                body.clone(),
                None,
            )],
        });
    };
    let mut issues = Vec::new();
    let rows = parse_rows(object, catalog, &mut issues);
    for (name, value) in object {
        if name != "interactions" {
            issues.push(*issue(
                "extra_forbidden",
                vec![json!("body"), json!(name)],
                "Extra inputs are not permitted",
                value.clone(),
                None,
            ));
        }
    }
    match rows {
        Some(rows) if issues.is_empty() => Ok(rows),
        _ => Err(ValidationErrorBody { detail: issues }),
    }
}

fn parse_rows(
    object: &Map<String, Value>,
    catalog: &Catalog,
    issues: &mut Vec<ValidationIssue>,
) -> Option<Vec<NewInteraction>> {
    let loc = || vec![json!("body"), json!("interactions")];
    let Some(value) = object.get("interactions") else {
        issues.push(*issue("missing", loc(), "Field required", Value::Object(object.clone()), None));
        return None;
    };
    let Value::Array(rows) = value else {
        issues.push(*issue("list_type", loc(), "Input should be a valid list", value.clone(), None));
        return None;
    };
    let (count, bounds) = (rows.len(), 1..=MAX_BATCH);
    if !bounds.contains(&count) {
        let (kind, msg, ctx) = if count == 0 {
            (
                "too_short",
                "List should have at least 1 item after validation, not 0".to_owned(),
                json!({"min_length": 1}),
            )
        } else {
            (
                "too_long",
                format!("List should have at most {MAX_BATCH} items after validation, not {count}"),
                json!({"max_length": MAX_BATCH}),
            )
        };
        let mut ctx = ctx;
        ctx["field_type"] = json!("List");
        ctx["actual_length"] = json!(count);
        // pydantic stops at the length for an empty list, and reports the rows first for a long one; a batch that
        // long is refused without judging its rows, which could be many thousands.
        issues.push(*issue(kind, loc(), msg, value.clone(), Some(ctx)));
        return None;
    }
    let parsed: Vec<Option<NewInteraction>> =
        rows.iter().enumerate().map(|(index, row)| parse_row(row, index, catalog, issues)).collect();
    parsed.into_iter().collect()
}

/// The issues of rows [`recsys::Insights::apply`] refused (a safety net: [`parse_batch`] checks the same rules
/// first).
fn row_issues(rows: Vec<RowError>, batch: &[NewInteraction]) -> ValidationErrorBody {
    let detail = rows
        .into_iter()
        .map(|RowError { row, field, error }| {
            let input = serde_json::to_value(&batch[row]).map(|r| r[field].clone()).unwrap_or(Value::Null);
            *rule_issue(vec![json!("body"), json!("interactions"), json!(row), json!(field)], input, error)
        })
        .collect();
    ValidationErrorBody { detail }
}

/// Adds interactions to the insights, all or nothing, and schedules a `data-updated` event.
#[utoipa::path(post, path = "/interactions", tag = "insights", request_body = InteractionBatch,
    responses(
        (status = 200, description = "Every row was applied; `version` is the insights' new version", body = BatchApplied),
        (status = 422, description = "The body is missing, not JSON, or invalid: every problem is listed, rows at \
            `[\"body\", \"interactions\", <row>, <field>]`; nothing was applied", body = ValidationErrorBody),
        (status = 507, description = "The batch's new users would pass the bound on users; nothing was applied",
            body = shared::fastapi::errors::ErrorBody),
        shared::dapr::AppTokenErrors,
        shared::fastapi::BodyReadErrors,
    ))]
pub async fn post_interactions(
    State(state): State<Arc<AppState>>,
    trace: TraceHeaders,
    body: Result<JsonBody, BodyRejection>,
) -> Result<Json<BatchApplied>, BatchRefused> {
    let body = body.map_err(BatchRefused::Body)?;
    let batch = parse_batch(&body.0, state.insights.catalog())?;
    let applied = match state.insights.apply(batch.clone()).await {
        Ok(applied) => applied,
        Err(BatchError::Rows(rows)) => return Err(row_issues(rows, &batch).into()),
        Err(BatchError::TooManyUsers { max }) => return Err(BatchRefused::NoRoom { max }),
        Err(BatchError::Empty | BatchError::TooLarge) => unreachable!("parse_batch bounds the batch"),
    };
    let event = match &state.events {
        Some(events) => {
            events.notify((applied.version, trace));
            EventSchedule::Scheduled
        }
        None => EventSchedule::Disabled,
    };
    Ok(Json(BatchApplied {
        applied: applied.interactions,
        new_users: applied.new_users,
        version: applied.version,
        event,
    }))
}
