//! `data` binary: parse settings, start telemetry, bind, serve until SIGTERM/SIGINT, drain.

use std::process::ExitCode;

use data::{AppState, Cli};
use shared::config::{Subcommand, parse_or_exit};

fn main() -> ExitCode {
    let Cli { command, config } = parse_or_exit::<Cli>();
    shared::runtime::block_on("data", async move {
        if command == Some(Subcommand::Healthcheck) {
            return Ok(shared::healthcheck::run(&config.server).await);
        }
        let mut shutdown = Box::pin(shared::shutdown::listen()?);
        let telemetry = shared::telemetry::init(&config.server, "data")?;
        let mut state = AppState::new(&config);
        if let Some(sidecar) = state.sidecar() {
            match config.dapr.start_with_sidecar_or(sidecar, &mut shutdown).await? {
                Some(token) => state.set_app_api_token(token),
                None => return Ok(ExitCode::SUCCESS),
            }
        }
        let listener = shared::server::bind(&config.server).await?;
        if let Some(metrics_addr) = shared::metrics::bind_listener(&config.server).await? {
            tracing::info!(%metrics_addr, "metrics listener started");
        }
        tracing::info!(addr = %listener.local_addr()?, version = env!("CARGO_PKG_VERSION"), "data agent listening");
        state.faults().warn_if_active();
        let outcome = data::run(listener, state, shutdown).await;
        telemetry.shutdown().await;
        Ok(outcome?.exit_code())
    })
}
