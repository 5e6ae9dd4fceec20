//! The Dapr settings of both agents, and the start-up work they imply.

use std::{future::Future, time::Duration};

use clap::Args;

use super::{Sidecar, SidecarError};
use crate::config::parse_duration;

/// Port the Dapr sidecar serves its HTTP API on when `DAPR_HTTP_PORT` is not set (Dapr's own default).
pub const DEFAULT_HTTP_PORT: u16 = 3500;

/// Bound on one call to the sidecar's API (state, publish, secrets, the startup probe).
pub const SIDECAR_TIMEOUT: Duration = Duration::from_secs(2);

/// Every Dapr setting of both agents. Dapr is on when DAPR_HTTP_PORT is set (the Dapr sidecar injector sets it), or
/// when an agent is told to use it in another way (the recommendation agent's DATA_MODE=dapr).
#[derive(Debug, Clone, Args)]
pub struct DaprArgs {
    /// HTTP port of the local Dapr sidecar; the Dapr sidecar injector sets it. Setting it turns Dapr on: the data
    /// agent publishes each change made with PUT /data as a data-updated event; the recommendation agent calls
    /// data through the sidecar (DATA_MODE=auto), keeps user state in the state store and subscribes to the events.
    #[arg(long, env = "DAPR_HTTP_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub dapr_http_port: Option<u16>,

    /// Token sent to the local Dapr sidecar in the `dapr-api-token` header; set it to the sidecar's
    /// DAPR_API_TOKEN when the sidecar requires one.
    #[arg(long, env = "DAPR_API_TOKEN", hide_env_values = true, value_parser = parse_token)]
    pub dapr_api_token: Option<String>,

    /// Token every call to this agent must carry in `dapr-api-token` (the sidecar sends its APP_API_TOKEN);
    /// /healthz, /readyz, /metrics and the docs stay open. Unset: calls are not checked. Set but empty is refused,
    /// since it would turn the check off without saying so.
    #[arg(long, env = "APP_API_TOKEN", hide_env_values = true, value_parser = parse_required_token)]
    pub app_api_token: Option<String>,

    /// Name of a secret in the Dapr secret store whose value is the app API token; read once at startup when Dapr
    /// is on and APP_API_TOKEN is not set.
    #[arg(long, env = "APP_API_TOKEN_SECRET")]
    pub app_api_token_secret: Option<String>,

    /// Name of the Dapr secret store component.
    #[arg(long, env = "SECRET_STORE", default_value = "secretstore", value_parser = parse_name)]
    pub secret_store: String,

    /// Bound on waiting at startup for the sidecar's `/v1.0/healthz/outbound`; the agent exits with status 1 if
    /// the sidecar is not ready by then. `0s` skips the wait.
    #[arg(long, env = "DAPR_WAIT_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub dapr_wait_timeout: Duration,

    /// Name of the Dapr pub/sub component data-updated events travel on: the data agent publishes to it, the
    /// recommendation agent subscribes to it.
    #[arg(long, env = "PUBSUB_NAME", default_value = "pubsub", value_parser = parse_name)]
    pub pubsub_name: String,

    /// Topic of the data-updated events.
    #[arg(long, env = "PUBSUB_TOPIC", default_value = "data-updated", value_parser = parse_name)]
    pub pubsub_topic: String,
}

impl DaprArgs {
    /// Settings for tests: no sidecar, no tokens, no wait, the default names.
    pub fn for_tests() -> Self {
        Self {
            dapr_http_port: None,
            dapr_api_token: None,
            app_api_token: None,
            app_api_token_secret: None,
            secret_store: "secretstore".to_owned(),
            dapr_wait_timeout: Duration::ZERO,
            pubsub_name: "pubsub".to_owned(),
            pubsub_topic: "data-updated".to_owned(),
        }
    }

    /// A client for the sidecar on `port` (normally [`DaprArgs::dapr_http_port`]), with DAPR_API_TOKEN.
    pub fn sidecar(&self, port: u16) -> Sidecar {
        Sidecar::new(port, self.dapr_api_token(), SIDECAR_TIMEOUT)
            .expect("the sidecar client builds: DAPR_API_TOKEN was checked when parsed")
    }

    /// The token for calls to the sidecar, if one is set (an empty value counts as unset).
    pub fn dapr_api_token(&self) -> Option<&str> {
        self.dapr_api_token.as_deref().filter(|t| !t.is_empty())
    }

    /// The app token from the environment, if one is set (an empty one is refused when parsed).
    pub fn app_api_token(&self) -> Option<&str> {
        self.app_api_token.as_deref()
    }

    /// Startup work when the agent has a sidecar: wait for it (bounded), then read the app token from the secret
    /// store when configured so. Returns the app token in effect.
    async fn start_with_sidecar(&self, sidecar: &Sidecar) -> Result<Option<String>, SidecarError> {
        if !self.dapr_wait_timeout.is_zero() {
            tracing::info!(sidecar = %sidecar.base(), bound = ?self.dapr_wait_timeout, "waiting for the Dapr sidecar");
            let waited = sidecar.wait_outbound(self.dapr_wait_timeout).await?;
            tracing::info!(waited_ms = waited.as_millis() as u64, sidecar = %sidecar.base(), "Dapr sidecar ready");
        }
        if let Some(token) = self.app_api_token() {
            return Ok(Some(token.to_owned()));
        }
        match self.app_api_token_secret.as_deref().filter(|s| !s.is_empty()) {
            Some(name) => {
                let token = sidecar.secret(&self.secret_store, name).await?;
                if token.is_empty() {
                    // A token was asked for; starting without one would leave the agent open.
                    return Err(SidecarError::BadAnswer(format!("secret {name} in {} is empty", self.secret_store)));
                }
                tracing::info!(store = %self.secret_store, secret = name, "app API token read from the secret store");
                Ok(Some(token))
            }
            None => Ok(None),
        }
    }

    /// The start-up work with a sidecar: wait for it (bounded by DAPR_WAIT_TIMEOUT), then read the app token from
    /// the secret store when so configured; returns the app token in effect. Abandoned when `shutdown` completes
    /// first (a SIGTERM while waiting for the sidecar must end the process, not wait out the bound): then `Ok(None)`.
    pub async fn start_with_sidecar_or<F>(
        &self,
        sidecar: &Sidecar,
        shutdown: &mut F,
    ) -> Result<Option<Option<String>>, SidecarError>
    where
        F: Future<Output = ()> + Unpin,
    {
        tokio::select! {
            started = self.start_with_sidecar(sidecar) => started.map(Some),
            () = shutdown => Ok(None),
        }
    }
}

/// Checks a token can travel in a header: visible ASCII only.
pub fn parse_token(raw: &str) -> Result<String, String> {
    if raw.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(raw.to_owned())
    } else {
        Err("must be visible ASCII characters (it is sent in an HTTP header)".to_owned())
    }
}

/// Like [`parse_token`], and not empty: for a token whose absence turns a check off, where an empty value set by
/// mistake (`APP_API_TOKEN=`) must not silently do the same.
pub fn parse_required_token(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Err("must not be empty; unset it to turn the check off".to_owned());
    }
    parse_token(raw)
}

/// Checks a Dapr name (a component, a topic, an app id, which may be `name.namespace`): what Dapr accepts in a URL
/// path segment.
pub fn parse_name(raw: &str) -> Result<String, String> {
    let valid = !raw.is_empty()
        && raw.len() <= 253
        && raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid { Ok(raw.to_owned()) } else { Err("must be letters, digits, '-', '_' or '.'".to_owned()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_app_token_is_refused_not_taken_as_unset() {
        assert!(parse_required_token("").unwrap_err().contains("unset it"));
        assert_eq!(parse_required_token("s3cret"), Ok("s3cret".to_owned()));
        assert!(parse_required_token("two words").is_err());
    }

    #[test]
    fn component_names_are_path_safe() {
        assert!(parse_name("statestore").is_ok());
        assert!(parse_name("state/../x").is_err());
        assert!(parse_name("").is_err());
    }
}
