//! Telemetry of the call to the data agent: the outbound metrics and, with OpenTelemetry on, the client span whose
//! context is handed to the data agent.
//!
//! Kept out of [`crate::data_client`] so the client's logic stays readable: [`DataClient::fetch`] starts a
//! [`DataCall`] before calling and finishes it with the outcome.
//!
//! [`DataClient::fetch`]: crate::data_client::DataClient::fetch

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{Mutex, OnceLock, PoisonError},
    time::Duration,
};

use metrics::{Unit, describe_counter, describe_histogram};
use shared::obs::TraceHeaders;
use tracing::{Span, field::Empty};
use url::Url;

use crate::config::DataMode;

/// Calls to the data agent, by `mode` (direct|dapr) and `outcome` (ok, unreachable, timeout, ...).
pub const DATA_CALLS: &str = "data_calls_total";
/// Duration of calls to the data agent, by `mode` and `outcome`.
pub const DATA_CALL_DURATION: &str = "data_call_duration_seconds";

type Handles = (metrics::Counter, metrics::Histogram);

/// The handles of one (mode, outcome), registered on first use (labels are built and hashed once, not per call).
fn handles(mode: &'static str, outcome: &'static str) -> Handles {
    static HANDLES: OnceLock<Mutex<HashMap<(&str, &str), Handles>>> = OnceLock::new();
    let handles = HANDLES.get_or_init(|| {
        describe();
        Mutex::default()
    });
    let mut handles = handles.lock().unwrap_or_else(PoisonError::into_inner);
    handles
        .entry((mode, outcome))
        .or_insert_with(|| {
            let labels = [("mode", mode), ("outcome", outcome)];
            (metrics::counter!(DATA_CALLS, &labels), metrics::histogram!(DATA_CALL_DURATION, &labels))
        })
        .clone()
}

fn describe() {
    describe_counter!(DATA_CALLS, Unit::Count, "Calls to the data agent, by mode (direct|dapr) and outcome.");
    describe_histogram!(
        DATA_CALL_DURATION,
        Unit::Seconds,
        "Duration of calls to the data agent until the outcome was known, by mode and outcome."
    );
}

/// One call to the data agent, from start to outcome.
#[derive(Debug)]
pub struct DataCall<'a> {
    mode: DataMode,
    span: Span,
    headers: Cow<'a, TraceHeaders>,
}

impl<'a> DataCall<'a> {
    /// Starts the call's client span (only when spans are exported) and works out the headers to send:
    /// `incoming` unchanged, or with `traceparent` pointing at the client span when spans are exported.
    pub fn start(mode: DataMode, endpoint: &Url, incoming: &'a TraceHeaders) -> Self {
        let span = if shared::obs::otel::enabled() {
            tracing::info_span!(
                "data call",
                otel.name = "GET data",
                otel.kind = "client",
                otel.status_code = Empty,
                data_mode = mode.as_str(),
                url.full = %endpoint,
                outcome = Empty,
            )
        } else {
            Span::none()
        };
        let headers = shared::obs::otel::outgoing_headers(&span, incoming);
        Self { mode, span, headers }
    }

    /// The trace headers to send with the call.
    pub fn headers(&self) -> &TraceHeaders {
        &self.headers
    }

    /// The client span, to instrument the call with (disabled when spans are not exported).
    pub fn span(&self) -> Span {
        self.span.clone()
    }

    /// Records the outcome (`ok` or an [`crate::DataError::outcome`] label) and how long the call took.
    pub fn finish(self, outcome: &'static str, elapsed: Duration) {
        if shared::obs::metrics::enabled() {
            let (calls, duration) = handles(self.mode.as_str(), outcome);
            calls.increment(1);
            duration.record(elapsed);
        }
        self.span.record("outcome", outcome);
        if outcome != "ok" {
            self.span.record("otel.status_code", "error");
        }
    }
}
