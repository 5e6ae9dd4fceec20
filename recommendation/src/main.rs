//! `recommendation` binary: parse settings, start telemetry, bind, serve until SIGTERM/SIGINT, drain.

use std::{net::SocketAddr, process::ExitCode};

use recommendation::{AppState, Cli};
use shared::config::{Subcommand, parse_or_exit};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { command, config } = parse_or_exit::<Cli>();
    if command == Some(Subcommand::Healthcheck) {
        return shared::healthcheck::run(config.server.bind_addr, config.server.port).await;
    }
    let telemetry = match shared::telemetry::init(&config.server, "recommendation") {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("cannot start telemetry: {err}");
            return ExitCode::FAILURE;
        }
    };

    let state = match AppState::new(&config) {
        Ok(state) => state,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the data client");
            return ExitCode::FAILURE;
        }
    };
    let addr = SocketAddr::new(config.server.bind_addr, config.server.port);
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(%addr, error = %err, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    match shared::metrics::bind_listener(&config.server.telemetry.metrics, config.server.bind_addr).await {
        Ok(Some(metrics_addr)) => tracing::info!(%metrics_addr, "metrics listener started"),
        Ok(None) => {}
        Err(err) => {
            tracing::error!(error = %err, "cannot bind the metrics port");
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(
        addr = %listener.local_addr().unwrap_or(addr),
        version = env!("CARGO_PKG_VERSION"),
        data_mode = state.data().mode().as_str(),
        data_endpoint = %state.data().endpoint(),
        "recommendation agent listening"
    );

    let code = match recommendation::run(listener, state, shared::shutdown::signal()).await {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            tracing::error!(error = %err, "server failed");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}
