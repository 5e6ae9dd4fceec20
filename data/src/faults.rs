//! Fault injection on `GET /data` (`FAULT_*` settings): lets a demo or a test make the real data agent fail the
//! ways upstreams fail (error status, slowness, a body that is not JSON, a connection cut mid-body) and counts the
//! requests it saw, so a caller's retries can be checked from the data agent's side.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{HeaderValue, StatusCode, header::CONTENT_LENGTH, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use http_body_util::channel::Channel;
use shared::fastapi::errors::json_error;

use crate::config::{FaultArgs, FaultBody};

/// The normal answer, which the `truncated` fault cuts in the middle.
const NORMAL_BODY: &[u8] = br#"{"processed_data":"some_insights"}"#;

/// How long the `truncated` fault waits after the first part of the body before cutting the connection, so the
/// headers and that part have left the process and the caller really sees a cut mid-body.
const TRUNCATE_AFTER: Duration = Duration::from_millis(50);

/// The configured faults and a count of the `GET /data` requests seen.
#[derive(Debug, Default)]
pub struct Faults {
    args: FaultArgs,
    seen: AtomicU64,
}

impl Faults {
    /// Faults as configured.
    pub fn new(args: FaultArgs) -> Self {
        Self { args, seen: AtomicU64::new(0) }
    }

    /// Whether any fault is configured.
    pub fn is_active(&self) -> bool {
        self.args.fault_status.is_some() || !self.args.fault_delay.is_zero() || self.args.fault_body.is_some()
    }

    /// The configured faults.
    pub fn args(&self) -> &FaultArgs {
        &self.args
    }

    /// Logs a warning at startup when faults are on, so nobody mistakes a demo for an outage.
    pub fn warn_if_active(&self) {
        if self.is_active() {
            let faults = &self.args;
            tracing::warn!(
                status = faults.fault_status,
                delay_ms = faults.fault_delay.as_millis() as u64,
                body = faults.fault_body.map(|b| format!("{b:?}").to_lowercase()),
                first = faults.fault_first,
                "fault injection is on: GET /data misbehaves deliberately"
            );
        }
    }

    /// How many `GET /data` requests this process has seen (tests count attempts with it).
    pub fn requests_seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Counts a `GET /data` request and applies the faults due to it: waits `FAULT_DELAY`, then returns the faulty
    /// answer to send, or `None` when the normal answer should go out.
    pub async fn intercept(&self) -> Option<Response> {
        let nth = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let first = self.args.fault_first;
        if !self.is_active() || (first > 0 && nth > first) {
            return None;
        }
        if !self.args.fault_delay.is_zero() {
            tokio::time::sleep(self.args.fault_delay).await;
        }
        if let Some(code) = self.args.fault_status {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Some(json_error(status, "Injected fault"));
        }
        match self.args.fault_body? {
            FaultBody::Garbage => {
                Some(([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], "<html>not json").into_response())
            }
            FaultBody::Truncated => Some(truncated()),
        }
    }
}

/// A 200 that declares the full normal body, sends half of it, and then breaks off the connection.
fn truncated() -> Response {
    let (mut sender, body) = Channel::<Bytes, std::io::Error>::new(1);
    tokio::spawn(async move {
        let half = Bytes::from_static(&NORMAL_BODY[..NORMAL_BODY.len() / 2]);
        if sender.send_data(half).await.is_ok() {
            tokio::time::sleep(TRUNCATE_AFTER).await;
            sender.abort(std::io::Error::other("injected fault: body cut short"));
        }
    });
    let mut response = Response::new(Body::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(NORMAL_BODY.len()));
    response
}
