//! Process-wide telemetry: log lines (JSON or text on stdout, filtered by `RUST_LOG`) that carry the request's
//! correlation ids, Prometheus metrics (see [`crate::metrics`]), and optional OpenTelemetry span export
//! (see [`otel`]).
//!
//! # Correlation ids in logs
//!
//! Every line logged while a request is handled carries `trace_id`, `span_id` and `request_id`:
//! - with OpenTelemetry on, `trace_id`/`span_id` are those of this agent's server span for the request, i.e. what
//!   the trace backend shows;
//! - with it off, `trace_id` is the caller's (from `traceparent`, else the B3 headers), so the lines of both
//!   agents still join the caller's trace; without any incoming trace context a random one is generated, which at
//!   least groups the request's own lines. `span_id` is then a random id for this hop, not exported anywhere.
//!
//! The request span is created at ERROR level so that it (and with it the ids) exists whatever `RUST_LOG`
//! says: even with `RUST_LOG=warn` the warnings of a failing request carry its ids. A span's level only decides
//! whether it is recorded; it prints nothing by itself. Health probes and scrapes get a DEBUG span instead, so
//! they produce neither lines nor spans unless asked for.
//!
//! Lines are written to stdout in batches by a writer thread (see [`batched`]), at most 10 ms after they were
//! logged.

pub mod batched;
pub mod logs;
pub mod otel;

use std::io::IsTerminal as _;

use axum::http::HeaderMap;
use clap::Args;
use tracing::{Level, Span};
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::Targets,
    fmt,
    layer::SubscriberExt,
    util::{SubscriberInitExt, TryInitError},
};

pub use logs::LogIds;

use crate::config::{LogFormat, ServerArgs};

/// Telemetry settings shared by both agents (logging has its own settings in [`ServerArgs`]).
#[derive(Debug, Clone, Default, Args)]
pub struct TelemetryArgs {
    /// Prometheus metrics.
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsArgs,
    /// OpenTelemetry span export.
    #[command(flatten)]
    pub otel: otel::OtelArgs,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A global subscriber was already installed.
    #[error("cannot install the log subscriber: {0}")]
    Subscriber(#[from] TryInitError),
    /// The log writer thread could not be started.
    #[error("cannot start the log writer: {0}")]
    LogWriter(std::io::Error),
    /// The OTLP exporter could not be built.
    #[error("cannot start the OTLP exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What [`init`] started; keep it until the server has drained, then call [`Telemetry::shutdown`]. Dropping it
/// (for example on an early error return in `main`) still writes out the buffered log lines.
#[derive(Debug)]
#[must_use = "keep the telemetry handle and shut it down when the server has drained"]
pub struct Telemetry {
    exporting: Option<otel::Exporting>,
    log_writer: batched::BatchGuard<std::io::Stdout>,
}

impl Telemetry {
    /// Flushes buffered spans (bounded by [`otel::SHUTDOWN_FLUSH_TIMEOUT`]), then the buffered log lines. Call after
    /// the server has drained.
    pub async fn shutdown(self) {
        if let Some(exporting) = self.exporting {
            exporting.shutdown().await;
        }
        // Dropping the writer's guard writes out what is buffered and stops its thread.
        drop(self.log_writer);
    }
}

/// Installs the global log subscriber, the OpenTelemetry layer when an OTLP endpoint is set, and the metrics
/// recorder unless disabled. Call once, first thing in `main`; `agent` is the default `service.name` and the
/// `agent` label of `agent_build_info`.
pub fn init(server: &ServerArgs, agent: &'static str) -> Result<Telemetry, InitError> {
    let exporting = otel::start(&server.telemetry.otel, agent)?;
    // The filter was validated when settings were parsed.
    let log_filter = EnvFilter::try_new(&server.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Spans only from the agents' own code, at INFO and above: request and data-call spans, not probes and not the
    // libraries' internals (which would also loop the exporter's own HTTP calls back into it).
    let otel_layer = exporting.as_ref().map(|exporting| {
        tracing_opentelemetry::layer()
            .with_tracer(exporting.tracer.clone())
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(
                Targets::new()
                    .with_target("shared", Level::INFO)
                    .with_target("data", Level::INFO)
                    .with_target("recommendation", Level::INFO),
            )
    });
    // Lines reach stdout in batches (see `batched`): a write per batch, not per line.
    let (writer, log_writer) = batched::writer(std::io::stdout()).map_err(InitError::LogWriter)?;
    let registry = tracing_subscriber::registry().with(otel_layer);
    match server.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .with_writer(writer)
                    .event_format(logs::JsonLines::default())
                    .fmt_fields(logs::JsonFields)
                    .with_filter(log_filter),
            )
            .try_init()?,
        LogFormat::Text => {
            let ansi = std::io::stdout().is_terminal();
            registry
                .with(
                    fmt::layer()
                        .with_writer(writer)
                        .with_ansi(ansi)
                        .event_format(logs::TextLines::new(fmt::format().with_ansi(ansi)))
                        .fmt_fields(logs::TextFields)
                        .with_filter(log_filter),
                )
                .try_init()?
        }
    }
    if exporting.is_some() {
        otel::mark_enabled();
        let otel = &server.telemetry.otel;
        tracing::info!(
            traces_endpoint = otel.traces_endpoint().unwrap_or_default(),
            sampler = ?otel.otel_traces_sampler,
            "exporting spans over OTLP/HTTP"
        );
    }
    if server.telemetry.metrics.metrics_enabled {
        crate::metrics::install(agent);
    }
    Ok(Telemetry { exporting, log_writer })
}

/// Gives a request's server span its correlation ids: continues the caller's trace when OpenTelemetry is on,
/// otherwise derives them from the incoming headers (see the module docs). A disabled span is left alone.
pub fn attach_request_ids(span: &Span, headers: &HeaderMap, request_id: &str) {
    if span.is_disabled() {
        return;
    }
    let (trace_id, span_id) = otel::continue_trace(span, headers).unwrap_or_else(|| otel::ids_from_headers(headers));
    logs::attach(span, LogIds { trace_id, span_id, request_id: request_id.to_owned() });
}
