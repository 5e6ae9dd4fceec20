//! Request validation with FastAPI's 422 body: `{"detail":[{"type","loc","msg","input","ctx"?}]}`.
//!
//! Messages and type codes follow pydantic v2 (what FastAPI 0.115 uses), so a client that branches on them keeps
//! working against these agents.

use std::ops::RangeInclusive;

use axum::{
    Json,
    extract::FromRequestParts,
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::errors::Failure;

/// One problem with one input, located FastAPI-style (`["query", "limit"]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ValidationIssue {
    /// Machine-readable code such as `int_parsing` or `greater_than_equal`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the input was: source (`query`, `path`, `body`) then names, and positions (numbers) within lists or
    /// undecodable JSON.
    pub loc: Vec<Value>,
    /// What is wrong, for people.
    pub msg: String,
    /// The rejected input as received.
    pub input: Value,
    /// The constraint that failed, e.g. `{"ge": 1}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctx: Option<Value>,
}

impl ValidationIssue {
    /// pydantic's `string_pattern_mismatch`: the string `input` at `loc` does not match `pattern`.
    pub fn pattern_mismatch(loc: Vec<Value>, input: impl Into<Value>, pattern: &str) -> Self {
        Self {
            kind: "string_pattern_mismatch".to_owned(),
            loc,
            msg: format!("String should match pattern '{pattern}'"),
            input: input.into(),
            ctx: Some(json!({ "pattern": pattern })),
        }
    }
}

/// A 422 answer listing every problem found in the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"detail": [{"type": "int_parsing", "loc": ["query", "limit"],
    "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "ten"}]}))]
pub struct ValidationErrorBody {
    /// The problems, in the order the inputs were checked.
    pub detail: Vec<ValidationIssue>,
}

impl IntoResponse for ValidationErrorBody {
    fn into_response(self) -> Response {
        let why = match self.detail.as_slice() {
            [] => "invalid input".to_owned(),
            [only] => format!("invalid input {}: {}", loc_text(&only.loc), only.kind),
            issues => {
                format!("{} invalid inputs, the first {}: {}", issues.len(), loc_text(&issues[0].loc), issues[0].kind)
            }
        };
        Failure::attach((StatusCode::UNPROCESSABLE_ENTITY, Json(self)).into_response(), why)
    }
}

/// `query.limit`, `body.categories.0`: where an issue is, for the log.
fn loc_text(loc: &[Value]) -> String {
    let parts: Vec<String> =
        loc.iter().map(|part| part.as_str().map_or_else(|| part.to_string(), str::to_owned)).collect();
    parts.join(".")
}

/// The path parameters of the matched route, percent-decoded as uvicorn decodes the path: bytes that are not UTF-8
/// become U+FFFD. axum's `Path` refuses such a path with a plain-text 400 before the handler runs; FastAPI hands the
/// replaced text to the route, whose validation then answers 422. Never fails.
#[derive(Debug, Clone, Default)]
pub struct LossyPathParams(Vec<(String, String)>);

impl LossyPathParams {
    /// The value of parameter `name` (`{name}` in the route), if the route has one.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LossyPathParams {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(template) = parts.extensions.get::<axum::extract::MatchedPath>() else { return Ok(Self::default()) };
        let params = template
            .as_str()
            .split('/')
            .zip(parts.uri.path().split('/'))
            .filter_map(|(segment, raw)| {
                let name = segment.strip_prefix('{')?.strip_suffix('}')?;
                Some((name.to_owned(), percent_encoding::percent_decode_str(raw).decode_utf8_lossy().into_owned()))
            })
            .collect();
        Ok(Self(params))
    }
}

/// The raw query string as name/value pairs, decoded once; typed getters report FastAPI-shaped issues.
///
/// Unknown parameters are ignored and the last of repeated ones wins, as FastAPI does for scalar parameters.
#[derive(Debug, Clone, Default)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decodes a raw query string (without the `?`).
    pub fn parse(raw: &str) -> Self {
        Self { pairs: form_urlencoded::parse(raw.as_bytes()).into_owned().collect() }
    }

    /// The last value given for `name`, if any.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// An optional integer parameter that must lie within `range`.
    pub fn optional_int(&self, name: &str, range: RangeInclusive<i64>) -> Result<Option<i64>, Box<ValidationIssue>> {
        let Some(raw) = self.get(name) else { return Ok(None) };
        let loc = vec![json!("query"), json!(name)];
        let issue = |kind: &str, msg: String, ctx: Option<Value>| {
            Box::new(ValidationIssue {
                kind: kind.to_owned(),
                loc: loc.clone(),
                msg,
                input: Value::String(raw.to_owned()),
                ctx,
            })
        };
        let below = || {
            let ge = *range.start();
            issue(
                "greater_than_equal",
                format!("Input should be greater than or equal to {ge}"),
                Some(json!({"ge": ge})),
            )
        };
        let above = || {
            let le = *range.end();
            issue("less_than_equal", format!("Input should be less than or equal to {le}"), Some(json!({"le": le})))
        };
        let value = match pydantic_int_text(raw).unwrap_or_default().parse::<i64>() {
            Ok(value) => value,
            // Digits that overflow are still an integer, just out of range, which is what pydantic reports.
            Err(e) if matches!(e.kind(), std::num::IntErrorKind::PosOverflow) => return Err(above()),
            Err(e) if matches!(e.kind(), std::num::IntErrorKind::NegOverflow) => return Err(below()),
            Err(_) => {
                return Err(issue(
                    "int_parsing",
                    "Input should be a valid integer, unable to parse string as an integer".to_owned(),
                    None,
                ));
            }
        };
        if value < *range.start() {
            Err(below())
        } else if value > *range.end() {
            Err(above())
        } else {
            Ok(Some(value))
        }
    }
}

/// An integer as pydantic's lax mode reads it from text, e.g. `" 5 "`, `1_000` or `5.0`; `None` if it is not one
/// (or does not fit an `i64`).
pub fn parse_lax_int(raw: &str) -> Option<i64> {
    pydantic_int_text(raw)?.parse().ok()
}

/// The integer text pydantic's lax mode accepts, normalised for `str::parse`: surrounding whitespace, a sign,
/// single underscores between digits (`1_000`) and a zero fraction (`5.0`) are allowed; anything else is `None`.
fn pydantic_int_text(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let (sign, unsigned) = match trimmed.strip_prefix(['+', '-']) {
        Some(rest) => (&trimmed[..1], rest),
        None => ("", trimmed),
    };
    let whole = match unsigned.split_once('.') {
        Some((whole, fraction)) if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') => whole,
        Some(_) => return None,
        None => unsigned,
    };
    let well_formed = !whole.is_empty()
        && whole.split('_').all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()));
    well_formed.then(|| format!("{sign}{}", whole.replace('_', "")))
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::parse(parts.uri.query().unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_parameter_is_none() {
        assert_eq!(QueryParams::parse("other=1").optional_int("limit", 1..=100), Ok(None));
    }

    #[test]
    fn last_repeated_value_wins() {
        assert_eq!(QueryParams::parse("limit=1&limit=7").optional_int("limit", 1..=100), Ok(Some(7)));
    }

    #[test]
    fn non_integer_reports_int_parsing_with_input() {
        let issue = QueryParams::parse("limit=ten").optional_int("limit", 1..=100).unwrap_err();
        assert_eq!(
            serde_json::to_value(issue).unwrap(),
            json!({"type": "int_parsing", "loc": ["query", "limit"],
                   "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "ten"})
        );
    }

    #[test]
    fn out_of_range_reports_the_bound_in_ctx() {
        let low = QueryParams::parse("limit=0").optional_int("limit", 1..=100).unwrap_err();
        assert_eq!((low.kind.as_str(), low.ctx), ("greater_than_equal", Some(json!({"ge": 1}))));
        let high = QueryParams::parse("limit=101").optional_int("limit", 1..=100).unwrap_err();
        assert_eq!((high.kind.as_str(), high.ctx), ("less_than_equal", Some(json!({"le": 100}))));
        let huge = QueryParams::parse("limit=99999999999999999999").optional_int("limit", 1..=100).unwrap_err();
        assert_eq!(huge.kind, "less_than_equal");
    }

    #[test]
    fn integer_text_is_as_lenient_as_pydantic_and_no_more() {
        for (raw, expected) in [("5.0", 5), ("1_0", 10), (" 5 ", 5), ("+5", 5), ("05", 5), ("5.00", 5)] {
            assert_eq!(QueryParams::parse(&format!("limit={raw}")).optional_int("limit", 1..=100), Ok(Some(expected)));
        }
        for raw in ["5.5", "5.", "0x5", "5e0", "", "1__0", "_1", "1_", "%D9%A5", "5.0000000000000001"] {
            let issue = QueryParams::parse(&format!("limit={raw}")).optional_int("limit", 1..=100).unwrap_err();
            assert_eq!(issue.kind, "int_parsing", "{raw}");
        }
        let negative_zero = QueryParams::parse("limit=-0").optional_int("limit", 1..=100).unwrap_err();
        assert_eq!(negative_zero.kind, "greater_than_equal");
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        assert_eq!(QueryParams::parse("limit=%35").optional_int("limit", 1..=100), Ok(Some(5)));
    }
}
