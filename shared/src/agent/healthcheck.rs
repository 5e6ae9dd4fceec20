//! The `healthcheck` subcommand: probes the local `/healthz` so an image `HEALTHCHECK` needs no shell or curl.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use crate::http::ServerArgs;

/// Bound on the whole probe: a wedged server must count as unhealthy, not hang the container runtime.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// GETs `/healthz` on the agent these settings describe; exit status 0 on 2xx, 1 otherwise.
pub(crate) async fn run(server: &ServerArgs) -> ExitCode {
    let url = format!("http://{}/healthz", probe_address(server.bind_addr, server.port));
    let client = match crate::http::client::builder().timeout(PROBE_TIMEOUT).no_proxy().build() {
        Ok(client) => client,
        Err(err) => {
            eprintln!("healthcheck: cannot build HTTP client: {err}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(resp) if resp.status().is_success() => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!("healthcheck: {url} answered {}", resp.status());
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("healthcheck: {url} failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// A wildcard bind address is reachable on loopback; a specific one only on itself.
fn probe_address(bind_addr: IpAddr, port: u16) -> SocketAddr {
    let ip = match bind_addr {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        specific => specific,
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_probed_on_loopback() {
        assert_eq!(probe_address("0.0.0.0".parse().unwrap(), 8000).to_string(), "127.0.0.1:8000");
        assert_eq!(probe_address("::".parse().unwrap(), 8000).to_string(), "[::1]:8000");
        assert_eq!(probe_address("10.1.2.3".parse().unwrap(), 9).to_string(), "10.1.2.3:9");
    }
}
