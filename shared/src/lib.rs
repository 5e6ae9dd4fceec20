//! Cross-cutting glue shared by the `data` and `recommendation` agents.
//!
//! Everything here is plumbing both services need in exactly the same shape (settings, telemetry, health probes,
//! FastAPI-compatible error bodies, the HTTP server with graceful drain, trace-header propagation, API docs).
//! Service logic never lives here.

pub mod body;
pub mod config;
pub mod dapr;
pub mod docs;
pub mod errors;
pub mod health;
pub mod healthcheck;
pub mod http_client;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod propagation;
pub mod request_body;
pub mod runtime;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod validation;
pub mod wire_errors;
