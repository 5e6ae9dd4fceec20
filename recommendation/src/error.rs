//! Every way `/recommend` can fail, with its status and FastAPI-shaped body.
//!
//! 5xx bodies say what happened in terms the caller can act on; the cause (addresses, upstream bodies, library
//! errors) goes to the log, inside the request span, never to the caller.

use axum::{
    http::{HeaderValue, StatusCode, header::RETRY_AFTER},
    response::{IntoResponse, Response},
};
use shared::{errors::json_error, validation::ValidationErrorBody};

/// Failure of a recommendation request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 422: the request's parameters failed validation.
    #[error("invalid request parameters")]
    Validation(ValidationErrorBody),

    /// 503: the data agent (or its Dapr sidecar) could not be reached: refused, unresolvable, or connect timeout.
    #[error("data agent unreachable")]
    DataUnreachable(#[source] reqwest::Error),

    /// 503: the Dapr sidecar answered that it could not invoke data (`ERR_DIRECT_INVOKE*`).
    #[error("Dapr sidecar could not invoke the data agent ({0})")]
    SidecarCannotReachData(String),

    /// 504: the data agent did not answer completely within the data timeout.
    #[error("data agent timed out")]
    DataTimeout(#[source] reqwest::Error),

    /// 502: the data agent answered with a non-2xx status.
    #[error("data agent answered with status {0}")]
    DataBadStatus(reqwest::StatusCode),

    /// 502: the data agent's answer broke off or was not a JSON document of acceptable size.
    #[error("data agent sent an invalid answer: {0}")]
    DataBadBody(String),
}

impl Error {
    /// Short, stable name of the failure, for logs and metric labels.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Validation(_) => "invalid_request",
            Self::DataUnreachable(_) | Self::SidecarCannotReachData(_) => "unreachable",
            Self::DataTimeout(_) => "timeout",
            Self::DataBadStatus(_) => "bad_status",
            Self::DataBadBody(_) => "bad_body",
        }
    }

    /// The HTTP status this failure answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::DataUnreachable(_) | Self::SidecarCannotReachData(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::DataTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::DataBadStatus(_) | Self::DataBadBody(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Seconds a client should wait before retrying after a 503: long enough for a restarted data agent to come up.
const RETRY_AFTER_SECONDS: HeaderValue = HeaderValue::from_static("1");

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        // Data-call failures were logged with their cause where they happened (DataClient::fetch).
        let (status, outcome) = (self.status(), self.outcome());
        let detail = match self {
            Self::Validation(body) => {
                tracing::info!(outcome, issues = body.detail.len(), "request rejected");
                return body.into_response();
            }
            Self::DataUnreachable(_) | Self::SidecarCannotReachData(_) => {
                "The data agent is unreachable; try again shortly."
            }
            Self::DataTimeout(_) => "The data agent did not answer in time.",
            Self::DataBadStatus(_) | Self::DataBadBody(_) => "The data agent returned an invalid response.",
        };
        let mut response = json_error(status, detail);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(RETRY_AFTER, RETRY_AFTER_SECONDS);
        }
        response
    }
}
