//! The data agent's settings, read once at startup from flags and environment.

use std::{path::PathBuf, time::Duration};

use clap::{Args, ValueEnum};
use shared::{
    agent::{AgentConfig, CommonArgs},
    config::{BadSetting, parse_duration, parse_positive_duration},
};

/// Every setting of the data agent.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Serving, telemetry and Dapr settings (the same for both agents).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Deliberate misbehaviour of `GET /data`, for demos and resilience tests; all off by default.
    #[command(flatten)]
    pub faults: FaultArgs,
    /// The catalog and interactions to serve: a JSON Lines file (one `item` or `interaction` object per line; the
    /// format is in the README, "The data set"). Unset: the built-in default data set
    /// (480 items, 1 000 users, 30 000 interactions). A file with any bad line stops start-up with a message naming
    /// the file and the line.
    #[arg(long, env = "DATA_FILE")]
    pub data_file: Option<PathBuf>,
    /// When `POST /interactions` batches are announced: a `data-updated` event goes out once no batch came for
    /// this long (one event per burst of batches, carrying the latest insights version).
    #[arg(long, env = "EVENT_DEBOUNCE", default_value = "250ms", value_parser = parse_positive_duration)]
    pub event_debounce: Duration,
    /// Longest a burst of batches waits for its `data-updated` event, however steady the stream (at least
    /// EVENT_DEBOUNCE).
    #[arg(long, env = "EVENT_MAX_DELAY", default_value = "2s", value_parser = parse_positive_duration)]
    pub event_max_delay: Duration,
}
/// Fault injection on `GET /data`. Every fault is off unless set; probes and docs are never affected.
#[derive(Debug, Clone, Default, Args)]
pub struct FaultArgs {
    /// Fault injection: answer `GET /data` with this HTTP status (400-599) and a JSON error body.
    #[arg(long, env = "FAULT_STATUS", value_parser = clap::value_parser!(u16).range(400..=599))]
    pub fault_status: Option<u16>,

    /// Fault injection: wait this long before answering `GET /data` (e.g. `3s` to exceed the caller's timeout).
    #[arg(long, env = "FAULT_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub fault_delay: Duration,

    /// Fault injection: answer `GET /data` with a broken body: `garbage` (200 with a body that is not JSON) or
    /// `truncated` (200 declaring a longer body, then the connection is cut mid-body).
    #[arg(long, env = "FAULT_BODY", value_enum)]
    pub fault_body: Option<FaultBody>,

    /// Fault injection: misbehave only on the first N `GET /data` requests, then answer normally (0 = on every
    /// request); e.g. FAULT_STATUS=503 FAULT_FIRST=1 fails once, so a retry succeeds.
    #[arg(long, env = "FAULT_FIRST", default_value_t = 0)]
    pub fault_first: u64,
}

/// How a faulty `GET /data` body is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultBody {
    /// A 200 whose body is not JSON.
    Garbage,
    /// A 200 whose connection is cut after part of the declared body.
    Truncated,
}

impl Config {
    /// Settings for tests: loopback, ephemeral port, no faults, no sidecar, the default data set.
    pub fn for_tests() -> Self {
        Self {
            common: CommonArgs::for_tests(),
            faults: FaultArgs::default(),
            data_file: None,
            event_debounce: Duration::from_millis(250),
            event_max_delay: Duration::from_secs(2),
        }
    }
}

impl AgentConfig for Config {
    fn common(&self) -> &CommonArgs {
        &self.common
    }

    fn check(&self) -> Result<(), BadSetting> {
        if self.event_max_delay < self.event_debounce {
            return Err(BadSetting::new("EVENT_MAX_DELAY", "must be at least EVENT_DEBOUNCE"));
        }
        Ok(())
    }
}
