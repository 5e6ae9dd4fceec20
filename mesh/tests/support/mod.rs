//! Test support: real Envoy processes, fault-injecting stand-in upstreams, a test CA, and the parsed manifests.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    serve::ListenerExt,
};
use mesh::{
    ClientSidecar, Endpoint, Manifests, Outbound, ServerSidecar, Tls, certs::Ca, envoy, host_namespace, spiffe_id,
};
use serde_json::{Value, json};

/// Bound on every wait for a process to come up.
pub const STARTUP: Duration = Duration::from_secs(30);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The manifests under `istio/` (or `AGENT_MESH_ISTIO_DIR`, for a checked copy with changed numbers).
pub fn istio_dir() -> PathBuf {
    std::env::var_os("AGENT_MESH_ISTIO_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("istio"))
}

pub fn manifests() -> Manifests {
    Manifests::load(&istio_dir()).expect("istio/ manifests parse")
}

/// `AGENT_MESH_ENVOY`, else what scripts/tools/install-envoy.sh prints.
pub fn envoy_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("AGENT_MESH_ENVOY") {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/tools/install-envoy.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("install-envoy.sh runs");
        assert!(out.status.success(), "install-envoy.sh failed");
        let text = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(text.lines().last().expect("install-envoy.sh printed a path").trim())
    })
    .clone()
}

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mesh-test-{}-{tag}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn http() -> reqwest::Client {
    shared::http::client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("client")
}

/// `envoy --mode validate` on a bootstrap; returns (success, output).
pub fn validate(config: &Value, dir: &Path, name: &str) -> (bool, String) {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "--log-level", "warn", "-c"])
        .arg(&path)
        .output()
        .expect("envoy runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// A running Envoy, killed on drop.
pub struct Envoy {
    child: Child,
    pub name: String,
    pub admin: SocketAddr,
    log: PathBuf,
}

impl Envoy {
    pub async fn start(config: &Value, dir: &Path, name: &str) -> Self {
        let cfg = dir.join(format!("{name}.json"));
        std::fs::write(&cfg, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let admin_path = dir.join(format!("{name}.admin"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(envoy_bin())
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn", "-c"])
            .arg(&cfg)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(std::fs::File::options().append(true).open(&log).unwrap()))
            .spawn()
            .expect("envoy starts");
        let mut envoy = Self { child, name: name.to_owned(), admin: "127.0.0.1:1".parse().unwrap(), log };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(text) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = text.trim().parse()
            {
                envoy.admin = addr;
                break;
            }
            envoy.assert_running();
            assert!(Instant::now() < deadline, "{name}: no admin address within {STARTUP:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        loop {
            let ready = http().get(format!("http://{}/ready", envoy.admin)).send().await;
            if let Ok(r) = ready
                && r.text().await.unwrap_or_default().starts_with("LIVE")
            {
                break;
            }
            envoy.assert_running();
            assert!(Instant::now() < deadline, "{name}: admin /ready not LIVE within {STARTUP:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        envoy
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!(
                "{}: envoy exited ({status}):\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }

    /// The port a listener got (they all bind port 0), from admin `/listeners`.
    pub async fn listener_port(&self, listener: &str) -> u16 {
        let body: Value = http()
            .get(format!("http://{}/listeners?format=json", self.admin))
            .send()
            .await
            .expect("admin /listeners")
            .json()
            .await
            .expect("listeners JSON");
        body["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == listener)
            .and_then(|l| l["local_address"]["socket_address"]["port_value"].as_u64())
            .unwrap_or_else(|| panic!("{}: no listener {listener} in {body}", self.name)) as u16
    }

    /// Every counter and gauge, from admin `/stats?format=json`.
    pub async fn stats(&self) -> HashMap<String, u64> {
        let body: Value = http()
            .get(format!("http://{}/stats?format=json", self.admin))
            .send()
            .await
            .expect("admin /stats")
            .json()
            .await
            .expect("stats JSON");
        body["stats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s["name"].as_str()?.to_owned(), s["value"].as_u64()?)))
            .collect()
    }

    /// One stat; 0 when Envoy has not created it yet.
    pub async fn stat(&self, name: &str) -> u64 {
        self.stats().await.get(name).copied().unwrap_or(0)
    }

    /// The stats whose names contain `part` (for failure messages).
    pub async fn stats_matching(&self, part: &str) -> BTreeMap<String, u64> {
        self.stats().await.into_iter().filter(|(k, v)| k.contains(part) && *v > 0).collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- stand-in upstreams

/// What a stand-in does, per request, driven by request headers so one upstream serves several scenarios:
/// `x-scenario` names a counter; the first `x-fail-first` requests of a scenario answer 503, the first
/// `x-delay-first` ones wait `x-delay-ms` before answering.
#[derive(Clone)]
pub struct Behaviour {
    pub name: String,
    /// Always answer this status (a broken replica).
    pub always: Option<u16>,
    counts: Arc<Mutex<HashMap<String, u32>>>,
    total: Arc<AtomicU32>,
}

pub struct StandIn {
    pub addr: SocketAddr,
    pub behaviour: Behaviour,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    pub async fn start(name: &str, always: Option<u16>) -> Self {
        let behaviour = Behaviour { name: name.to_owned(), always, counts: Arc::default(), total: Arc::default() };
        let router = Router::new().fallback(handle).with_state(behaviour.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        // TCP_NODELAY: without it Nagle + delayed ACK add ~40 ms to each proxied answer.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { addr, behaviour, task }
    }

    /// Requests seen in `scenario`.
    pub fn seen(&self, scenario: &str) -> u32 {
        self.behaviour.counts.lock().unwrap().get(scenario).copied().unwrap_or(0)
    }

    /// Requests seen in all.
    pub fn total(&self) -> u32 {
        self.behaviour.total.load(Ordering::SeqCst)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> u64 {
    h.get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn handle(State(b): State<Behaviour>, headers: HeaderMap) -> Response {
    b.total.fetch_add(1, Ordering::SeqCst);
    let scenario = headers.get("x-scenario").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let n = {
        let mut counts = b.counts.lock().unwrap();
        let c = counts.entry(scenario).or_default();
        *c += 1;
        u64::from(*c)
    };
    if let Some(code) = b.always {
        return (StatusCode::from_u16(code).unwrap(), Json(json!({"detail": "broken replica"}))).into_response();
    }
    if n <= header_u64(&headers, "x-delay-first") {
        tokio::time::sleep(Duration::from_millis(header_u64(&headers, "x-delay-ms"))).await;
    }
    if n <= header_u64(&headers, "x-fail-first") {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"detail": "scripted failure"}))).into_response();
    }
    let echoed: BTreeMap<String, String> =
        headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("<binary>").to_owned())).collect();
    Json(json!({"served_by": b.name, "headers": echoed})).into_response()
}

// ---------------------------------------------------------------- mesh topology

/// Names and identities, all read from the manifests.
pub struct World {
    pub m: Manifests,
    pub dir: TempDir,
    pub ca: Ca,
    pub data_host: String,
    pub namespace: String,
    /// Principal the AuthorizationPolicy allows (without `spiffe://`).
    pub allowed_principal: String,
}

impl World {
    pub fn new(tag: &str) -> Self {
        Self::with(manifests(), tag)
    }

    pub fn with(m: Manifests, tag: &str) -> Self {
        let data_vs = m.virtual_services.iter().find(|v| v.metadata.name == "data").expect("VirtualService data");
        let data_host = data_vs.spec.hosts[0].clone();
        let namespace = host_namespace(&data_host).expect("FQDN host").to_owned();
        let allowed_principal =
            m.authorization_policies.iter().find(|a| a.metadata.name == "data").expect("AP data").spec.rules[0].from[0]
                .source
                .principals[0]
                .clone();
        Self {
            m,
            dir: TempDir::new(tag),
            ca: Ca::new("agent-mesh test CA").unwrap(),
            data_host,
            namespace,
            allowed_principal,
        }
    }

    pub fn recommendation_host(&self) -> String {
        self.m.virtual_services.iter().find(|v| v.metadata.name == "recommendation").expect("canary VS").spec.hosts[0]
            .clone()
    }

    /// Workload certificate files for a principal (`cluster.local/ns/<ns>/sa/<sa>`) from `ca`.
    pub fn identity_from(&self, ca: &Ca, file: &str, principal: &str) -> Tls {
        ca.write_identity(&self.dir.0, file, &format!("spiffe://{principal}")).unwrap()
    }

    pub fn identity(&self, file: &str, principal: &str) -> Tls {
        self.identity_from(&self.ca, file, principal)
    }

    pub fn sa_principal(&self, sa: &str) -> String {
        spiffe_id(&self.namespace, sa).trim_start_matches("spiffe://").to_owned()
    }

    /// A server sidecar for workload `app` (labels app + version) in front of `upstream`; returns it and its
    /// inbound port.
    pub async fn server(&self, name: &str, app: &str, version: &str, upstream: SocketAddr, tls: Tls) -> (Envoy, u16) {
        let labels = BTreeMap::from([("app".to_owned(), app.to_owned()), ("version".to_owned(), version.to_owned())]);
        let config = envoy::server_bootstrap(
            &self.m,
            &ServerSidecar {
                node_id: name.to_owned(),
                admin: mesh::Addr::loopback_any(),
                namespace: self.namespace.clone(),
                labels,
                service_port: 8000,
                listen: mesh::Addr::loopback_any(),
                app: upstream.into(),
                tls,
            },
        )
        .expect("server bootstrap");
        let envoy = Envoy::start(&config, &self.dir.0, name).await;
        let port = envoy.listener_port(&envoy::inbound_listener_name(8000)).await;
        (envoy, port)
    }

    /// A client sidecar with one outbound listener per (host, endpoints, server SA); returns it and the
    /// listener ports in the same order.
    pub async fn client(
        &self,
        name: &str,
        tls: Tls,
        outbound: Vec<(String, Vec<Endpoint>, String)>,
    ) -> (Envoy, Vec<u16>) {
        let hosts: Vec<String> = outbound.iter().map(|o| o.0.clone()).collect();
        let config = envoy::client_bootstrap(
            &self.m,
            &ClientSidecar {
                node_id: name.to_owned(),
                admin: mesh::Addr::loopback_any(),
                tls,
                outbound: outbound
                    .into_iter()
                    .map(|(host, endpoints, sa)| Outbound {
                        server_identities: vec![spiffe_id(&self.namespace, &sa)],
                        host,
                        listen: mesh::Addr::loopback_any(),
                        endpoints,
                    })
                    .collect(),
            },
        )
        .expect("client bootstrap");
        let envoy = Envoy::start(&config, &self.dir.0, name).await;
        let mut ports = Vec::new();
        for h in &hosts {
            ports.push(envoy.listener_port(&envoy::outbound_listener_name(h)).await);
        }
        (envoy, ports)
    }

    /// The usual pair: data's server sidecar in front of `upstream`, and a client sidecar with the allowed
    /// identity routing to it. Returns (client, client port, server, server port).
    pub async fn data_pair(&self, upstream: SocketAddr) -> (Envoy, u16, Envoy, u16) {
        let data_tls = self.identity("data", &self.sa_principal("data"));
        let (server, server_port) = self.server("data-sidecar", "data", "v1", upstream, data_tls).await;
        let client_tls = self.identity("client", &self.allowed_principal);
        let endpoint = Endpoint::version(SocketAddr::from(([127, 0, 0, 1], server_port)), "v1");
        let (client, ports) = self
            .client("client-sidecar", client_tls, vec![(self.data_host.clone(), vec![endpoint], "data".into())])
            .await;
        (client, ports[0], server, server_port)
    }

    /// The data route of the (possibly replaced) data VirtualService.
    pub fn data_route(&self) -> &mesh::model::HttpRoute {
        &self.m.virtual_service(&self.data_host).unwrap().spec.http[0]
    }

    /// Name of the cluster the data route sends to.
    pub fn data_cluster(&self) -> String {
        let d = &self.data_route().route[0].destination;
        envoy::outbound_cluster_name(d.port.number, d.subset.as_deref(), &self.data_host)
    }
}

/// `|observed - n·p| <= 4.5 σ` of a binomial(n, p): fails about once in 150 000 runs by chance.
pub fn assert_binomial(observed: u64, n: u64, p: f64, what: &str) {
    let mean = n as f64 * p;
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    let tolerance = (4.5 * sigma).max(1.0);
    assert!(
        (observed as f64 - mean).abs() <= tolerance,
        "{what}: observed {observed} of {n}, expected {mean:.1} ± {tolerance:.1} (p = {p})"
    );
}
