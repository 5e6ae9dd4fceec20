//! The data agent's settings, read once at startup from flags and environment.

use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use shared::{
    config::{ServerArgs, Subcommand, parse_duration},
    dapr::{DaprArgs, parse_component_name},
};

/// Command line of the `data` binary.
#[derive(Debug, Clone, Parser)]
#[command(name = "data", version, about = "The data agent: serves processed insights at GET /data.")]
pub struct Cli {
    /// What to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// Settings.
    #[command(flatten)]
    pub config: Config,
}

/// Every setting of the data agent.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Listener, logging and shutdown settings.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Deliberate misbehaviour of `GET /data`, for demos and resilience tests; all off by default.
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Tokens, secrets and the startup wait for the Dapr sidecar.
    #[command(flatten)]
    pub dapr: DaprArgs,
    /// Where data changes are announced.
    #[command(flatten)]
    pub events: EventArgs,
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

/// Settings for announcing data changes through Dapr pub/sub.
#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    /// HTTP port of the local Dapr sidecar; when set, every change made with PUT /data is published as an event.
    #[arg(long, env = "DAPR_HTTP_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub dapr_http_port: Option<u16>,

    /// Name of the Dapr pub/sub component data changes are published to.
    #[arg(long, env = "PUBSUB_NAME", default_value = "pubsub", value_parser = parse_component_name)]
    pub pubsub_name: String,

    /// Topic of the data-changed events.
    #[arg(long, env = "PUBSUB_TOPIC", default_value = "data-updated", value_parser = parse_component_name)]
    pub pubsub_topic: String,
}

impl Config {
    /// Settings for tests: loopback, ephemeral port, no faults, no sidecar.
    pub fn for_tests() -> Self {
        Self {
            server: ServerArgs::for_tests(),
            faults: FaultArgs::default(),
            dapr: DaprArgs::for_tests(),
            events: EventArgs {
                dapr_http_port: None,
                pubsub_name: "pubsub".to_owned(),
                pubsub_topic: "data-updated".to_owned(),
            },
        }
    }
}
