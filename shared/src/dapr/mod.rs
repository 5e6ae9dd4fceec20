//! The Dapr sidecar, as both agents meet it: its settings ([`DaprArgs`], every Dapr setting of both agents), a small
//! client for its HTTP API ([`Sidecar`]: readiness, secrets, state, publish) and the check of the app API token on
//! calls the sidecar makes to the agent ([`require_app_token`]).
//!
//! Tokens: the sidecar may require callers to present `DAPR_API_TOKEN` in the `dapr-api-token` header, and may
//! present `APP_API_TOKEN` in the same header on every call it makes to the app. With both set, only the sidecar
//! (or whoever holds the app token) can reach the agent, and only the agent can drive the sidecar.

mod args;
mod auth;
mod client;

use axum::http::HeaderName;

pub use args::{DEFAULT_HTTP_PORT, DaprArgs, SIDECAR_TIMEOUT, parse_name, parse_required_token, parse_token};
pub use auth::{AppTokenErrors, require_app_token};
pub use client::{Sidecar, SidecarError, StateItem};

/// Header carrying either token (Dapr uses the same name in both directions).
pub const API_TOKEN_HEADER: HeaderName = HeaderName::from_static("dapr-api-token");
