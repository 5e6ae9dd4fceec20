//! One agent process, from the command line to the exit status. Both agent binaries are this module with their own
//! routes and state: each implements [`Agent`], its settings implement [`AgentConfig`], and its `main` is
//! `shared::agent::main::<AppState>()`.
//!
//! What [`main`] does, in order: parse the settings (a bad one: one line naming it, exit 2); install the SIGTERM and
//! SIGINT handlers; start telemetry; build the agent's state; with a Dapr sidecar, wait for it (bounded) and read
//! the app token from its secret store when so configured; bind the listeners (the service port, and
//! `METRICS_PORT` when set); serve the agent's [`router`] until a signal, then drain (see [`crate::http::server`]);
//! flush telemetry; exit 0, or 1 when the drain was cut short.
//!
//! An agent says only what is its own. Its settings say where the [`CommonArgs`] are among them, which settings
//! only make sense together, and where its sidecar listens ([`AgentConfig`]); its state says how it is built, where
//! its [`Core`] is, its OpenAPI description, its routes and its startup line ([`Agent`]). Everything else is here,
//! once: the `Arc` the state is shared in (see [`Agent`]), the [`Core`] built from the settings ([`Core::new`]),
//! and the one thing about the core known only after the state is built, the app token read from the secret store,
//! which is put in effect through `&Core` (fixed before any router is built), so no agent hands out its core
//! mutably.

mod healthcheck;
mod openapi;
mod router;
mod runtime;
mod shutdown;

use std::{
    future::Future,
    io,
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, OnceLock},
};

use axum::{BoxError, Router};
use clap::{Args, CommandFactory, Parser};
use serde_json::Value;
use tokio::net::TcpListener;

pub use router::router;

use crate::{
    config::{self, BadSetting},
    dapr::{DaprArgs, Sidecar},
    http::{self, DrainOutcome, Health, Limits, ServeOptions, ServerArgs},
    obs::{self, TelemetryArgs},
};

/// The settings every agent has: serving, telemetry and Dapr.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Listener, admission and shutdown settings.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Logs, metrics and span export.
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// The Dapr sidecar.
    #[command(flatten)]
    pub dapr: DaprArgs,
}

impl CommonArgs {
    /// The settings a test wants (see each part's `for_tests`).
    pub fn for_tests() -> Self {
        Self { server: ServerArgs::for_tests(), telemetry: TelemetryArgs::for_tests(), dapr: DaprArgs::for_tests() }
    }
}

/// Subcommands every agent binary offers besides serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Subcommand {
    /// Probe this agent's /healthz on PORT and exit 0 if healthy, 1 otherwise (for image HEALTHCHECKs without a
    /// shell).
    Healthcheck,
    /// Print the OpenAPI document this agent serves at /openapi.json and exit, without serving (tools read the
    /// agent's routes from it).
    Openapi,
}

/// The command line of an agent binary: its settings, or a subcommand.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli<C: Args> {
    /// What to do instead of serving.
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// Settings.
    #[command(flatten)]
    config: C,
}

/// The settings of an agent: [`CommonArgs`] and its own.
pub trait AgentConfig: Args + Send + 'static {
    /// The settings every agent has.
    fn common(&self) -> &CommonArgs;

    /// Checks the settings that only make sense together, before anything starts; the error names the setting to
    /// fix and why.
    fn check(&self) -> Result<(), BadSetting> {
        Ok(())
    }

    /// HTTP port of the local Dapr sidecar, if the agent has one: DAPR_HTTP_PORT, unless the agent's own settings
    /// imply a sidecar too.
    fn sidecar_port(&self) -> Option<u16> {
        self.common().dapr.dapr_http_port
    }
}

/// What every agent process has besides its own state: readiness, the serving and admission settings, the Dapr
/// sidecar when there is one, and the token calls must carry.
/// Not `Clone`: the app token is put in effect once, after the state is built; a copy taken before would miss it.
#[derive(Debug)]
pub struct Core {
    health: Health,
    serve: ServeOptions,
    limits: Limits,
    sidecar: Option<Sidecar>,
    /// APP_API_TOKEN, or the one read from the secret store at startup; unset: calls are not checked. Set at most
    /// once, before the router is built: the token in effect never changes while serving.
    app_api_token: OnceLock<Arc<str>>,
}

impl Core {
    /// The core of an agent with these settings, with a client for its sidecar if it has one.
    pub fn new(config: &impl AgentConfig) -> Self {
        let common = config.common();
        Self {
            health: Health::new(),
            serve: ServeOptions::from(&common.server),
            limits: Limits::from(&common.server),
            sidecar: config.sidecar_port().map(|port| common.dapr.sidecar(port)),
            app_api_token: common
                .dapr
                .app_api_token()
                .map(|token| OnceLock::from(Arc::from(token)))
                .unwrap_or_default(),
        }
    }

    /// Adds informational details to the readiness body (see [`Health::with_details`]).
    pub fn with_readiness_details(mut self, details: impl Fn() -> Value + Send + Sync + 'static) -> Self {
        self.health = self.health.with_details(details);
        self
    }

    /// Readiness of this process.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The Dapr sidecar, when the agent has one.
    pub fn sidecar(&self) -> Option<&Sidecar> {
        self.sidecar.as_ref()
    }

    /// The token every call to the agent's own routes must carry, if any.
    fn app_api_token(&self) -> Option<&str> {
        self.app_api_token.get().map(|token| &**token)
    }

    /// Puts the token the startup work returned in effect. It is APP_API_TOKEN when that is set, already in effect
    /// since [`Core::new`]; otherwise the secret store's, which only the sidecar can give.
    fn put_app_api_token_in_effect(&self, token: String) {
        let in_effect = self.app_api_token.get_or_init(|| Arc::from(token.as_str()));
        debug_assert_eq!(**in_effect, *token, "the startup work returns APP_API_TOKEN itself when it is set");
    }
}

/// An agent: its state and its routes. The probes, `/metrics`, the API docs, the layers and the serving are the
/// same for every agent and come from this module.
///
/// This module keeps the state in one `Arc`, and the agent's handlers take `State<Arc<Self>>`: axum clones the
/// state several times per request (the router's services, the `State` extractor), and a deep clone of an agent's
/// clients, stores and headers cost more than a whole `GET /data` handler (`bench/callgrind.sh`).
pub trait Agent: Send + Sync + Sized + 'static {
    /// The agent's name: the binary, the `agent` label of `agent_build_info`, the default `service.name`.
    const NAME: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Every setting of the agent: [`CommonArgs`] and its own.
    type Config: AgentConfig;
    /// Why the state could not be built.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The OpenAPI description served at `/openapi.json`.
    type ApiDoc: utoipa::OpenApi;

    /// Builds the state from settings, its [`Core`] included ([`Core::new`]): clients and stores, no network I/O.
    fn new(config: &Self::Config) -> Result<Self, Self::Error>;

    /// The part every agent has.
    fn core(&self) -> &Core;

    /// The agent's own routes, with their state: what the app token, load shedding and the body bounds apply to.
    fn routes(self: &Arc<Self>) -> Router;

    /// Logs the startup line, once listening on `addr`; its message ends in `listening`.
    fn started(&self, addr: SocketAddr);
}

/// The whole process of agent `A` (see the module docs); a binary's `main` returns what this returns.
pub fn main<A: Agent>() -> ExitCode {
    let command = Cli::<A::Config>::command().name(A::NAME).about(A::ABOUT);
    let Cli { command, config } = config::parse_or_exit::<Cli<A::Config>>(command);
    if let Err(bad) = config.check() {
        config::exit_bad_setting(&bad);
    }
    runtime::block_on(A::NAME, process::<A>(command, config))
}

async fn process<A: Agent>(command: Option<Subcommand>, config: A::Config) -> Result<ExitCode, BoxError> {
    let common = config.common();
    match command {
        Some(Subcommand::Healthcheck) => return Ok(healthcheck::run(&common.server).await),
        Some(Subcommand::Openapi) => return openapi::print::<A>(&config).await,
        None => {}
    }
    let mut shutdown = Box::pin(shutdown::listen()?);
    let telemetry = obs::init(&common.telemetry, A::NAME)?;
    let agent = Arc::new(A::new(&config)?);
    let core = agent.core();
    if let Some(sidecar) = core.sidecar() {
        match common.dapr.start_with_sidecar_or(sidecar, &mut shutdown).await? {
            Some(Some(token)) => core.put_app_api_token_in_effect(token),
            Some(None) => {}
            None => return Ok(ExitCode::SUCCESS),
        }
    }
    let listener = http::server::bind(&common.server).await?;
    if let Some(metrics_addr) = bind_metrics_listener(common).await? {
        tracing::info!(%metrics_addr, "metrics listener started");
    }
    agent.started(listener.local_addr()?);
    let outcome = run(listener, agent, shutdown).await;
    telemetry.shutdown().await;
    Ok(outcome?.exit_code())
}

/// Serves `agent` on `listener` until `shutdown` completes, then drains (see [`crate::http::server`]).
pub async fn run<A: Agent>(
    listener: TcpListener,
    agent: Arc<A>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainOutcome> {
    let (health, options) = (agent.core().health.clone(), agent.core().serve);
    http::server::serve(listener, router(&agent), options, health, shutdown).await
}

/// Most connections the metrics port serves at once: scrapers keep one each. Beyond, new connections are closed at
/// once, so the metrics port can never hold the file descriptors the service port needs.
pub const METRICS_PORT_MAX_CONNECTIONS: usize = 32;

/// Serves only `/metrics` on `METRICS_PORT` (same bind address) until the process exits, when it is set and metrics
/// are on, with the service port's connection settings (header read and idle timeouts) and at most
/// [`METRICS_PORT_MAX_CONNECTIONS`]; returns where it listens.
async fn bind_metrics_listener(common: &CommonArgs) -> io::Result<Option<SocketAddr>> {
    let args = &common.telemetry.metrics;
    let Some(port) = args.metrics_port.filter(|_| args.metrics_enabled) else { return Ok(None) };
    let listener = TcpListener::bind(SocketAddr::new(common.server.bind_addr, port)).await?;
    let addr = listener.local_addr()?;
    let app = obs::metrics::routes().fallback(crate::fastapi::errors::not_found);
    http::server::spawn_auxiliary(listener, app, ServeOptions::from(&common.server), METRICS_PORT_MAX_CONNECTIONS);
    Ok(Some(addr))
}
