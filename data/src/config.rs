//! The data agent's settings, read once at startup from flags and environment.

use std::time::Duration;

use clap::{Args, ValueEnum};
use shared::{agent::CommonArgs, config::parse_duration};

/// Every setting of the data agent.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Serving, telemetry and Dapr settings (the same for both agents).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Deliberate misbehaviour of `GET /data`, for demos and resilience tests; all off by default.
    #[command(flatten)]
    pub faults: FaultArgs,
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
    /// Settings for tests: loopback, ephemeral port, no faults, no sidecar.
    pub fn for_tests() -> Self {
        Self { common: CommonArgs::for_tests(), faults: FaultArgs::default() }
    }
}
