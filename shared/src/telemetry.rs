//! Process-wide tracing subscriber: JSON or text lines on stdout, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::LogFormat;

/// Installs the global subscriber. Call once, first thing in `main`.
///
/// The filter was validated when settings were parsed, so a failure here means a subscriber was already installed.
pub fn init(format: LogFormat, filter: &str) -> Result<(), tracing_subscriber::util::TryInitError> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Text => registry.with(fmt::layer().with_ansi(std::io::stdout().is_terminal())).try_init(),
    }
}
