//! The data agent's settings, read once at startup from flags and environment.

use clap::{Args, Parser};
use shared::{
    config::{ServerArgs, Subcommand},
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
    /// Tokens, secrets and the startup wait for the Dapr sidecar.
    #[command(flatten)]
    pub dapr: DaprArgs,
    /// Where data changes are announced.
    #[command(flatten)]
    pub events: EventArgs,
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
    /// Settings for tests: loopback, ephemeral port, no sidecar.
    pub fn for_tests() -> Self {
        Self {
            server: ServerArgs::for_tests(),
            dapr: DaprArgs::for_tests(),
            events: EventArgs {
                dapr_http_port: None,
                pubsub_name: "pubsub".to_owned(),
                pubsub_topic: "data-updated".to_owned(),
            },
        }
    }
}
