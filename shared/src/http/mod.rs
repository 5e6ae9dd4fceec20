//! Serving HTTP: the server with its bounded drain ([`server`]), the bounds every request of the app routes gets
//! (body size and time, concurrency; [`RequestBodyLayer`], [`shed`]), the probes ([`health`]), the API docs
//! ([`docs`]) and the outbound client builder ([`client`]).
//!
//! [`ServerArgs`] are the settings of all of it. How the pieces are put together for an agent is
//! [`crate::agent`]'s business.

pub mod client;
pub mod docs;
pub mod health;
mod limits;
pub mod server;
mod wire_errors;

use std::{net::IpAddr, time::Duration};

use clap::Args;

pub use health::Health;
pub use limits::{BodyLimits, BoundedBody, Limits, RequestBodyLayer, ShedAnswer, ShedLayer, shed, shed_layer};
pub use server::{DrainOutcome, ServeOptions};

use crate::config::{parse_duration, parse_positive_duration};

/// Listener, admission and shutdown settings common to both agents.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8000)]
    pub port: u16,

    /// Address to bind; the default serves every IPv4 interface, as a container needs.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind_addr: IpAddr,

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
    /// queueing (probes, /metrics and the docs are exempt so a busy agent is not restarted or blinded).
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Largest request body accepted, in bytes; a larger body is answered 413 (a declared one without being read).
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 65536)]
    pub max_body_bytes: usize,
}

impl ServerArgs {
    /// The settings a test wants: loopback, an ephemeral port, no shutdown delay, a short drain.
    pub fn for_tests() -> Self {
        Self {
            port: 0,
            bind_addr: IpAddr::from([127, 0, 0, 1]),
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(5),
            max_in_flight: 1024,
            max_body_bytes: 65536,
        }
    }
}
