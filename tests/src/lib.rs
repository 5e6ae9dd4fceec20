//! Harness for cross-service tests: agents and stand-in upstreams served on loopback port 0, stopped on demand,
//! and the compiled binaries run as real processes.

pub mod dapr;
pub mod otlp;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    time::Duration,
};

use axum::{Router, http::HeaderMap, routing::get};
use shared::{agent::Agent, http::DrainOutcome};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
};
use url::Url;

/// An agent served in-process on loopback.
pub struct RunningAgent {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its readiness state.
    pub health: shared::http::health::Health,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<DrainOutcome>>,
}

impl RunningAgent {
    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Base URL, for pointing another agent here.
    pub fn base_url(&self) -> Url {
        Url::parse(&self.url("/")).expect("loopback URL")
    }

    /// Starts the graceful shutdown without waiting for it; see [`RunningAgent::finished`].
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (bounded) for the serve loop to end and returns how the drain went.
    pub async fn finished(self) -> DrainOutcome {
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("agent did not finish within 20 s")
            .expect("agent task panicked")
            .expect("agent serve loop failed")
    }

    /// Shuts down and waits for the drain.
    pub async fn stop(mut self) -> DrainOutcome {
        self.begin_shutdown();
        self.finished().await
    }
}

/// Serves `agent` on `listener` until [`RunningAgent::stop`] (or [`RunningAgent::begin_shutdown`]).
pub fn spawn_agent_on<A: Agent>(listener: TcpListener, agent: A) -> RunningAgent {
    let addr = listener.local_addr().expect("bound listener has an address");
    let health = agent.core().health().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(shared::agent::run(listener, Arc::new(agent), async move {
        let _ = stopped.await;
    }));
    RunningAgent { addr, health, stop: Some(stop), task }
}

/// Binds loopback port 0, or `addr` when restarting something on a known port.
pub async fn bind(addr: Option<SocketAddr>) -> TcpListener {
    TcpListener::bind(addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))).await.expect("bind loopback")
}

/// Serves a data agent on `listener`.
pub async fn spawn_data_on(listener: TcpListener, config: data::Config) -> RunningAgent {
    spawn_agent_on(listener, data::AppState::new(&config).expect("the data set loads"))
}

/// Serves a data agent on a fresh loopback port.
pub async fn spawn_data() -> RunningAgent {
    spawn_data_on(bind(None).await, data::Config::for_tests()).await
}

/// Serves a data agent with fault injection on a fresh loopback port; the returned handle counts the `GET /data`
/// requests it saw.
pub async fn spawn_faulty_data(faults: data::config::FaultArgs) -> (RunningAgent, Arc<data::Faults>) {
    spawn_counted_data(data::Config { faults, ..data::Config::for_tests() }).await
}

/// Serves a data agent with `config` on a fresh loopback port; the returned handle counts the `GET /data` requests
/// it saw.
pub async fn spawn_counted_data(config: data::Config) -> (RunningAgent, Arc<data::Faults>) {
    let state = data::AppState::new(&config).expect("the data set loads");
    let seen = state.faults().clone();
    (spawn_agent_on(bind(None).await, state), seen)
}

/// Serves a recommendation agent with `config` on a fresh loopback port.
pub async fn spawn_recommendation(config: recommendation::Config) -> RunningAgent {
    spawn_agent_on(bind(None).await, recommendation::AppState::new(&config).expect("data client builds"))
}

/// One B3 trace context in both its forms, the `x-b3-*` headers and the single `b3` header, as Zipkin-instrumented
/// callers and Istio's proxies send it: the agents must pass every one on to data unchanged.
pub const B3_CONTEXT: [(&str, &str); 6] = [
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
    ("x-b3-sampled", "1"),
    ("x-b3-flags", "1"),
    ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
];

/// A stand-in upstream (a misbehaving data agent, a fake sidecar) served on loopback until dropped.
pub struct StandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl StandIn {
    /// Serves `router` on a fresh loopback port.
    pub async fn serve(router: Router) -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("bound listener has an address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, task }
    }

    /// A data agent stand-in that answers `GET /data` with the original contract and hands the headers of every
    /// request to the test, in the order they arrive.
    pub async fn recording_data() -> (Self, tokio::sync::mpsc::UnboundedReceiver<HeaderMap>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let router = Router::new().route(
            "/data",
            get(move |headers: HeaderMap| {
                let tx = tx.clone();
                async move {
                    tx.send(headers).expect("the test holds the receiver");
                    axum::Json(serde_json::json!({"processed_data": "some_insights"}))
                }
            }),
        );
        (Self::serve(router).await, rx)
    }

    /// Base URL of the stand-in.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("loopback URL")
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TCP load balancer in front of agent replicas, as kube-proxy is in front of a Service's endpoints: each new
/// connection goes to the next endpoint in the current set (round robin), and established connections stay with
/// the endpoint they were sent to when it is removed from the set. Serves until dropped.
pub struct Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    endpoints: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Balancer {
    /// Balances over `endpoints` on a fresh loopback port.
    pub async fn spawn(endpoints: &[SocketAddr]) -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("bound listener has an address");
        let endpoints = Arc::new(Mutex::new(endpoints.to_vec()));
        let current = endpoints.clone();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                let endpoint = {
                    let current = current.lock().expect("endpoint list");
                    next = next.wrapping_add(1);
                    current.get(next % current.len().max(1)).copied()
                };
                tokio::spawn(async move {
                    let Some(endpoint) = endpoint else { return };
                    // A refused connect closes the client's connection, as an unreachable endpoint does.
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(endpoint).await {
                        let _ = upstream.set_nodelay(true);
                        let _ = client.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { addr, endpoints, task }
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Base URL, for pointing an agent here.
    pub fn base_url(&self) -> Url {
        Url::parse(&self.url("/")).expect("loopback URL")
    }

    /// Takes `endpoint` out of the set (new connections no longer go there; established ones stay).
    pub fn remove(&self, endpoint: SocketAddr) {
        self.endpoints.lock().expect("endpoint list").retain(|e| *e != endpoint);
    }

    /// Adds `endpoint` to the set.
    pub fn add(&self, endpoint: SocketAddr) {
        self.endpoints.lock().expect("endpoint list").push(endpoint);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a [`RawUpstream`] treats each connection it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawBehaviour {
    /// Accept and never read or answer (a wedged process whose kernel still accepts connections).
    Hang,
    /// Read the request head, send a 200 head promising a longer body than follows, then close the connection.
    CutBody,
    /// Answer the first request with the data contract as a keep-alive HTTP/1.1 response (no `Connection: close`),
    /// then close the connection a moment later, as a server whose keep-alive timer fires or which restarts does:
    /// a client that reuses the connection meanwhile sees it closed before any answer.
    AnswerOnceThenClose,
}

/// Reads up to the end of a request head; false if the connection ended first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// An upstream speaking raw TCP, for failures an HTTP framework will not produce; counts accepted connections.
pub struct RawUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Serves `behaviour` on a fresh loopback port until dropped.
    pub async fn spawn(behaviour: RawBehaviour) -> Self {
        let listener = bind(None).await;
        let addr = listener.local_addr().expect("bound listener has an address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                match behaviour {
                    RawBehaviour::Hang => held.push(stream),
                    RawBehaviour::CutBody => {
                        tokio::spawn(async move {
                            if read_head(&mut stream).await {
                                let partial = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"processed";
                                let _ = stream.write_all(partial.as_bytes()).await;
                                let _ = stream.flush().await;
                            }
                        });
                    }
                    RawBehaviour::AnswerOnceThenClose => {
                        tokio::spawn(async move {
                            if read_head(&mut stream).await {
                                let body = r#"{"processed_data":"some_insights"}"#;
                                let answer = format!(
                                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                let _ = stream.write_all(answer.as_bytes()).await;
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                        });
                    }
                }
            }
        });
        Self { addr, accepted, task }
    }

    /// Base URL of the upstream.
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("loopback URL")
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks that `addr` closes, after about `header_read_timeout`, connections that send half a request head, nothing,
/// or part of an HTTP/2 preface.
pub async fn assert_slow_clients_cut(addr: SocketAddr, header_read_timeout: Duration) {
    for (what, sent) in [
        ("half a header", &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow"[..]),
        ("nothing", &b""[..]),
        ("part of an HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
    ] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(sent).await.expect("write");
        let started = std::time::Instant::now();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
        let elapsed = started.elapsed();
        assert!(read.is_ok(), "{addr}: connection that sent {what} still open after 3 s");
        assert!(
            elapsed >= header_read_timeout.mul_f64(0.8) && elapsed < header_read_timeout * 5,
            "{addr}: {what}: closed after {elapsed:?}"
        );
    }
}

/// An HTTP/2 connection (prior knowledge) to `addr`, driven in the background. The receiver yields when the
/// connection has ended, i.e. when the server closed it.
pub async fn h2_connection(
    addr: SocketAddr,
) -> (hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>, oneshot::Receiver<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("HTTP/2 handshake");
    let (ended_tx, ended) = oneshot::channel();
    tokio::spawn(async move {
        let _ = connection.await;
        let _ = ended_tx.send(());
    });
    (sender, ended)
}

/// Sends `GET path` on an HTTP/2 connection made by [`h2_connection`] and reads the whole answer.
pub async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Result<(hyper::StatusCode, hyper::body::Bytes), hyper::Error> {
    use http_body_util::BodyExt;
    let request =
        hyper::Request::get(format!("http://{addr}{path}")).body(http_body_util::Empty::new()).expect("request");
    let response = sender.send_request(request).await?;
    let status = response.status();
    Ok((status, response.into_body().collect().await?.to_bytes()))
}

/// A shared HTTP client for tests, with a bound on every call so a hang fails the test instead of stalling it.
pub fn client() -> reqwest::Client {
    shared::http::client::builder().timeout(Duration::from_secs(10)).no_proxy().build().expect("client builds")
}

/// Path of a compiled workspace binary: in `AGENT_BIN_DIR` when that is set (scripts/ci/hardening.sh points it at the
/// release builds), else next to the test executable (built by `cargo test --workspace` or `cargo build`).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("AGENT_BIN_DIR") {
        // Relative to the workspace root, not to this crate's directory where cargo runs the tests.
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir),
        None => {
            let mut dir = std::env::current_exe().expect("test executable path");
            dir.pop(); // the test executable
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run `cargo build --workspace` (or cargo test --workspace) first",
        path.display()
    );
    // `cargo test -p agent-tests` builds no binaries of other packages, and building them from here would wait on
    // the build-directory lock the running `cargo test` holds; so a binary older than the sources it is built from
    // fails the test loudly instead of being tested silently.
    if std::env::var_os("AGENT_BIN_DIR").is_none() {
        let built = modified(&path).expect("the binary has a modification time");
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if let Some(newer) = ["shared", name].iter().find_map(|krate| newer_source(&root.join(krate), built)) {
            panic!(
                "{} is older than {}: run `cargo build --bins` (or `cargo test --workspace`) first",
                path.display(),
                newer.display()
            );
        }
    }
    path
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A file under `dir` (its `src/` and `Cargo.toml`) modified after `than`, if any.
fn newer_source(dir: &Path, than: std::time::SystemTime) -> Option<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    if modified(&manifest).is_some_and(|t| t > than) {
        return Some(manifest);
    }
    let mut pending = vec![dir.join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if modified(&path).is_some_and(|t| t > than) {
                return Some(path);
            }
        }
    }
    None
}

/// An agent binary running as a child process, killed when dropped.
pub struct AgentProcess {
    /// The child.
    pub child: Child,
    /// Where it listens, read from its startup log line.
    pub addr: SocketAddr,
    /// Lines it prints after the startup line.
    pub lines: mpsc::Receiver<String>,
}

impl AgentProcess {
    /// Starts `binary` on an ephemeral loopback port with `envs`, and waits (bounded) for its "listening" log line.
    pub fn start(binary: &str, envs: &[(&str, &str)]) -> Self {
        Self::start_within(binary, envs, Duration::from_secs(10))
    }

    /// Like [`AgentProcess::start`], waiting up to `bound` for the "listening" line (an agent with a sidecar
    /// waits for the sidecar first).
    pub fn start_within(binary: &str, envs: &[(&str, &str)], bound: Duration) -> Self {
        Self::launch(Command::new(self::binary(binary)), binary, envs, bound)
    }

    /// Like [`AgentProcess::start`], with at most `max_fds` open file descriptors (`ulimit -n`).
    pub fn start_with_fd_limit(binary: &str, envs: &[(&str, &str)], max_fds: u32) -> Self {
        let mut command = Command::new("sh");
        command.args(["-c", &format!("ulimit -n {max_fds} && exec \"$0\""), &self::binary(binary).to_string_lossy()]);
        Self::launch(command, binary, envs, Duration::from_secs(10))
    }

    fn launch(mut command: Command, binary: &str, envs: &[(&str, &str)], bound: Duration) -> Self {
        let mut child = command
            .env_clear()
            .envs([("PORT", "0"), ("BIND_ADDR", "127.0.0.1"), ("LOG_FORMAT", "json")])
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("agent binary starts");
        let lines = read_lines(child.stdout.take().expect("piped stdout"));
        let addr = loop {
            let line = lines
                .recv_timeout(bound)
                .unwrap_or_else(|_| panic!("{binary} did not print its listening line within {bound:?}"));
            if let Some(addr) = listening_addr(&line) {
                break addr;
            }
        };
        Self { child, addr, lines }
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (via kill(1), keeping this crate free of unsafe code).
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `bound` for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, bound: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            // Polling the child's state (no readiness signal exists for process exit without unsafe code).
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in an agent's "listening" log line, JSON (`"addr":"…"`) or text (`addr=…`).
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        return event["message"]
            .as_str()
            .filter(|m| m.ends_with("listening"))
            .and(event["addr"].as_str())?
            .parse()
            .ok();
    }
    line.contains("listening")
        .then(|| line.split_whitespace().find_map(|field| field.strip_prefix("addr=")))??
        .parse()
        .ok()
}

fn read_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
