//! A real Dapr mesh on loopback for the Dapr tests: a private `redis-server`, two self-hosted `daprd` sidecars
//! (sqlite name resolution, `DAPR_HOST_IP=127.0.0.1`, every listener on a free loopback port) and the two agent
//! binaries as their apps, with API tokens in both directions and the Dapr resources every setup uses (`dapr/`,
//! the files Kubernetes gets too) plus the self-hosted secret store (`deploy/dapr/local/`).
//!
//! Where daprd and redis-server come from: `AGENT_MESH_DAPRD` and `AGENT_MESH_REDIS_SERVER` (paths), which
//! `scripts/dapr-test.sh` sets after installing them (a long build of daprd on a fresh machine, instant with a warm
//! cache). The Dapr tests are `#[ignore]`d, so plain `cargo test` never installs anything and lists them as ignored;
//! the script (and with it CI, through `scripts/ci/dapr.sh`) runs them with `--ignored`. Everything started is killed and the temporary directory removed when the [`Mesh`] is
//! dropped, also when a test fails; then the tails of the sidecar logs are printed to help the diagnosis.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{AgentProcess, client};

/// Token the sidecars require from the agents (and the tests) on their API.
pub const DAPR_API_TOKEN: &str = "dapr-token-for-tests";
/// Token the sidecars present to the agents; the agents refuse calls without it.
pub const APP_API_TOKEN: &str = "app-token-for-tests";
/// Name of the secret holding the app token in the test secret store.
pub const APP_TOKEN_SECRET: &str = "app-api-token";

/// Bound on every startup wait (daprd loads a 230 MB binary; 2 busy cores can make that slow).
const START_BOUND: Duration = Duration::from_secs(60);

/// Paths of the external programs the mesh runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// daprd.
    pub daprd: PathBuf,
    /// redis-server.
    pub redis: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository").to_path_buf()
}

/// daprd and redis-server, from `AGENT_MESH_DAPRD` and `AGENT_MESH_REDIS_SERVER`. Panics with the reason when
/// they are not set or not files: a Dapr test never passes without Dapr.
pub fn tools() -> Tools {
    let path = |var: &str| -> PathBuf {
        let Some(path) = std::env::var_os(var).map(PathBuf::from) else {
            panic!("Dapr tests need {var}: run them with scripts/dapr-test.sh, which installs daprd and redis-server")
        };
        assert!(path.is_file(), "{var}={} is not a file", path.display());
        path
    };
    Tools { daprd: path("AGENT_MESH_DAPRD"), redis: path("AGENT_MESH_REDIS_SERVER") }
}

/// `n` distinct free loopback ports (held together while picked, so no duplicates).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("bound").port())
}

/// Polls `check` every 50 ms until it holds, at most `bound`; panics naming `what` otherwise.
pub fn wait_until(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        // Readiness polling: none of these components can notify a waiter.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Async [`wait_until`] for checks that make HTTP calls.
pub async fn wait_until_async<F, Fut>(what: &str, bound: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + bound;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    fn new(prefix: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("create scratch dir");
        Self(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if std::env::var("AGENT_MESH_KEEP_DAPR_DIR").is_ok_and(|v| v == "1") {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn redis_pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 16];
    stream.write_all(b"PING\r\n").is_ok() && stream.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// A running daprd.
#[derive(Debug)]
pub struct Daprd {
    /// Its app id.
    pub app_id: String,
    /// Its HTTP API port.
    pub http_port: u16,
    log: PathBuf,
    _proc: Proc,
}

impl Daprd {
    /// `http://127.0.0.1:<http port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// How to set up a mesh.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// Serve this port as the data app instead of starting the data agent (a stand-in already listening there).
    pub data_stand_in_port: Option<u16>,
    /// Extra environment for the recommendation agent.
    pub reco_env: Vec<(String, String)>,
    /// Extra environment for the data agent.
    pub data_env: Vec<(String, String)>,
}

/// Redis, two sidecars and the agents behind them.
pub struct Mesh {
    tools: Tools,
    /// Redis port.
    pub redis_port: u16,
    /// The data agent's sidecar.
    pub data_sidecar: Daprd,
    /// The recommendation agent's sidecar.
    pub reco_sidecar: Daprd,
    /// The data agent process (absent with a stand-in, or while stopped).
    pub data: Option<AgentProcess>,
    /// Port the data app listens on.
    pub data_port: u16,
    /// The recommendation agent process.
    pub reco: AgentProcess,
    dir: ScratchDir,
    _redis: Proc,
}

impl Mesh {
    /// Starts everything and waits (bounded) until invocation and the subscription are ready.
    pub async fn start(tools: Tools, options: MeshOptions) -> Self {
        tokio::task::spawn_blocking(move || Self::start_blocking(tools, options)).await.expect("mesh startup panicked")
    }

    fn start_blocking(tools: Tools, options: MeshOptions) -> Self {
        let dir = ScratchDir::new("agent-mesh-dapr");
        let [redis_port, data_port, reco_port, d1, d2, d3, d4, r1, r2, r3, r4] = free_ports::<11>();
        let data_port = options.data_stand_in_port.unwrap_or(data_port);

        let redis = Proc {
            child: Command::new(&tools.redis)
                .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server starts"),
        };
        wait_until("redis answers PING", START_BOUND, || redis_pong(redis_port));

        write_resources(&dir.0, redis_port);
        let data_sidecar = start_daprd(&tools, &dir.0, "data", data_port, [d1, d2, d3, d4]);
        let reco_sidecar = start_daprd(&tools, &dir.0, "recommendation", reco_port, [r1, r2, r3, r4]);

        let data_env = options.data_env.clone();
        let data =
            options.data_stand_in_port.is_none().then(|| start_data(data_port, data_sidecar.http_port, &data_env));
        let reco_sidecar_port = reco_sidecar.http_port.to_string();
        let reco_port_text = reco_port.to_string();
        let mut reco_env: Vec<(&str, &str)> = vec![
            ("PORT", &reco_port_text),
            ("DAPR_HTTP_PORT", &reco_sidecar_port),
            ("DAPR_API_TOKEN", DAPR_API_TOKEN),
            // The recommendation agent reads its app token through the secrets API (the data agent from env).
            ("APP_API_TOKEN_SECRET", APP_TOKEN_SECRET),
            ("DAPR_WAIT_TIMEOUT", "60s"),
        ];
        reco_env.extend(options.reco_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let reco = AgentProcess::start_within("recommendation", &reco_env, START_BOUND);

        let mesh = Self { tools, redis_port, data_sidecar, reco_sidecar, data, data_port, reco, dir, _redis: redis };
        for sidecar in [&mesh.data_sidecar, &mesh.reco_sidecar] {
            // 204 once the sidecar has loaded its components and reached its app.
            wait_until(&format!("daprd {} healthy", sidecar.app_id), START_BOUND, || {
                http_status(sidecar.http_port, "/v1.0/healthz") == Some(204)
            });
        }
        mesh
    }

    /// Waits until the recommendation sidecar has subscribed to the data-updated topic.
    pub async fn wait_subscribed(&self) {
        let url = self.reco_sidecar.url("/v1.0/metadata");
        wait_until_async("recommendation sidecar subscribed to data-updated", START_BOUND, || {
            let url = url.clone();
            async move {
                let Ok(response) = client().get(&url).header("dapr-api-token", DAPR_API_TOKEN).send().await else {
                    return false;
                };
                let metadata: Value = response.json().await.unwrap_or_default();
                metadata["subscriptions"]
                    .as_array()
                    .is_some_and(|subs| subs.iter().any(|s| s["topic"] == "data-updated"))
            }
        })
        .await;
    }

    /// URL of the recommendation agent.
    pub fn reco_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.reco.addr)
    }

    /// URL of the data agent.
    pub fn data_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.data_port)
    }

    /// Stops the data agent (SIGTERM, bounded wait).
    pub fn stop_data(&mut self) {
        if let Some(mut data) = self.data.take() {
            data.terminate();
            assert_eq!(data.wait_exit(Duration::from_secs(5)), Some(0), "data agent did not exit cleanly");
        }
    }

    /// Starts the data agent again on its port.
    pub async fn restart_data(&mut self) {
        let (port, sidecar) = (self.data_port, self.data_sidecar.http_port);
        let data = tokio::task::spawn_blocking(move || start_data(port, sidecar, &[])).await.expect("data starts");
        self.data = Some(data);
    }

    /// The scratch directory (resources, logs).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Path of the daprd used.
    pub fn daprd(&self) -> &Path {
        &self.tools.daprd
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for sidecar in [&self.data_sidecar, &self.reco_sidecar] {
                eprintln!("--- last lines of daprd {}:\n{}", sidecar.app_id, sidecar.tail());
            }
            let warnings: Vec<String> =
                self.reco.lines.try_iter().filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\"")).collect();
            eprintln!("--- warnings of the recommendation agent:\n{}", warnings.join("\n"));
        }
    }
}

fn start_data(port: u16, sidecar_port: u16, extra: &[(String, String)]) -> AgentProcess {
    let (port, sidecar_port) = (port.to_string(), sidecar_port.to_string());
    let mut env: Vec<(&str, &str)> = vec![
        ("PORT", &port),
        ("DAPR_HTTP_PORT", &sidecar_port),
        ("DAPR_API_TOKEN", DAPR_API_TOKEN),
        ("APP_API_TOKEN", APP_API_TOKEN),
        ("DAPR_WAIT_TIMEOUT", "60s"),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    AgentProcess::start_within("data", &env, START_BOUND)
}

/// The directories of Dapr resources a self-hosted sidecar loads, as the compose `dapr` profile mounts them: the
/// resources shared with Kubernetes, and the self-hosted secret store.
const RESOURCE_DIRS: [&str; 2] = ["dapr", "deploy/dapr/local"];

/// Writes the resources directories: copies of [`RESOURCE_DIRS`] with only Redis and the secrets file pointed at
/// this test's own, and a Configuration selecting sqlite name resolution.
///
/// The resolver's timings are widened from its defaults (`updateInterval` 5s, `timeout` 1s). A sidecar counts as
/// registered while its row is younger than `updateInterval` (whole seconds) and renews it every `updateInterval -
/// timeout - 1s` (components-contrib 1.18 `nameresolution/sqlite`), which leaves about 2 s of slack: with eight meshes
/// starting at once on two busy cores a renewal came late and an invocation got "no host found with the given ID"
/// (CI, 2026-12-02). With 15s and 5s the slack is 6 s.
fn write_resources(dir: &Path, redis_port: u16) {
    let secrets = dir.join("secrets.json");
    for (i, source) in RESOURCE_DIRS.iter().enumerate() {
        let resources = dir.join(format!("resources-{i}"));
        fs::create_dir_all(&resources).expect("create resources dir");
        let source = repo_root().join(source);
        for entry in fs::read_dir(&source).unwrap_or_else(|e| panic!("{}: {e}", source.display())) {
            let path = entry.expect("dir entry").path();
            let text = fs::read_to_string(&path).expect("read resource");
            let text = text
                .replace("redis:6379", &format!("127.0.0.1:{redis_port}"))
                .replace("/dapr/secrets.json", &secrets.display().to_string());
            fs::write(resources.join(path.file_name().expect("file name")), text).expect("write resource");
        }
    }
    fs::write(&secrets, serde_json::json!({ APP_TOKEN_SECRET: APP_API_TOKEN }).to_string()).expect("write secrets");
    let config = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: tests\nspec:\n  tracing:\n    \
         samplingRate: \"1\"\n  nameResolution:\n    component: sqlite\n    version: v1\n    configuration:\n      \
         connectionString: \"{}\"\n      updateInterval: 15s\n      timeout: 5s\n",
        dir.join("nameresolution.db").display()
    );
    fs::write(dir.join("config.yaml"), config).expect("write config");
}

fn start_daprd(tools: &Tools, dir: &Path, app_id: &str, app_port: u16, ports: [u16; 4]) -> Daprd {
    let [http, grpc, internal, metrics] = ports;
    let log = dir.join(format!("daprd-{app_id}.log"));
    let child = Command::new(&tools.daprd)
        .env("DAPR_HOST_IP", "127.0.0.1")
        .env("DAPR_API_TOKEN", DAPR_API_TOKEN)
        .env("APP_API_TOKEN", APP_API_TOKEN)
        .args(["--mode", "standalone", "--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--dapr-http-port", &http.to_string(), "--dapr-grpc-port", &grpc.to_string()])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .args(["--metrics-port", &metrics.to_string(), "--metrics-listen-address", "127.0.0.1"])
        .args(["--app-port", &app_port.to_string(), "--app-protocol", "http"])
        .args(["--dapr-graceful-shutdown-seconds", "1", "--log-level", "info"])
        .args((0..RESOURCE_DIRS.len()).flat_map(|i| ["--resources-path".into(), dir.join(format!("resources-{i}"))]))
        .arg("--config")
        .arg(dir.join("config.yaml"))
        .stdout(fs::File::create(&log).expect("create daprd log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("daprd starts");
    // No wait here: the agents wait for their sidecar themselves, and Mesh::start waits for full health.
    Daprd { app_id: app_id.to_owned(), http_port: http, log, _proc: Proc { child } }
}

/// Status of a plain `GET` on loopback `port` (a blocking exchange for the startup waits), `None` if no answer.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}
