//! Every way `/recommend` can fail, with its status and FastAPI-shaped body: [`DataError`] for the call to the data
//! agent (what the retry policy and the circuit breaker classify), [`ApiError`] for the request as a whole (its
//! parameters, the data call, the user's state); and [`DataClientError`], why the data client could not be built.
//!
//! 5xx bodies say what happened in terms the caller can act on; the cause (addresses, upstream bodies, library
//! errors) goes to the log, inside the request span, never to the caller.

use std::time::Duration;

use axum::{
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use shared::fastapi::{ValidationErrorBody, json_error};

use crate::state::StateError;

/// Failure of `/recommend` as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request's parameters failed validation.
    #[error("invalid request parameters")]
    Validation(ValidationErrorBody),
    /// The data call failed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// The user's state could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Validation(body) => {
                tracing::info!(outcome = "invalid_request", issues = body.detail.len(), "request rejected");
                body.into_response()
            }
            Self::Data(err) => err.into_response(),
            Self::State(err) => err.into_response(),
        }
    }
}

/// Why the data client could not be built (the agent then does not start).
#[derive(Debug, thiserror::Error)]
pub enum DataClientError {
    /// The platform's certificate verifier, which checks an https DATA_URL's certificate, could not be set up.
    #[error("could not set up TLS certificate verification for the data call")]
    Tls(#[source] rustls::Error),
}

/// Failure of the call to the data agent.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// 503: the data agent (or its Dapr sidecar) could not be reached: refused, unresolvable, or connect timeout.
    #[error("data agent unreachable")]
    DataUnreachable(#[source] hyper_util::client::legacy::Error),

    /// 503: the data agent (or its sidecar) closed the connection the call went out on before answering anything,
    /// on every try (a connection closed under a request is normal when a server restarts or its keep-alive timer
    /// fires, so the call is first sent again at once).
    #[error("data agent closed the connection before answering")]
    DataConnectionClosed(#[source] hyper_util::client::legacy::Error),

    /// 503: the Dapr sidecar answered that it could not invoke data (`ERR_DIRECT_INVOKE*`).
    #[error("Dapr sidecar could not invoke the data agent ({0})")]
    SidecarCannotReachData(String),

    /// 504: an attempt at the data call did not complete within the data timeout (and no retry got further).
    #[error("data agent did not answer within {after:?}")]
    DataTimeout {
        /// The attempt's time budget.
        after: Duration,
    },

    /// 504: the request deadline passed before the data agent answered (across attempts and backoff).
    #[error("request deadline of {after:?} passed before the data agent answered")]
    DeadlineExceeded {
        /// The request deadline.
        after: Duration,
    },

    /// 503: the circuit breaker is open after repeated data failures; the data agent was not called.
    #[error("data circuit breaker open; next probe in {retry_after:?}")]
    CircuitOpen {
        /// Time until the breaker lets a probe through.
        retry_after: Duration,
    },

    /// 502: the data agent (or a sidecar on the way) refused the call as unauthenticated (401) or forbidden (403):
    /// a configuration mistake on this side, which retries cannot fix.
    #[error("data agent refused the call with {status}; {hint}")]
    DataRefused {
        /// 401 or 403.
        status: StatusCode,
        /// What to check, for the log.
        hint: &'static str,
    },

    /// 502: the data agent answered with a non-2xx status.
    #[error("data agent answered with status {0}")]
    DataBadStatus(StatusCode),

    /// 502: the data agent's answer broke off or was not a JSON document of acceptable size.
    #[error("data agent sent an invalid answer: {0}")]
    DataBadBody(String),
}

impl DataError {
    /// Short, stable name of the failure, for logs and metric labels.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::DataUnreachable(_) | Self::SidecarCannotReachData(_) => "unreachable",
            Self::DataConnectionClosed(_) => "closed",
            Self::DataTimeout { .. } => "timeout",
            Self::DeadlineExceeded { .. } => "deadline",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::DataRefused { .. } => "refused",
            Self::DataBadStatus(_) => "bad_status",
            Self::DataBadBody(_) => "bad_body",
        }
    }

    /// The HTTP status this failure answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::DataUnreachable(_)
            | Self::DataConnectionClosed(_)
            | Self::SidecarCannotReachData(_)
            | Self::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::DataTimeout { .. } | Self::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::DataRefused { .. } | Self::DataBadStatus(_) | Self::DataBadBody(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// How long a caller should wait before trying again, for the 503 answers: long enough for a restarted data
    /// agent to come up, or the rest of the breaker's cool-down.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::DataUnreachable(_) | Self::DataConnectionClosed(_) => Some(Duration::from_secs(1)),
            Self::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// `Retry-After` in whole seconds, rounded up so a caller never comes back early, and at least 1.
fn retry_after_header(wait: Duration) -> HeaderValue {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

impl IntoResponse for DataError {
    fn into_response(self) -> Response {
        // Data-call failures were logged with their cause where they happened (DataClient::fetch).
        let (status, retry_after) = (self.status(), self.retry_after());
        let detail = match self {
            Self::DataUnreachable(_) | Self::DataConnectionClosed(_) | Self::SidecarCannotReachData(_) => {
                "The data agent is unreachable; try again shortly."
            }
            Self::DataTimeout { .. } | Self::DeadlineExceeded { .. } => "The data agent did not answer in time.",
            Self::CircuitOpen { .. } => {
                "The data agent is failing; calls to it are paused. Try again after Retry-After."
            }
            Self::DataRefused { .. } => "The data agent refused the call: this agent is not allowed to call it.",
            Self::DataBadStatus(_) | Self::DataBadBody(_) => "The data agent returned an invalid response.",
        };
        let mut response = json_error(status, detail);
        if let Some(wait) = retry_after {
            response.headers_mut().insert(RETRY_AFTER, retry_after_header(wait));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds_and_is_never_zero() {
        assert_eq!(retry_after_header(Duration::from_millis(4200)), "5");
        assert_eq!(retry_after_header(Duration::from_secs(3)), "3");
        assert_eq!(retry_after_header(Duration::ZERO), "1");
    }

    #[test]
    fn an_open_circuit_is_503_with_the_rest_of_the_cool_down() {
        let response = DataError::CircuitOpen { retry_after: Duration::from_millis(2500) }.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[RETRY_AFTER], "3");
        let deadline = DataError::DeadlineExceeded { after: Duration::from_secs(5) };
        assert_eq!((deadline.status(), deadline.outcome()), (StatusCode::GATEWAY_TIMEOUT, "deadline"));
        assert!(deadline.into_response().headers().get(RETRY_AFTER).is_none());
    }
}
