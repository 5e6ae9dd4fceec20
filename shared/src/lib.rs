//! Cross-cutting glue shared by the `data` and `recommendation` agents, grouped by concern. Service logic never
//! lives here.
//!
//! | module | concern | depends on |
//! | --- | --- | --- |
//! | [`config`] | parsing settings: durations, the one-line error for a bad setting | — |
//! | [`fastapi`] | what FastAPI answers: `{"detail": ...}` errors, 422 validation bodies, JSON request bodies | — |
//! | [`obs`] | observability: log lines with correlation ids, Prometheus metrics, OpenTelemetry spans, trace headers | `config`, `fastapi` |
//! | [`http`] | serving: the server and its drain, request-body bounds, load shedding, probes, API docs, the outbound client | `config`, `fastapi` |
//! | [`dapr`] | the Dapr sidecar: its settings, its HTTP API, the app-token check | `config`, `fastapi`, `http` |
//! | [`agent`] | one agent process: settings, the app and ops routers with their layers, start-up and shutdown | all of the above |
//!
//! Dependencies point down that table and never back: each module's internals are `pub(crate)` or private, and
//! what a module exports is what the agents (or another module further down) use.

pub mod agent;
pub mod config;
pub mod dapr;
pub mod fastapi;
pub mod http;
pub mod obs;
