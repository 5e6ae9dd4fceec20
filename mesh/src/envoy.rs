//! Envoy v3 bootstraps reproducing what istiod sends a sidecar for these resources.
//!
//! Each mapping below names the Istio behaviour it reproduces (istiod: `pilot/pkg/networking/core/...`), because
//! Envoy's own defaults differ in several places (route timeout 15 s vs disabled, panic threshold 50 % vs 0 %,
//! success-rate ejection on vs off, ...). Deliberate differences from a real sidecar, all due to there being no
//! iptables capture, no xDS and no Kubernetes here:
//! - every destination service gets its own outbound listener (the app is pointed at it) instead of one capture
//!   listener on the service port that picks the virtual host by `Host` header; its virtual host matches `*`;
//! - configuration is static and certificates are files, not SDS from istio-agent;
//! - endpoints (and their `version` labels) are given by the caller instead of coming from EDS;
//! - no telemetry filters (istio.stats, tracing provider), no peer metadata exchange, no ALPN `istio` tokens.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    Error, Manifests, TRUST_DOMAIN,
    model::{
        AuthorizationPolicy, DestinationRule, HttpFault, HttpMatch, HttpRetry, HttpRoute, OutlierDetection, Percent,
        StringMatch, TrafficPolicy,
    },
};

/// A host (IP or DNS name) and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// IP literal or DNS name.
    pub host: String,
    /// Port (0 = let the OS pick, for listeners).
    pub port: u16,
}

impl Addr {
    /// Loopback, OS-chosen port: what tests use for every listener and the admin.
    pub fn loopback_any() -> Self {
        Self { host: "127.0.0.1".to_owned(), port: 0 }
    }

    fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    fn socket_address(&self) -> Value {
        json!({"socket_address": {"address": self.host, "port_value": self.port}})
    }
}

impl From<SocketAddr> for Addr {
    fn from(a: SocketAddr) -> Self {
        Self { host: a.ip().to_string(), port: a.port() }
    }
}

impl FromStr for Addr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?}: expected host:port"))?;
        let port = port.parse().map_err(|e| format!("{s:?}: bad port: {e}"))?;
        Ok(Self { host: host.trim_start_matches('[').trim_end_matches(']').to_owned(), port })
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Certificate files of a workload identity (what istio-agent would serve over SDS).
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM certificate chain.
    pub cert_chain: PathBuf,
    /// PEM private key.
    pub private_key: PathBuf,
    /// PEM root certificate(s) trusted for peers.
    pub trusted_ca: PathBuf,
}

/// One endpoint of a service, with the pod labels subsets select on.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where the endpoint's (server sidecar's) inbound listener is.
    pub addr: Addr,
    /// Pod labels, e.g. `version: v1`.
    pub labels: BTreeMap<String, String>,
}

impl Endpoint {
    /// An endpoint labelled `version: <version>`, the only label the project's subsets use.
    pub fn version(addr: impl Into<Addr>, version: &str) -> Self {
        Self { addr: addr.into(), labels: BTreeMap::from([("version".to_owned(), version.to_owned())]) }
    }
}

/// One destination service the client sidecar routes to.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Service FQDN, as in the VirtualService `hosts`.
    pub host: String,
    /// Listener the app calls (`DATA_URL` points here).
    pub listen: Addr,
    /// The service's endpoints.
    pub endpoints: Vec<Endpoint>,
    /// SPIFFE URIs the server certificate may carry: istiod puts the service accounts of the service's pods here.
    pub server_identities: Vec<String>,
}

/// The client (outbound) side of a workload's sidecar.
#[derive(Debug, Clone)]
pub struct ClientSidecar {
    /// Envoy node id (Istio: `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`).
    pub node_id: String,
    /// Admin listener.
    pub admin: Addr,
    /// The workload's own certificate, presented to servers under ISTIO_MUTUAL.
    pub tls: Tls,
    /// Destinations.
    pub outbound: Vec<Outbound>,
}

/// The server (inbound) side of a workload's sidecar.
#[derive(Debug, Clone)]
pub struct ServerSidecar {
    /// Envoy node id.
    pub node_id: String,
    /// Admin listener.
    pub admin: Addr,
    /// Workload namespace (policy selection).
    pub namespace: String,
    /// Workload pod labels (policy selection).
    pub labels: BTreeMap<String, String>,
    /// The port the service exposes (the inbound cluster is `inbound|<port>||`).
    pub service_port: u16,
    /// Where peers connect.
    pub listen: Addr,
    /// The application.
    pub app: Addr,
    /// The workload's certificate, and the root peers must chain to.
    pub tls: Tls,
}

/// Istio's default connect timeout (MeshConfig `connectTimeout`, 10 s), used when a DestinationRule sets none.
const MESH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the HTTP connection manager's stat prefix for an outbound listener: `http.<this>.*` in admin stats.
pub fn outbound_stat_prefix(host: &str) -> String {
    format!("outbound_{}", crate::host_service(host))
}

/// Stat prefix of the inbound HTTP connection manager (`http.<this>.rbac.denied`, ...).
pub fn inbound_stat_prefix(port: u16) -> String {
    format!("inbound_{port}")
}

/// Name of the inbound listener; also its stat prefix, so TLS failures count as `listener.<this>.ssl.*`.
pub fn inbound_listener_name(port: u16) -> String {
    format!("inbound_{port}")
}

/// Outbound listener name for a destination host.
pub fn outbound_listener_name(host: &str) -> String {
    format!("outbound|{host}")
}

/// istiod's cluster name: `outbound|<port>|<subset>|<host>` (`BuildSubsetKey`).
pub fn outbound_cluster_name(port: u16, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}

/// Envoy's JSON form of a duration.
fn dur(d: Duration) -> String {
    format!("{}.{:09}s", d.as_secs(), d.subsec_nanos())
}

/// Istio `Percent` → Envoy `FractionalPercent` over MILLION: istiod's `translatePercentToFractionalPercent`
/// multiplies by 10 000 so fractions like 0.1 % survive; an absent percentage means 100 %.
fn fractional(p: Option<Percent>) -> Value {
    let value = p.map_or(100.0, |p| p.value);
    json!({"numerator": (value * 10_000.0).round() as u64, "denominator": "MILLION"})
}

// ---------------------------------------------------------------- client sidecar

/// The bootstrap of a client sidecar: one outbound listener per destination, the VirtualService's routes, and
/// one cluster per DestinationRule subset plus the subset-less one, as istiod builds them.
pub fn client_bootstrap(m: &Manifests, sidecar: &ClientSidecar) -> Result<Value, Error> {
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    for out in &sidecar.outbound {
        let vs = m.virtual_service(&out.host)?;
        let dr = m.destination_rule(&out.host);
        let mut routes = Vec::new();
        let mut wanted: Vec<(u16, Option<String>)> = Vec::new();
        for http in &vs.spec.http {
            for dest in &http.route {
                if dest.destination.host != out.host {
                    return Err(Error::Unsupported(format!(
                        "VirtualService {} routes {} to another host ({})",
                        vs.metadata.name, out.host, dest.destination.host
                    )));
                }
                let key = (dest.destination.port.number, dest.destination.subset.clone());
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
            routes.extend(translate_route(http, &out.host)?);
        }
        // istiod builds the subset-less cluster for every service port, and one per subset.
        let ports: Vec<u16> = {
            let mut p: Vec<u16> = wanted.iter().map(|(p, _)| *p).collect();
            p.sort_unstable();
            p.dedup();
            p
        };
        for port in &ports {
            if !wanted.contains(&(*port, None)) {
                wanted.push((*port, None));
            }
            for subset in dr.map(|d| d.spec.subsets.as_slice()).unwrap_or_default() {
                let key = (*port, Some(subset.name.clone()));
                if !wanted.contains(&key) {
                    wanted.push(key);
                }
            }
        }
        for (port, subset) in &wanted {
            clusters.push(outbound_cluster(dr, out, *port, subset.as_deref(), &sidecar.tls)?);
        }
        let stat_prefix = outbound_stat_prefix(&out.host);
        listeners.push(json!({
            "name": outbound_listener_name(&out.host),
            "address": out.listen.socket_address(),
            "filter_chains": [{
                "filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": stat_prefix,
                        // Sidecars do not trust or append the caller's address (istiod: use_remote_address false
                        // on sidecar listeners), so x-request-id and trace headers are passed on untouched.
                        "use_remote_address": false,
                        "route_config": {
                            "name": format!("{}|{}", ports.first().copied().unwrap_or_default(), out.host),
                            "virtual_hosts": [{
                                "name": format!("{}:{}", out.host, ports.first().copied().unwrap_or_default()),
                                "domains": ["*"],
                                "routes": routes,
                            }],
                            "validate_clusters": false,
                        },
                        // istiod always installs the fault filter on outbound HTTP chains, before the router, and
                        // configures it per route (typed_per_filter_config); an empty config injects nothing.
                        "http_filters": [
                            {"name": "envoy.filters.http.fault", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
                            {"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                        ],
                    },
                }],
            }],
        }));
    }
    Ok(bootstrap(&sidecar.node_id, &sidecar.admin, listeners, clusters))
}

/// One VirtualService `http` entry → Envoy routes (one per `match`, as istiod's `translateRoute` does).
fn translate_route(http: &HttpRoute, host: &str) -> Result<Vec<Value>, Error> {
    let mut action = serde_json::Map::new();
    if let [only] = http.route.as_slice() {
        action.insert(
            "cluster".into(),
            outbound_cluster_name(only.destination.port.number, only.destination.subset.as_deref(), host).into(),
        );
    } else {
        // weights → weighted_clusters, one subset cluster each (istiod: a missing weight counts as 0 when
        // several destinations are listed).
        let clusters: Vec<Value> = http
            .route
            .iter()
            .map(|d| {
                json!({
                    "name": outbound_cluster_name(d.destination.port.number, d.destination.subset.as_deref(), host),
                    "weight": d.weight.unwrap_or(0),
                })
            })
            .collect();
        action.insert("weighted_clusters".into(), json!({"clusters": clusters}));
    }
    // No VirtualService timeout → timeout 0 = disabled: istiod overrides Envoy's 15 s route default.
    action.insert("timeout".into(), dur(http.timeout.map_or(Duration::ZERO, |t| t.0)).into());
    if let Some(policy) = retry_policy(http.retries.as_ref()) {
        action.insert("retry_policy".into(), policy);
    }
    let mut per_filter = serde_json::Map::new();
    if let Some(fault) = &http.fault {
        per_filter.insert("envoy.filters.http.fault".into(), fault_config(fault));
    }
    let matches: Vec<Value> = if http.matches.is_empty() {
        vec![json!({"prefix": "/"})]
    } else {
        http.matches.iter().map(route_match).collect()
    };
    Ok(matches
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let mut route = json!({
                "name": http.name.clone().map_or_else(|| format!("route-{i}"), |n| if i == 0 { n } else { format!("{n}-{i}") }),
                "match": m,
                "route": Value::Object(action.clone()),
            });
            if !per_filter.is_empty() {
                route["typed_per_filter_config"] = Value::Object(per_filter.clone());
            }
            route
        })
        .collect())
}

fn route_match(m: &HttpMatch) -> Value {
    let mut out = match &m.uri {
        Some(StringMatch::Exact(p)) => json!({"path": p}),
        Some(StringMatch::Prefix(p)) => json!({"prefix": p}),
        None => json!({"prefix": "/"}),
    };
    if let Some(method) = &m.method {
        // istiod matches the method as the `:method` pseudo-header.
        let matcher = match method {
            StringMatch::Exact(v) => json!({"exact": v}),
            StringMatch::Prefix(v) => json!({"prefix": v}),
        };
        out["headers"] = json!([{"name": ":method", "string_match": matcher}]);
    }
    out
}

/// istiod's `retry.ConvertPolicy` (pilot/pkg/networking/core/route/retry):
/// - no `retries` at all → the default policy: 2 retries on
///   `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes` with code 503;
/// - `attempts: 0` → no retry policy;
/// - `attempts` → `num_retries` (retries, not tries);
/// - `retryOn` replaces the condition list; numeric entries become `retriable_status_codes` and add the
///   `retriable-status-codes` condition;
/// - `perTryTimeout` → `per_try_timeout`;
/// - always `retry_host_predicate: previous_hosts` with `host_selection_retry_max_attempts: 5`, so a retry
///   prefers another endpoint.
pub fn retry_policy(retries: Option<&HttpRetry>) -> Option<Value> {
    let mut policy = json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retriable_status_codes": [503],
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"},
        }],
        "host_selection_retry_max_attempts": 5,
    });
    let Some(r) = retries else { return Some(policy) };
    if r.attempts == 0 {
        return None;
    }
    policy["num_retries"] = r.attempts.into();
    if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.trim().is_empty()) {
        let mut conditions: Vec<String> = Vec::new();
        let mut codes: Vec<u32> = Vec::new();
        for part in retry_on.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.parse::<u32>() {
                Ok(code) => codes.push(code),
                Err(_) => conditions.push(part.to_owned()),
            }
        }
        if !codes.is_empty() {
            conditions.push("retriable-status-codes".to_owned());
            policy["retriable_status_codes"] = json!(codes);
        } else {
            policy.as_object_mut().map(|o| o.remove("retriable_status_codes"));
        }
        policy["retry_on"] = conditions.join(",").into();
    }
    if let Some(t) = r.per_try_timeout {
        policy["per_try_timeout"] = dur(t.0).into();
    }
    Some(policy)
}

/// istiod's `translateFault`: delay → `fixed_delay` + percentage, abort → `http_status` + percentage, both over
/// MILLION; the filter's limits (max_active_faults) stay unset = unlimited.
fn fault_config(fault: &HttpFault) -> Value {
    let mut out = json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"});
    if let Some(d) = &fault.delay {
        out["delay"] = json!({"fixed_delay": dur(d.fixed_delay.0), "percentage": fractional(d.percentage)});
    }
    if let Some(a) = &fault.abort {
        out["abort"] = json!({"http_status": a.http_status, "percentage": fractional(a.percentage)});
    }
    out
}

fn traffic_policy(dr: Option<&DestinationRule>) -> TrafficPolicy {
    dr.and_then(|d| d.spec.traffic_policy.clone()).unwrap_or_default()
}

fn outbound_cluster(
    dr: Option<&DestinationRule>,
    out: &Outbound,
    port: u16,
    subset: Option<&str>,
    tls: &Tls,
) -> Result<Value, Error> {
    let name = outbound_cluster_name(port, subset, &out.host);
    let labels = match subset {
        None => BTreeMap::new(),
        Some(s) => dr
            .and_then(|d| d.spec.subsets.iter().find(|x| x.name == s))
            .map(|x| x.labels.clone())
            .ok_or_else(|| Error::Missing(format!("subset {s} of {} in a DestinationRule", out.host)))?,
    };
    // Like EDS for a subset cluster: the service's endpoints whose labels carry every subset label.
    let endpoints: Vec<&Endpoint> =
        out.endpoints.iter().filter(|e| labels.iter().all(|(k, v)| e.labels.get(k) == Some(v))).collect();
    let policy = traffic_policy(dr);
    let pool = policy.connection_pool.clone().unwrap_or_default();
    let tcp = pool.tcp.unwrap_or_default();
    let http = pool.http.unwrap_or_default();
    // istiod's default thresholds are all "unlimited" (max uint32), not Envoy's 1024; the DestinationRule's
    // connectionPool then maps maxConnections → max_connections, http1MaxPendingRequests → max_pending_requests,
    // http2MaxRequests → max_requests, maxRetries → max_retries.
    const UNLIMITED: u32 = u32::MAX;
    let thresholds = json!({
        "max_connections": tcp.max_connections.unwrap_or(UNLIMITED),
        "max_pending_requests": http.http1_max_pending_requests.unwrap_or(UNLIMITED),
        "max_requests": http.http2_max_requests.unwrap_or(UNLIMITED),
        "max_retries": http.max_retries.unwrap_or(UNLIMITED),
        "track_remaining": true,
    });
    let static_ips = endpoints.iter().all(|e| e.addr.is_ip());
    let mut cluster = json!({
        "name": name,
        "type": if static_ips { "STATIC" } else { "STRICT_DNS" },
        // tcp.connectTimeout → connect_timeout, else the mesh default (10 s).
        "connect_timeout": dur(tcp.connect_timeout.map_or(MESH_CONNECT_TIMEOUT, |t| t.0)),
        // istiod's default load balancer is LEAST_REQUEST (since Istio 1.14), not Envoy's ROUND_ROBIN.
        "lb_policy": "LEAST_REQUEST",
        "circuit_breakers": {"thresholds": [thresholds]},
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": endpoints.iter().map(|e| json!({
                "endpoint": {"address": e.addr.socket_address()},
            })).collect::<Vec<_>>()}],
        },
    });
    if let Some(od) = &policy.outlier_detection {
        let (outlier, panic) = outlier_detection(od);
        cluster["outlier_detection"] = outlier;
        cluster["common_lb_config"] = json!({"healthy_panic_threshold": {"value": panic}});
    }
    match policy.tls.as_ref().map(|t| t.mode.as_str()) {
        Some("ISTIO_MUTUAL") => {
            cluster["transport_socket"] = upstream_tls(tls, &out.server_identities, port, subset, &out.host);
        }
        None | Some("DISABLE") => {}
        Some(other) => return Err(Error::Unsupported(format!("DestinationRule tls mode {other}"))),
    }
    Ok(cluster)
}

/// istiod's `applyOutlierDetection` (cluster builder):
/// - success-rate ejection off (`enforcing_success_rate: 0`), unlike Envoy's default 100;
/// - `consecutive5xxErrors` → `consecutive_5xx` with `enforcing_consecutive_5xx` 100 (0 when the count is 0);
/// - gateway-error ejection stays off (Envoy's `enforcing_consecutive_gateway_failure` default 0);
/// - `interval`, `baseEjectionTime`, `maxEjectionPercent` map one to one;
/// - `minHealthPercent` → the cluster's `healthy_panic_threshold`, 0 when unset (Envoy defaults to 50 %, which
///   would send traffic to ejected hosts once half are out).
///
/// Returns the outlier detection and the panic threshold.
pub fn outlier_detection(od: &OutlierDetection) -> (Value, u32) {
    let mut out = json!({"enforcing_success_rate": 0});
    if let Some(n) = od.consecutive_5xx_errors {
        out["consecutive_5xx"] = n.into();
        out["enforcing_consecutive_5xx"] = (if n > 0 { 100 } else { 0 }).into();
    }
    if let Some(i) = od.interval {
        out["interval"] = dur(i.0).into();
    }
    if let Some(b) = od.base_ejection_time {
        out["base_ejection_time"] = dur(b.0).into();
    }
    if let Some(p) = od.max_ejection_percent.filter(|p| *p > 0) {
        out["max_ejection_percent"] = p.into();
    }
    (out, od.min_health_percent.unwrap_or(0))
}

/// ISTIO_MUTUAL as istiod builds it (`buildIstioMutualTLS`): the workload certificate, the mesh root as trust
/// anchor, the server's SPIFFE identities as the only accepted SANs, TLS 1.2–1.3, and the SNI
/// `outbound_.<port>_.<subset>_.<host>`.
fn upstream_tls(tls: &Tls, identities: &[String], port: u16, subset: Option<&str>, host: &str) -> Value {
    let sans: Vec<Value> = identities.iter().map(|id| json!({"san_type": "URI", "matcher": {"exact": id}})).collect();
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": format!("outbound_.{port}_.{}_.{host}", subset.unwrap_or("")),
            "common_tls_context": {
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                "tls_certificates": [certificate(tls)],
                "validation_context": {
                    "trusted_ca": {"filename": tls.trusted_ca},
                    "match_typed_subject_alt_names": sans,
                },
            },
        },
    })
}

fn certificate(tls: &Tls) -> Value {
    json!({"certificate_chain": {"filename": tls.cert_chain}, "private_key": {"filename": tls.private_key}})
}

// ---------------------------------------------------------------- server sidecar

/// The bootstrap of a server sidecar: the inbound listener with the PeerAuthentication's TLS requirement, the
/// AuthorizationPolicies as RBAC, and the `inbound|<port>||` cluster to the app.
pub fn server_bootstrap(m: &Manifests, s: &ServerSidecar) -> Result<Value, Error> {
    let mode = m.peer_mode(&s.namespace, &s.labels);
    let transport_socket = match mode.as_str() {
        // STRICT: TLS only, client certificate required and chained to the mesh root; istiod also restricts the
        // peer's SAN to the trust domain (spiffe://cluster.local/...), the identity check itself is RBAC's.
        "STRICT" => Some(json!({
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                "require_client_certificate": true,
                "common_tls_context": {
                    "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
                    "tls_certificates": [certificate(&s.tls)],
                    "validation_context": {
                        "trusted_ca": {"filename": s.tls.trusted_ca},
                        "match_typed_subject_alt_names": [
                            {"san_type": "URI", "matcher": {"prefix": format!("spiffe://{TRUST_DOMAIN}/")}},
                        ],
                    },
                },
            },
        })),
        "DISABLE" => None,
        other => {
            return Err(Error::Unsupported(format!(
                "PeerAuthentication mode {other} (the local mesh reproduces STRICT and DISABLE)"
            )));
        }
    };
    let mut filters = Vec::new();
    for action in ["DENY", "ALLOW"] {
        // istiod installs DENY policies in an RBAC filter ahead of the ALLOW one.
        if let Some(rbac) = rbac_filter(&m.authorization_policies_for(&s.namespace, &s.labels), action)? {
            filters.push(rbac);
        }
    }
    filters.push(json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}));
    let cluster_name = format!("inbound|{}||", s.service_port);
    let mut chain = json!({
        "filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": inbound_stat_prefix(s.service_port),
                "use_remote_address": false,
                // istiod's inbound HCM: append the peer certificate's details to x-forwarded-client-cert (the app
                // learns the caller's SPIFFE identity from URI=...).
                "forward_client_cert_details": "APPEND_FORWARD",
                "set_current_client_cert_details": {"subject": true, "dns": true, "uri": true},
                "route_config": {
                    "name": cluster_name,
                    "virtual_hosts": [{
                        "name": "inbound|http|".to_owned() + &s.service_port.to_string(),
                        "domains": ["*"],
                        // istiod's inbound route has no timeout (0 = disabled): the caller's sidecar bounds it.
                        "routes": [{"name": "default", "match": {"prefix": "/"},
                                    "route": {"cluster": cluster_name, "timeout": "0s"}}],
                    }],
                },
                "http_filters": filters,
            },
        }],
    });
    if let Some(ts) = transport_socket {
        chain["transport_socket"] = ts;
    }
    let listeners = vec![json!({
        "name": inbound_listener_name(s.service_port),
        "stat_prefix": inbound_listener_name(s.service_port),
        "address": s.listen.socket_address(),
        "filter_chains": [chain],
    })];
    let clusters = vec![json!({
        "name": cluster_name,
        "type": if s.app.is_ip() { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": dur(MESH_CONNECT_TIMEOUT),
        "circuit_breakers": {"thresholds": [{
            "max_connections": u32::MAX, "max_pending_requests": u32::MAX,
            "max_requests": u32::MAX, "max_retries": u32::MAX, "track_remaining": true}]},
        "load_assignment": {"cluster_name": cluster_name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": s.app.socket_address()}}]}]},
    })];
    Ok(bootstrap(&s.node_id, &s.admin, listeners, clusters))
}

/// istiod's RBAC translation (`pilot/pkg/security/authz/builder`): one policy per rule, named
/// `ns[<ns>]-policy[<name>]-rule[<i>]`; each `to.operation` is one permission (ORed) that ANDs its fields, each
/// field ORs its values (`methods` → `:method` header, `paths` → `url_path`); each `from.source` is one principal
/// (ORed), `principals` → `authenticated.principal_name` with `spiffe://` prepended. ALLOW policies with no
/// matching rule deny (Envoy RBAC ALLOW semantics), which is Istio's "ALLOW denies everything else".
fn rbac_filter(policies: &[&AuthorizationPolicy], action: &str) -> Result<Option<Value>, Error> {
    let mut selected = Vec::new();
    for ap in policies {
        let a = ap.spec.action.as_deref().unwrap_or("ALLOW");
        match a {
            "ALLOW" | "DENY" => {}
            other => return Err(Error::Unsupported(format!("AuthorizationPolicy action {other}"))),
        }
        if a == action {
            selected.push(*ap);
        }
    }
    if selected.is_empty() {
        return Ok(None);
    }
    let mut out = serde_json::Map::new();
    for ap in selected {
        for (i, rule) in ap.spec.rules.iter().enumerate() {
            let permissions: Vec<Value> = if rule.to.is_empty() {
                vec![json!({"any": true})]
            } else {
                rule.to
                    .iter()
                    .map(|to| {
                        let mut and = Vec::new();
                        if !to.operation.methods.is_empty() {
                            let ors: Vec<Value> = to
                                .operation
                                .methods
                                .iter()
                                .map(|m| json!({"header": {"name": ":method", "string_match": {"exact": m}}}))
                                .collect();
                            and.push(json!({"or_rules": {"rules": ors}}));
                        }
                        if !to.operation.paths.is_empty() {
                            let ors: Vec<Value> = to
                                .operation
                                .paths
                                .iter()
                                .map(|p| json!({"url_path": {"path": path_matcher(p)}}))
                                .collect();
                            and.push(json!({"or_rules": {"rules": ors}}));
                        }
                        if and.is_empty() { json!({"any": true}) } else { json!({"and_rules": {"rules": and}}) }
                    })
                    .collect()
            };
            let principals: Vec<Value> = if rule.from.is_empty() {
                vec![json!({"any": true})]
            } else {
                rule.from
                    .iter()
                    .map(|from| {
                        let ors: Vec<Value> = from
                            .source
                            .principals
                            .iter()
                            .map(|p| {
                                if p == "*" {
                                    // "*" = any authenticated peer.
                                    json!({"authenticated": {"principal_name": {"safe_regex": {"regex": ".+"}}}})
                                } else {
                                    json!({"authenticated": {"principal_name": {"exact": format!("spiffe://{p}")}}})
                                }
                            })
                            .collect();
                        json!({"and_ids": {"ids": [{"or_ids": {"ids": ors}}]}})
                    })
                    .collect()
            };
            out.insert(
                format!("ns[{}]-policy[{}]-rule[{i}]", ap.metadata.namespace, ap.metadata.name),
                json!({"permissions": permissions, "principals": principals}),
            );
        }
    }
    Ok(Some(json!({
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": action, "policies": out},
        },
    })))
}

/// Istio path syntax: exact, `prefix*`, `*suffix`, or `*` (any).
fn path_matcher(p: &str) -> Value {
    if p == "*" {
        json!({"safe_regex": {"regex": ".*"}})
    } else if let Some(prefix) = p.strip_suffix('*') {
        json!({"prefix": prefix})
    } else if let Some(suffix) = p.strip_prefix('*') {
        json!({"suffix": suffix})
    } else {
        json!({"exact": p})
    }
}

fn bootstrap(node_id: &str, admin: &Addr, listeners: Vec<Value>, clusters: Vec<Value>) -> Value {
    json!({
        "node": {"id": node_id, "cluster": node_id},
        "admin": {"address": admin.socket_address()},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IstioDuration;

    fn retry(attempts: u32, retry_on: Option<&str>) -> HttpRetry {
        HttpRetry {
            attempts,
            per_try_timeout: Some(IstioDuration(Duration::from_millis(2500))),
            retry_on: retry_on.map(str::to_owned),
        }
    }

    #[test]
    fn retries_map_like_istiod() {
        let default = retry_policy(None).expect("no retries block = istiod's default policy");
        assert_eq!(default["num_retries"], 2);
        assert_eq!(default["retriable_status_codes"], json!([503]));
        assert!(retry_policy(Some(&retry(0, None))).is_none(), "attempts 0 disables retries");
        let p = retry_policy(Some(&retry(3, Some("5xx, 429 ,connect-failure,503")))).unwrap();
        assert_eq!(p["num_retries"], 3);
        assert_eq!(p["retry_on"], "5xx,connect-failure,retriable-status-codes");
        assert_eq!(p["retriable_status_codes"], json!([429, 503]));
        assert_eq!(p["per_try_timeout"], "2.500000000s");
        assert_eq!(p["retry_host_predicate"][0]["name"], "envoy.retry_host_predicates.previous_hosts");
        let p = retry_policy(Some(&retry(1, Some("reset")))).unwrap();
        assert_eq!(p["retry_on"], "reset");
        assert!(p.get("retriable_status_codes").is_none());
    }

    #[test]
    fn outlier_detection_maps_like_istiod() {
        let od = OutlierDetection {
            consecutive_5xx_errors: Some(7),
            interval: Some(IstioDuration(Duration::from_secs(30))),
            base_ejection_time: None,
            max_ejection_percent: Some(50),
            min_health_percent: None,
        };
        let (out, panic) = outlier_detection(&od);
        assert_eq!(out["consecutive_5xx"], 7);
        assert_eq!(out["enforcing_consecutive_5xx"], 100);
        assert_eq!(out["enforcing_success_rate"], 0);
        assert_eq!(out["interval"], "30.000000000s");
        assert_eq!(out["max_ejection_percent"], 50);
        assert_eq!(panic, 0, "Istio's panic threshold default is 0, not Envoy's 50");
        let (off, _) = outlier_detection(&OutlierDetection { consecutive_5xx_errors: Some(0), ..od });
        assert_eq!(off["enforcing_consecutive_5xx"], 0);
    }

    #[test]
    fn fault_percentages_are_over_a_million() {
        assert_eq!(fractional(Some(Percent { value: 0.1 })), json!({"numerator": 1000, "denominator": "MILLION"}));
        assert_eq!(fractional(None), json!({"numerator": 1_000_000, "denominator": "MILLION"}));
    }
}
