//! The data agent's settings, read once at startup from flags and environment.

use clap::{Args, Parser};
use shared::config::{ServerArgs, Subcommand};

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
}

impl Config {
    /// Settings for tests: loopback, ephemeral port.
    pub fn for_tests() -> Self {
        Self { server: ServerArgs::for_tests() }
    }
}
