//! Settings every agent shares, and the handling of bad settings: one line on stderr naming the setting, exit 2.

use std::{net::IpAddr, time::Duration};

use clap::{
    Args, CommandFactory, Parser, ValueEnum,
    error::{ContextKind, ContextValue, ErrorKind},
};

/// Listener, logging and shutdown settings common to both agents.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Address to bind; the default serves every IPv4 interface, as a container needs.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind_addr: IpAddr,

    /// Log line format: `json` for log shippers, `text` for people.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,

    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,recommendation=debug`.
    #[arg(long = "log-filter", env = "RUST_LOG", default_value = "info", value_parser = parse_log_filter)]
    pub log_filter: String,

    /// After SIGTERM, how long readiness answers 503 while requests are still served, so load balancers stop
    /// routing here before connections are refused (Kubernetes: a few seconds).
    #[arg(long, env = "SHUTDOWN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,

    /// Upper bound on finishing in-flight requests once the shutdown delay is over; connections still open then
    /// are closed and the process exits with status 1.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a client may take to send the request line and headers before the connection is closed
    /// (protects against slow-header clients holding connections open); also how long a keep-alive connection
    /// may stay idle (HTTP/2: no request in flight) before it is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,

    /// How long a client may take to send a request's whole body, counted from the end of its head; past it the
    /// request is answered 408 and the connection closed. Keep it below DRAIN_TIMEOUT, so that a client that stops
    /// sending cannot hold a shutdown to its deadline.
    #[arg(long, env = "BODY_READ_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub body_read_timeout: Duration,

    /// Most requests served at once; beyond it requests are answered 503 with Retry-After at once instead of
    /// queueing (probes and /metrics are exempt so a busy agent is not restarted or blinded).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Largest request body accepted, in bytes; a larger body is answered 413 (a declared one without being read).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,

    /// Metrics and tracing export.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
}

impl ServerArgs {
    /// The settings a test wants: loopback, an ephemeral port, no shutdown delay, a short drain.
    pub fn for_tests() -> Self {
        Self {
            port: 0,
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
            max_body_bytes: 65536,
            telemetry: crate::telemetry::TelemetryArgs::default(),
        }
    }
}

/// Subcommands both agent binaries offer besides serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Subcommand {
    /// Probe this agent's /healthz on PORT and exit 0 if healthy, 1 otherwise (for image HEALTHCHECKs without a
    /// shell).
    Healthcheck,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// Parses a human-friendly duration such as `2s`, `500ms` or `1m 30s`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{e} (expected a duration such as 2s or 500ms)"))
}

/// Like [`parse_duration`], but zero is refused: used where zero would disable a protection by accident.
pub fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

fn parse_log_filter(raw: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(raw).map(|_| raw.to_owned()).map_err(|e| e.to_string())
}

/// Parses the command line and environment, or exits: help and version print as usual (status 0); any bad setting
/// prints one line naming the flag and its environment variable, and exits with status 2.
pub fn parse_or_exit<T: Parser>() -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(err) => match err.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => err.exit(),
            _ => {
                eprintln!("{}", one_line_error::<T>(&err));
                std::process::exit(2);
            }
        },
    }
}

/// Renders a clap error as a single line, adding the environment variable behind the offending flag, because in a
/// container the setting almost always came from the environment, not the command line.
pub fn one_line_error<T: CommandFactory>(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let first_line = rendered.lines().find(|l| !l.trim().is_empty()).unwrap_or("error: invalid settings").trim();
    let env_name = match err.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => env_of_flag::<T>(arg),
        _ => None,
    };
    match env_name {
        Some(env) => format!("{first_line} (env {env})"),
        _ => first_line.to_owned(),
    }
}

fn env_of_flag<T: CommandFactory>(rendered_arg: &str) -> Option<String> {
    let long = rendered_arg.split_whitespace().next()?.strip_prefix("--")?;
    T::command()
        .get_arguments()
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

/// Prints one line naming a setting that parsed but makes no sense with the others, and exits with status 2.
pub fn exit_bad_setting(setting: &str, why: &str) -> ! {
    eprintln!("error: invalid setting {setting}: {why}");
    std::process::exit(2);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        server: ServerArgs,
    }

    #[test]
    fn bad_port_is_reported_on_one_line_naming_flag_and_env() {
        let err = Cli::try_parse_from(["x", "--port", "eighty"]).unwrap_err();
        let line = one_line_error::<Cli>(&err);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--port"), "{line}");
        assert!(line.contains("(env PORT)"), "{line}");
        assert!(line.contains("eighty"), "{line}");
    }

    #[test]
    fn durations_accept_human_forms_and_reject_garbage() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn bad_log_filter_is_refused() {
        assert!(Cli::try_parse_from(["x", "--log-filter", "info,[[["]).is_err());
    }
}
