//! Serving a router with a bounded, observable graceful shutdown.
//!
//! hyper-util's connection builder is used instead of `axum::serve` because the agents need what `axum::serve` does
//! not expose: bounds on slow or silent clients, and a drain with a deadline.
//!
//! Shutdown sequence once `shutdown` completes:
//! 1. readiness flips to 503 and requests are still served normally for `shutdown_delay`, so load balancers notice
//!    before anything is refused. Clients are asked to move meanwhile: every HTTP/1 answer carries
//!    `Connection: close` and every HTTP/2 connection gets a GOAWAY, so each client's next request goes out on a new
//!    connection, which a load balancer sends to another endpoint. Nothing is closed under a request in this phase;
//! 2. the drain: open connections finish their in-flight request and close, for at most `drain_timeout`. By now the
//!    connections of busy clients were closed cleanly during the delay; an idle HTTP/1 connection is closed at once
//!    (HTTP/1 has no way to announce that, which is why the delay matters). The listener stays open meanwhile, and
//!    new connections get a draining answer (`/readyz` 503, `/healthz` 200, anything else 503 with
//!    `Connection: close`) instead of a refused connection;
//! 3. the listener closes once no connection has arrived for 100 ms (closing it resets connections the kernel has
//!    accepted and the server has not yet: a client reconnecting right after the delay would lose its request), and
//!    the outcome says whether the drain finished in time.
//!
//! Each connection is served by its own task, which watches the server's phase (`Phase`) and decides when to ask hyper
//! for a graceful close (hyper-util's `GracefulShutdown` can only close every connection at once, whatever its
//! protocol, which is what step 1 must not do).

use std::{
    future::Future,
    io,
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, Version, header::CONNECTION},
    response::IntoResponse,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Notify, OwnedSemaphorePermit, Semaphore, watch},
    time::Instant,
};
use tower::ServiceExt;

use crate::{config::ServerArgs, errors::json_error, health::Health, wire_errors::JsonParseErrors};

/// Interval of HTTP/2 pings on idle connections; a peer that stops answering them is disconnected.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// During the drain, how long a connection that has not sent its first request yet may still send it. A client
/// sends its request right after connecting, so anything older is a pre-opened or silent connection; waiting for
/// it the full header read timeout would let one silent client hold every drain to its deadline.
const DRAIN_FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// How long the listener must have been quiet (no connection waiting) before it closes at the end of a drain, and how
/// long the last late arrivals then get to be answered.
const LISTENER_LINGER: Duration = Duration::from_millis(100);

/// Where the serve loop is; every connection task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Normal service.
    Serving,
    /// The shutdown delay: requests are served, and clients are asked to take their next ones elsewhere.
    Closing,
    /// The drain: connections finish what they have in flight and close.
    Draining,
}

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
    let (phase, _) = watch::channel(Phase::Serving);

    connections.accept_until(&listener, &app, &phase, shutdown).await;
    health.start_draining();
    phase.send_replace(Phase::Closing);
    tracing::info!(delay_ms = options.shutdown_delay.as_millis() as u64, "readiness now failing; draining soon");
    // Skipped without a delay: a zero sleep is not ready on its first poll (tokio fires it on the next timer
    // tick), so a connection waiting in the backlog would be accepted here as a normal one and then closed by
    // the drain before its request is read (the client sees a reset instead of the draining answer).
    if !options.shutdown_delay.is_zero() {
        connections.accept_until(&listener, &app, &phase, tokio::time::sleep(options.shutdown_delay)).await;
    }

    tracing::info!(
        timeout_ms = options.drain_timeout.as_millis() as u64,
        open_connections = phase.receiver_count(),
        "draining in-flight requests"
    );
    phase.send_replace(Phase::Draining);
    let deadline = Instant::now() + options.drain_timeout;
    let drained = tokio::time::timeout_at(deadline, phase.closed());
    // Connections arriving during the drain are not waited for: each gets one draining answer and is closed.
    let (late_arrivals, _) = watch::channel(Phase::Draining);
    let draining_app = draining_router(health);
    let outcome = connections.accept_until(&listener, &draining_app, &late_arrivals, drained).await;
    // Closing the listener resets the connections the kernel has accepted but the server has not: a client told to
    // reconnect at the end of the delay would lose the request it sent on one. So the listener stays until no
    // connection has come for a moment (within the drain deadline), and those connections get their answer.
    connections.accept_while_arriving(&listener, &draining_app, &late_arrivals, deadline).await;
    drop(listener);
    let _ = tokio::time::timeout(LISTENER_LINGER, late_arrivals.closed()).await;

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

/// Serves `app` on a second `listener` of the agent (the metrics port) with the same connection settings as
/// [`serve`], until the process exits. At most `max_connections` are served at once; beyond, a new connection is
/// closed as soon as it is accepted, so that a flood of connections to this port cannot take the file descriptors
/// the service port needs.
pub fn spawn_auxiliary(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    max_connections: usize,
) -> tokio::task::JoinHandle<()> {
    let mut connections = Connections::new(options);
    connections.limit = Some(Arc::new(Semaphore::new(max_connections)));
    tokio::spawn(async move {
        let (phase, _) = watch::channel(Phase::Serving);
        connections.accept_until(&listener, &app, &phase, std::future::pending::<()>()).await;
    })
}

/// What a connection that arrives during the drain is served: truthful probes, and 503 for everything else.
fn draining_router(health: Health) -> Router {
    // The connection task adds `Connection: close` to every answer given while draining.
    crate::health::routes(health).fallback(|| async {
        json_error(StatusCode::SERVICE_UNAVAILABLE, "The service is shutting down; retry elsewhere.").into_response()
    })
}

struct Connections {
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    /// Bound on connections served at once, if any.
    limit: Option<Arc<Semaphore>>,
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
        Self { builder, header_read_timeout: options.header_read_timeout, limit: None }
    }

    /// Accepts and serves connections until `until` completes, returning its output. Each connection watches
    /// `phase` (and holds it open: the drain waits for every watcher to be gone).
    async fn accept_until<T>(
        &self,
        listener: &TcpListener,
        app: &Router,
        phase: &watch::Sender<Phase>,
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
            let permit = match &self.limit {
                None => None,
                Some(limit) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        tracing::debug!("connection limit reached; closing the new connection");
                        continue;
                    }
                },
            };
            self.spawn_connection(stream, app.clone(), phase.subscribe(), permit);
        }
    }

    /// Accepts and serves connections until none has arrived for [`LISTENER_LINGER`], or `deadline` has passed.
    async fn accept_while_arriving(
        &self,
        listener: &TcpListener,
        app: &Router,
        phase: &watch::Sender<Phase>,
        deadline: Instant,
    ) {
        while Instant::now() < deadline {
            match tokio::time::timeout(LISTENER_LINGER, listener.accept()).await {
                Ok(Ok((stream, _peer))) => self.spawn_connection(stream, app.clone(), phase.subscribe(), None),
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "accept failed");
                    return;
                }
                Err(_quiet) => return,
            }
        }
    }

    fn spawn_connection(
        &self,
        stream: TcpStream,
        app: Router,
        mut phase: watch::Receiver<Phase>,
        permit: Option<OwnedSemaphorePermit>,
    ) {
        // Small JSON answers: Nagle's algorithm plus delayed ACKs would add tens of milliseconds per request.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let state = Arc::new(ConnectionState::new());
        let (seen, answering) = (state.clone(), state.clone());
        let closing = phase.clone();
        let service = app
            .map_request(move |req: Request<Incoming>| {
                seen.request_arrived(req.version());
                req.map(Body::new)
            })
            .map_future(move |response| {
                let closing = closing.clone();
                let in_flight = InFlight::start(answering.clone());
                async move {
                    let mut response = response.await?;
                    let http2 = in_flight.0.http2.load(Ordering::Relaxed);
                    drop(in_flight);
                    // HTTP/1 cannot announce a close ahead of time; an answer saying so is the clean way out. (The
                    // header is not allowed in HTTP/2, whose connections are sent a GOAWAY instead.)
                    if !http2 && *closing.borrow() != Phase::Serving {
                        response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
        let connection = self
            .builder
            .serve_connection_with_upgrades(
                TokioIo::new(JsonParseErrors::new(stream)),
                TowerToHyperService::new(service),
            )
            .into_owned();
        let header_read_timeout = self.header_read_timeout;
        tokio::spawn(async move {
            // Held for as long as the connection is served.
            let _permit = permit;
            tokio::pin!(connection);
            let accepted = state.opened;
            let mut close_requested = false;
            let mut watching = true;
            loop {
                let now = *phase.borrow_and_update();
                let first_request_seen = state.first_request_seen.load(Ordering::Acquire);
                let close_now = match now {
                    Phase::Serving => false,
                    Phase::Closing => state.http2.load(Ordering::Relaxed),
                    Phase::Draining => first_request_seen,
                };
                if close_now && !close_requested {
                    // HTTP/2: a GOAWAY, streams already open are still served. HTTP/1: closes when idle, or after
                    // the request in progress.
                    connection.as_mut().graceful_shutdown();
                    close_requested = true;
                }
                // hyper's header read timeout starts only once the connection is known to speak HTTP/1: a client
                // that sends nothing, or a slow HTTP/2 preface, would hold the connection forever. So the first
                // request must arrive within the same bound (shorter while draining), or the connection is dropped.
                let first_request_bound = match now {
                    Phase::Draining => header_read_timeout.min(DRAIN_FIRST_REQUEST_GRACE),
                    _ => header_read_timeout,
                };
                let first_request_due = accepted + first_request_bound;
                // hyper closes an idle HTTP/1 connection when its header read timeout runs out, but has no idle
                // bound for HTTP/2, whose pings a live client always answers: the same bound applies here.
                let idle_check = (state.http2.load(Ordering::Relaxed) && !close_requested)
                    .then(|| state.idle_deadline(header_read_timeout));
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(err) = ended {
                            tracing::debug!(error = %err, "connection ended with an error");
                        }
                        return;
                    }
                    changed = phase.changed(), if watching => watching = changed.is_ok(),
                    () = state.first_request.notified(), if !first_request_seen => {}
                    () = tokio::time::sleep_until(first_request_due), if !first_request_seen => {
                        tracing::debug!("no request within the header read timeout; closing the connection");
                        return;
                    }
                    () = tokio::time::sleep_until(idle_check.unwrap_or(first_request_due)), if idle_check.is_some() => {
                        if state.idle_deadline(header_read_timeout) <= Instant::now() {
                            tracing::debug!("HTTP/2 connection idle for the header read timeout; sending GOAWAY");
                            connection.as_mut().graceful_shutdown();
                            close_requested = true;
                        }
                    }
                }
            }
        });
    }
}

/// What a connection task learns from the requests on its connection.
#[derive(Debug)]
struct ConnectionState {
    opened: Instant,
    first_request_seen: AtomicBool,
    first_request: Notify,
    /// Whether the connection speaks HTTP/2; known from its first request (hyper-util's auto builder does not tell).
    http2: AtomicBool,
    /// Requests being answered right now.
    in_flight: AtomicUsize,
    /// When a request last started or was answered, in milliseconds since `opened`. Kept as a number the requests
    /// update with one store, so that idleness costs them no wake-up of the connection task: the task only reads
    /// it when its idle timer fires.
    last_activity_ms: AtomicU64,
}

/// Counts a request as in flight on its connection until dropped (answered, or abandoned by the client).
struct InFlight(Arc<ConnectionState>);

impl InFlight {
    fn start(state: Arc<ConnectionState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.touch();
        Self(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        // Release: whoever sees the count drop also sees the activity time written before it.
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

impl ConnectionState {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            first_request_seen: AtomicBool::new(false),
            first_request: Notify::new(),
            http2: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_activity_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let since_open = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.store(since_open, Ordering::Relaxed);
    }

    /// When the connection will have been idle (no request in flight) for `bound`, as far as is known now.
    fn idle_deadline(&self, bound: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + bound;
        }
        self.opened + Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed)) + bound
    }

    fn request_arrived(&self, version: Version) {
        if !self.first_request_seen.load(Ordering::Relaxed) {
            self.http2.store(version == Version::HTTP_2, Ordering::Relaxed);
            self.first_request_seen.store(true, Ordering::Release);
            self.first_request.notify_one();
        }
    }
}
