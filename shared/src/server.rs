//! Serving a router with a bounded, observable graceful shutdown.
//!
//! hyper-util's connection builder is used instead of `axum::serve` because the agents need what `axum::serve` does
//! not expose: a header read timeout against slow clients, and a drain with a deadline.
//!
//! Shutdown sequence once `shutdown` completes: readiness flips to 503; requests are still accepted for
//! `shutdown_delay` (so load balancers notice before connections are refused); then the listener closes, idle
//! keep-alive connections are closed, and in-flight requests get up to `drain_timeout` to finish.

use std::{future::Future, io, process::ExitCode, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Notify};
use tower::ServiceExt;

use crate::{config::ServerArgs, health::Health};

/// Timing of the serve loop and its shutdown.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long to keep accepting after shutdown was requested, with readiness already failing.
    pub shutdown_delay: Duration,
    /// Bound on waiting for in-flight requests after the listener closed.
    pub drain_timeout: Duration,
    /// Bound on receiving a request's head.
    pub header_read_timeout: Duration,
}

impl From<&ServerArgs> for ServeOptions {
    fn from(args: &ServerArgs) -> Self {
        Self {
            shutdown_delay: args.shutdown_delay,
            drain_timeout: args.drain_timeout,
            header_read_timeout: args.header_read_timeout,
        }
    }
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every connection finished within the drain timeout.
    Complete,
    /// The drain timeout passed with connections still open; they were dropped.
    DeadlineExceeded,
}

impl DrainOutcome {
    /// Exit status for the process: 0 when nothing was cut off, 1 when requests were dropped.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Self::Complete => ExitCode::SUCCESS,
            Self::DeadlineExceeded => ExitCode::FAILURE,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then drains as described in the module docs.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainOutcome> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout);
    let graceful = GracefulShutdown::new();

    let first_request_timeout = options.header_read_timeout;
    accept_until(&listener, &builder, &graceful, &app, first_request_timeout, shutdown).await;
    health.start_draining();
    tracing::info!(delay_ms = options.shutdown_delay.as_millis() as u64, "readiness now failing; draining soon");
    let delay = tokio::time::sleep(options.shutdown_delay);
    accept_until(&listener, &builder, &graceful, &app, first_request_timeout, delay).await;
    drop(listener);

    tracing::info!(
        timeout_ms = options.drain_timeout.as_millis() as u64,
        "listener closed; draining in-flight requests"
    );
    match tokio::time::timeout(options.drain_timeout, graceful.shutdown()).await {
        Ok(()) => {
            tracing::info!("drain complete");
            Ok(DrainOutcome::Complete)
        }
        Err(_) => {
            tracing::warn!("drain timeout passed with requests still in flight; closing them");
            Ok(DrainOutcome::DeadlineExceeded)
        }
    }
}

async fn accept_until(
    listener: &TcpListener,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    app: &Router,
    header_read_timeout: Duration,
    until: impl Future<Output = ()>,
) {
    tokio::pin!(until);
    loop {
        let stream = tokio::select! {
            () = &mut until => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Typically EMFILE: back off briefly instead of spinning; the condition is logged each time.
                    tracing::error!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small JSON answers: Nagle's algorithm plus delayed ACKs would add tens of milliseconds per request.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        // hyper's header read timeout starts only once the connection is known to speak HTTP/1; a client that sends
        // nothing (or a slow HTTP/2 preface) would hold the connection forever. So the first request must arrive
        // within the same bound, or the connection is dropped.
        let first_request = Arc::new(Notify::new());
        let request_seen = first_request.clone();
        let service = TowerToHyperService::new(app.clone().map_request(move |req: Request<Incoming>| {
            request_seen.notify_one();
            req.map(Body::new)
        }));
        let connection =
            graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned());
        tokio::spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = &mut connection => ended,
                first = tokio::time::timeout(header_read_timeout, first_request.notified()) => match first {
                    Ok(()) => connection.await,
                    Err(_) => {
                        tracing::debug!("no request within the header read timeout; closing the connection");
                        return;
                    }
                },
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}
