//! JSON request bodies validated with FastAPI's 422 shapes (pydantic v2 messages and type codes).
//!
//! axum's `Json` rejections are plain text with 400/415/422; FastAPI answers every body problem with a 422 list:
//! a missing body is `missing` at `["body"]`, undecodable JSON is `json_invalid` at `["body", <position>]`, a body
//! that is not an object is `model_attributes_type`, and each bad field is reported at `["body", <field>, ...]`.
//! [`JsonBody`] decodes the body that way and [`Fields`] checks an object field by field, collecting every issue.
//! A body that cannot be read at all (too large, too slow, broken off) is rejected before any of this, see
//! [`crate::request_body`].

use axum::{
    extract::{FromRequest, Request},
    http::header::CONTENT_TYPE,
};
use serde_json::{Map, Value, json};

use crate::{
    request_body::{BodyBytes, BodyRejection},
    validation::{ValidationErrorBody, ValidationIssue},
};

/// A request body decoded as JSON the way FastAPI does it (see the module docs).
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

fn issue(kind: &str, loc: Vec<Value>, msg: impl Into<String>, input: Value, ctx: Option<Value>) -> ValidationIssue {
    ValidationIssue { kind: kind.to_owned(), loc, msg: msg.into(), input, ctx }
}

fn boxed(
    kind: &str,
    loc: Vec<Value>,
    msg: impl Into<String>,
    input: Value,
    ctx: Option<Value>,
) -> Box<ValidationIssue> {
    Box::new(issue(kind, loc, msg, input, ctx))
}

fn reject(issue: ValidationIssue) -> ValidationErrorBody {
    ValidationErrorBody { detail: vec![issue] }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let missing =
            || BodyRejection::from(reject(issue("missing", vec![json!("body")], "Field required", Value::Null, None)));
        let BodyBytes(bytes) = BodyBytes::from_request(req, state).await?;
        if bytes.is_empty() {
            return Err(missing());
        }
        // FastAPI decodes JSON when the content type is absent or names JSON; any other type gives the raw text,
        // which then fails the model check.
        let is_json = content_type.as_deref().is_none_or(|ct| {
            let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
        });
        if !is_json {
            return Ok(Self(Value::String(String::from_utf8_lossy(&bytes).into_owned())));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Null) => Err(missing()),
            Ok(value) => Ok(Self(value)),
            Err(err) => {
                let text = String::from_utf8_lossy(&bytes);
                let (position, message) = python_json_error(&text, &err);
                Err(reject(issue(
                    "json_invalid",
                    vec![json!("body"), json!(position)],
                    "JSON decode error",
                    json!({}),
                    Some(json!({"error": message})),
                ))
                .into())
            }
        }
    }
}

/// Where Python's `json` module reports a decode error (a character index) and its message, from serde's error.
fn python_json_error(text: &str, err: &serde_json::Error) -> (usize, &'static str) {
    let chars: usize = text.chars().count();
    let position = if err.is_eof() {
        chars
    } else {
        // serde's column is 1-based and points at the offending character.
        let line_start: usize =
            text.split_inclusive('\n').take(err.line().saturating_sub(1)).map(|l| l.chars().count()).sum();
        (line_start + err.column().saturating_sub(1)).min(chars)
    };
    let shown = err.to_string();
    let message = if err.is_eof() {
        // Python names what it expected next, which depends on the last character read.
        match text.trim_end().chars().last() {
            Some('{') => "Expecting property name enclosed in double quotes",
            Some(':' | '[') | None => "Expecting value",
            _ if shown.contains("string") => "Unterminated string starting at",
            _ => "Expecting ',' delimiter",
        }
    } else if shown.starts_with("key must be a string") || shown.starts_with("trailing comma") {
        "Expecting property name enclosed in double quotes"
    } else if shown.starts_with("expected `,` or `}`") || shown.starts_with("expected `,` or `]`") {
        "Expecting ',' delimiter"
    } else if shown.starts_with("expected `:`") {
        "Expecting ':' delimiter"
    } else if shown.starts_with("trailing characters") {
        "Extra data"
    } else {
        "Expecting value"
    };
    (position, message)
}

/// Field-by-field checks of a JSON object body, collecting every issue like pydantic does.
#[derive(Debug)]
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    issues: Vec<ValidationIssue>,
    known: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// Starts checking `body`, which must be a JSON object (`model_attributes_type` otherwise).
    pub fn of(body: &'a Value) -> Result<Self, ValidationErrorBody> {
        match body {
            Value::Object(object) => Ok(Self { object, issues: Vec::new(), known: Vec::new() }),
            other => Err(reject(issue(
                "model_attributes_type",
                vec![json!("body")],
                "Input should be a valid dictionary or object to extract fields from",
                other.clone(),
                None,
            ))),
        }
    }

    fn get(&mut self, name: &'static str, required: bool) -> Option<&'a Value> {
        self.known.push(name);
        let value = self.object.get(name);
        if value.is_none() && required {
            self.issues.push(issue(
                "missing",
                vec![json!("body"), json!(name)],
                "Field required",
                Value::Object(self.object.clone()),
                None,
            ));
        }
        value
    }

    /// A string field with a length (in characters) between `min` and `max`.
    pub fn string(&mut self, name: &'static str, required: bool, min: usize, max: usize) -> Option<String> {
        let value = self.get(name, required)?;
        let checked = check_string(value, vec![json!("body"), json!(name)], min, max);
        checked.map_err(|i| self.issues.push(*i)).ok()
    }

    /// An integer field within `min..=max`, as lenient as pydantic's lax mode (`"7"`, `7.0` and `true` pass).
    ///
    /// Numbers are judged as pydantic judges them: an integer too large for `i64` is still an integer, just out of
    /// range (`less_than_equal`); a float with a fraction is `int_from_float`, a whole one beyond `i64` is
    /// `int_parsing_size`. (An integer literal beyond `u64` reaches this code as a float, since serde_json keeps no
    /// literal text, and is judged as one.)
    pub fn int(&mut self, name: &'static str, required: bool, min: i64, max: i64) -> Option<i64> {
        let value = self.get(name, required)?;
        let loc = vec![json!("body"), json!(name)];
        let parsed = match value {
            Value::Bool(b) => Ok(i64::from(*b)),
            Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => Ok(i),
                // Above i64::MAX, so above any bound: the range check reports it.
                (None, Some(_), _) => Ok(i64::MAX),
                (None, None, Some(f)) if f.fract() != 0.0 || !f.is_finite() => Err(boxed(
                    "int_from_float",
                    loc.clone(),
                    "Input should be a valid integer, got a number with a fractional part",
                    value.clone(),
                    None,
                )),
                (None, None, Some(f)) if (i64::MIN as f64) < f && f < (i64::MAX as f64) => Ok(f as i64),
                _ => Err(boxed(
                    "int_parsing_size",
                    loc.clone(),
                    "Unable to parse input string as an integer, exceeded maximum size",
                    value.clone(),
                    None,
                )),
            },
            Value::String(s) => crate::validation::parse_lax_int(s).ok_or_else(|| {
                boxed(
                    "int_parsing",
                    loc.clone(),
                    "Input should be a valid integer, unable to parse string as an integer",
                    value.clone(),
                    None,
                )
            }),
            _ => Err(boxed("int_type", loc.clone(), "Input should be a valid integer", value.clone(), None)),
        };
        let checked = parsed.and_then(|n| {
            if n < min {
                Err(boxed(
                    "greater_than_equal",
                    loc.clone(),
                    format!("Input should be greater than or equal to {min}"),
                    value.clone(),
                    Some(json!({"ge": min})),
                ))
            } else if n > max {
                Err(boxed(
                    "less_than_equal",
                    loc.clone(),
                    format!("Input should be less than or equal to {max}"),
                    value.clone(),
                    Some(json!({"le": max})),
                ))
            } else {
                Ok(n)
            }
        });
        checked.map_err(|i| self.issues.push(*i)).ok()
    }

    /// A list of at most `max_items` strings, each `min..=max` characters long.
    pub fn string_list(
        &mut self,
        name: &'static str,
        required: bool,
        max_items: usize,
        min: usize,
        max: usize,
    ) -> Option<Vec<String>> {
        let value = self.get(name, required)?;
        let Value::Array(items) = value else {
            self.issues.push(issue(
                "list_type",
                vec![json!("body"), json!(name)],
                "Input should be a valid list",
                value.clone(),
                None,
            ));
            return None;
        };
        let before = self.issues.len();
        if items.len() > max_items {
            self.issues.push(issue(
                "too_long",
                vec![json!("body"), json!(name)],
                format!("List should have at most {max_items} items after validation, not {}", items.len()),
                value.clone(),
                Some(json!({"field_type": "List", "max_length": max_items, "actual_length": items.len()})),
            ));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            match check_string(item, vec![json!("body"), json!(name), json!(index)], min, max) {
                Ok(s) => out.push(s),
                Err(i) => self.issues.push(*i),
            }
        }
        (self.issues.len() == before).then_some(out)
    }

    /// Ends the checks: unknown fields are `extra_forbidden`; any issue makes the whole body a 422.
    pub fn finish(mut self) -> Result<(), ValidationErrorBody> {
        for (name, value) in self.object {
            if !self.known.contains(&name.as_str()) {
                self.issues.push(issue(
                    "extra_forbidden",
                    vec![json!("body"), json!(name)],
                    "Extra inputs are not permitted",
                    value.clone(),
                    None,
                ));
            }
        }
        if self.issues.is_empty() { Ok(()) } else { Err(ValidationErrorBody { detail: self.issues }) }
    }
}

fn check_string(value: &Value, loc: Vec<Value>, min: usize, max: usize) -> Result<String, Box<ValidationIssue>> {
    let Value::String(s) = value else {
        return Err(boxed("string_type", loc, "Input should be a valid string", value.clone(), None));
    };
    let len = s.chars().count();
    if len < min {
        let unit = if min == 1 { "character" } else { "characters" };
        return Err(boxed(
            "string_too_short",
            loc,
            format!("String should have at least {min} {unit}"),
            value.clone(),
            Some(json!({"min_length": min})),
        ));
    }
    if len > max {
        let unit = if max == 1 { "character" } else { "characters" };
        return Err(boxed(
            "string_too_long",
            loc,
            format!("String should have at most {max} {unit}"),
            value.clone(),
            Some(json!({"max_length": max})),
        ));
    }
    Ok(s.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    async fn decode(content_type: Option<&str>, body: &'static str) -> Result<Value, Value> {
        let mut req = Request::put("/x");
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        JsonBody::from_request(req.body(Body::from(body)).unwrap(), &()).await.map(|b| b.0).map_err(|e| match e {
            BodyRejection::Invalid(body) => serde_json::to_value(body).unwrap(),
            other => panic!("not a validation error: {other:?}"),
        })
    }

    // Expected bodies below were produced by FastAPI 0.115.0 / pydantic 2.14.4 for the same requests.
    #[tokio::test]
    async fn body_errors_have_fastapis_shapes() {
        let missing = json!({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}]});
        assert_eq!(decode(Some("application/json"), "").await.unwrap_err(), missing);
        assert_eq!(decode(Some("application/json"), "null").await.unwrap_err(), missing);
        assert_eq!(
            decode(Some("application/json"), "{bad").await.unwrap_err(),
            json!({"detail": [{"type": "json_invalid", "loc": ["body", 1], "msg": "JSON decode error", "input": {},
                "ctx": {"error": "Expecting property name enclosed in double quotes"}}]})
        );
        let trailing = decode(Some("application/json"), r#"{"a":1,}"#).await.unwrap_err();
        assert_eq!(trailing["detail"][0]["loc"], json!(["body", 7]));
        for (body, position, error) in [
            (r#"{"max_results": 5"#, 17, "Expecting ',' delimiter"),
            (r#"{"max_results" 5}"#, 15, "Expecting ':' delimiter"),
            (r#"{"max_results": 5} x"#, 19, "Extra data"),
            (r#"{"max_results": 5 "a": 1}"#, 18, "Expecting ',' delimiter"),
            (r#"{"max_results": "#, 16, "Expecting value"),
        ] {
            let issue = &decode(Some("application/json"), body).await.unwrap_err()["detail"][0];
            assert_eq!((&issue["loc"][1], &issue["ctx"]["error"]), (&json!(position), &json!(error)), "{body}");
        }
        let text = decode(Some("text/plain"), r#"{"a":1}"#).await.unwrap();
        assert_eq!(text, json!(r#"{"a":1}"#));
        assert_eq!(
            Fields::of(&text).unwrap_err().detail[0].kind,
            "model_attributes_type",
            "a non-JSON content type leaves a string, which is not an object"
        );
    }

    // Expected codes as FastAPI 0.115.0 / pydantic 2.14.4 answer for `max_results: int = Field(ge=1, le=100)`.
    #[test]
    fn numbers_beyond_i64_are_judged_as_pydantic_does() {
        for (raw, kind) in [
            ("18446744073709551615", "less_than_equal"),
            ("9223372036854775808", "less_than_equal"),
            ("1e16", "less_than_equal"),
            ("-1e16", "greater_than_equal"),
            ("1e30", "int_parsing_size"),
            ("9.3e18", "int_parsing_size"),
            ("1.5", "int_from_float"),
        ] {
            let body: Value = serde_json::from_str(&format!(r#"{{"n": {raw}}}"#)).unwrap();
            let mut fields = Fields::of(&body).unwrap();
            assert_eq!(fields.int("n", true, 1, 100), None, "{raw}");
            let issue = &fields.finish().unwrap_err().detail[0];
            assert_eq!(issue.kind, kind, "{raw}");
            assert_eq!(issue.input, body["n"], "{raw}");
        }
    }

    #[test]
    fn fields_collect_every_issue_in_order() {
        let body = json!({"categories": [1, ""], "max_results": "x", "extra": 1});
        let mut fields = Fields::of(&body).unwrap();
        assert_eq!(fields.string_list("categories", false, 10, 1, 40), None);
        assert_eq!(fields.int("max_results", false, 1, 100), None);
        let detail = serde_json::to_value(fields.finish().unwrap_err()).unwrap();
        assert_eq!(
            detail,
            json!({"detail": [
                {"type": "string_type", "loc": ["body", "categories", 0], "msg": "Input should be a valid string", "input": 1},
                {"type": "string_too_short", "loc": ["body", "categories", 1], "msg": "String should have at least 1 character", "input": "", "ctx": {"min_length": 1}},
                {"type": "int_parsing", "loc": ["body", "max_results"], "msg": "Input should be a valid integer, unable to parse string as an integer", "input": "x"},
                {"type": "extra_forbidden", "loc": ["body", "extra"], "msg": "Extra inputs are not permitted", "input": 1}
            ]})
        );
    }

    #[test]
    fn ints_are_lax_like_pydantic() {
        for (raw, expected) in
            [(json!(true), Some(1)), (json!("7"), Some(7)), (json!(7.0), Some(7)), (json!(5.5), None)]
        {
            let body = json!({ "n": raw });
            let mut fields = Fields::of(&body).unwrap();
            assert_eq!(fields.int("n", true, 0, 100), expected, "{raw}");
        }
        let body = json!({});
        let mut fields = Fields::of(&body).unwrap();
        assert_eq!(fields.int("n", true, 0, 100), None);
        assert_eq!(fields.finish().unwrap_err().detail[0].kind, "missing");
    }
}
