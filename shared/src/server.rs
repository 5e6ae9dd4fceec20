//! Serving a router with a bounded, observable graceful shutdown.
//!
//! hyper-util's connection builder is used instead of `axum::serve` because the agents need what `axum::serve` does
//! not expose: bounds on slow or silent clients, and a drain with a deadline.
//!
//! Shutdown sequence once `shutdown` completes:
//! 1. readiness flips to 503 and requests are still served normally for `shutdown_delay`, so load balancers notice
//!    before anything is refused;
//! 2. the drain: open connections finish their in-flight request and close, for at most `drain_timeout`. The
//!    listener stays open meanwhile, and new connections get a draining answer (`/readyz` 503, `/healthz` 200,
//!    anything else 503 with `Connection: close`) instead of a refused connection;
//! 3. the listener closes and the outcome says whether the drain finished in time.

use std::{future::Future, io, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request, http::StatusCode, response::IntoResponse};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Notify,
};
use tower::ServiceExt;

use crate::{config::ServerArgs, errors::json_error, health::Health};

/// Interval of HTTP/2 pings on idle connections; a peer that stops answering them is disconnected.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// Timing of the serve loop and its shutdown.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// How long to keep serving normally after shutdown was requested, with readiness already failing.
    pub shutdown_delay: Duration,
    /// Bound on waiting for in-flight requests to finish.
    pub drain_timeout: Duration,
    /// Bound on receiving a request's head, and on a new connection's first byte.
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

/// Binds the listener the settings ask for, with the address in the error message.
pub async fn bind(args: &ServerArgs) -> io::Result<TcpListener> {
    let addr = SocketAddr::new(args.bind_addr, args.port);
    TcpListener::bind(addr).await.map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))
}

/// Serves `app` on `listener` until `shutdown` completes, then drains as described in the module docs.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    health: Health,
    shutdown: impl Future<Output = ()>,
) -> io::Result<DrainOutcome> {
    let connections = Connections::new(options);

    connections.accept_until(&listener, &app, Some(&connections.graceful), shutdown).await;
    health.start_draining();
    tracing::info!(delay_ms = options.shutdown_delay.as_millis() as u64, "readiness now failing; draining soon");
    // Skipped without a delay: a zero sleep is not ready on its first poll (tokio fires it on the next timer
    // tick), so a connection waiting in the backlog would be accepted here as a normal one and then closed by
    // the drain before its request is read (the client sees a reset instead of the draining answer).
    if !options.shutdown_delay.is_zero() {
        connections
            .accept_until(&listener, &app, Some(&connections.graceful), tokio::time::sleep(options.shutdown_delay))
            .await;
    }

    tracing::info!(
        timeout_ms = options.drain_timeout.as_millis() as u64,
        open_connections = connections.graceful.count(),
        "draining in-flight requests"
    );
    let draining_app = draining_router(health);
    let Connections { builder, graceful, header_read_timeout } = connections;
    let late_arrivals =
        Connections { builder: builder.clone(), graceful: GracefulShutdown::new(), header_read_timeout };
    let drained = tokio::time::timeout(options.drain_timeout, graceful.shutdown());
    // Connections arriving during the drain are not watched: each gets one draining answer and is closed.
    let outcome = late_arrivals.accept_until(&listener, &draining_app, None, drained).await;
    drop(listener);

    match outcome {
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

/// What a connection that arrives during the drain is served: truthful probes, and 503 for everything else.
fn draining_router(health: Health) -> Router {
    crate::health::routes(health).fallback(|| async {
        let mut response =
            json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is shutting down; retry elsewhere.")
                .into_response();
        response.headers_mut().insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        response
    })
}

struct Connections {
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    header_read_timeout: Duration,
}

impl Connections {
    fn new(options: ServeOptions) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(options.header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(options.header_read_timeout);
        Self { builder, graceful: GracefulShutdown::new(), header_read_timeout: options.header_read_timeout }
    }

    /// Accepts and serves connections until `until` completes, returning its output.
    async fn accept_until<T>(
        &self,
        listener: &TcpListener,
        app: &Router,
        watch: Option<&GracefulShutdown>,
        until: impl Future<Output = T>,
    ) -> T {
        tokio::pin!(until);
        loop {
            let stream = tokio::select! {
                // A requested shutdown wins over a pending accept.
                biased;
                output = &mut until => return output,
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
            self.spawn_connection(stream, app.clone(), watch);
        }
    }

    fn spawn_connection(&self, stream: TcpStream, app: Router, watch: Option<&GracefulShutdown>) {
        // Small JSON answers: Nagle's algorithm plus delayed ACKs would add tens of milliseconds per request.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        // hyper's header read timeout starts only once the connection is known to speak HTTP/1: a client that sends
        // nothing, or a slow HTTP/2 preface, would hold the connection forever. So the first request must arrive
        // within the same bound, or the connection is dropped.
        let first_request_timeout = self.header_read_timeout;
        let first_request = Arc::new(Notify::new());
        let request_seen = first_request.clone();
        let service = TowerToHyperService::new(app.map_request(move |req: Request<Incoming>| {
            request_seen.notify_one();
            req.map(Body::new)
        }));
        let connection = self.builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
        let watcher = watch.map(GracefulShutdown::watcher);
        tokio::spawn(async move {
            let connection = async move {
                match watcher {
                    Some(watcher) => watcher.watch(connection).await,
                    None => connection.await,
                }
            };
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = &mut connection => ended,
                first = tokio::time::timeout(first_request_timeout, first_request.notified()) => match first {
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
