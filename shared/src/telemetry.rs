//! Process-wide telemetry: log lines (JSON or text on stdout, filtered by `RUST_LOG`) and Prometheus metrics.

use std::io::IsTerminal;

use clap::Args;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::{LogFormat, ServerArgs};

/// Telemetry settings shared by both agents (logging has its own settings in [`ServerArgs`]).
#[derive(Debug, Clone, Default, Args)]
pub struct TelemetryArgs {
    /// Prometheus metrics.
    #[command(flatten)]
    pub metrics: crate::metrics::MetricsArgs,
}

/// What `init` started; keep it until the process ends and call [`Telemetry::shutdown`] last.
#[derive(Debug)]
#[must_use = "keep the telemetry handle and shut it down when the server has drained"]
pub struct Telemetry {
    _private: (),
}

impl Telemetry {
    /// Flushes what is buffered. Call after the server has drained.
    pub async fn shutdown(self) {}
}

/// Installs the global log subscriber and, unless disabled, the metrics recorder. Call once, first thing in `main`.
///
/// The filter was validated when settings were parsed, so a failure here means a subscriber was already installed.
pub fn init(server: &ServerArgs, agent: &'static str) -> Result<Telemetry, tracing_subscriber::util::TryInitError> {
    init_logs(server.log_format, &server.log_filter)?;
    if server.telemetry.metrics.metrics_enabled {
        crate::metrics::install(agent);
    }
    Ok(Telemetry { _private: () })
}

fn init_logs(format: LogFormat, filter: &str) -> Result<(), tracing_subscriber::util::TryInitError> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_ansi(std::io::stdout().is_terminal())).try_init(),
    }
}
