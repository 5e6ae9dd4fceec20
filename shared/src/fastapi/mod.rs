//! What FastAPI answers, so clients written against the original Python agents keep working: `{"detail": "..."}`
//! for HTTP errors ([`errors`]), `{"detail": [<issue>, ...]}` with pydantic's messages and type codes for invalid
//! input ([`validation`]), and JSON request bodies read and checked the way FastAPI reads them ([`body`]).
//!
//! Everything here builds answers; nothing serves them. The layers that answer in these shapes live in
//! [`crate::http`] and [`crate::agent`].

pub mod body;
pub mod errors;
pub mod validation;

pub use body::{BodyBytes, BodyLimitError, BodyReadErrors, BodyRejection, Fields, JsonBody};
pub use errors::{ErrorBody, Failure, json_error};
pub use validation::{LossyPathParams, QueryParams, ValidationErrorBody, ValidationIssue};
