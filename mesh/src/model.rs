//! The Istio resources this project uses, deserialized strictly.
//!
//! Only the fields the repo's manifests use are declared, and every struct rejects unknown fields: a manifest
//! change that the translator cannot honour (a new `loadBalancer`, a header match, `notPrincipals`, ...) fails
//! loudly instead of being silently dropped from the local mesh.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::Error;

/// `metadata` of a resource: only what selection needs; labels and annotations are accepted and ignored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Resource name.
    pub name: String,
    /// Namespace; Istio's selection rules depend on it, so it is required here.
    pub namespace: String,
    /// Ignored.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Ignored.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// A Kubernetes object with an Istio spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resource<S> {
    /// `networking.istio.io/v1` or `security.istio.io/v1`.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// Name and namespace.
    pub metadata: Metadata,
    /// The kind's spec.
    pub spec: S,
}

/// A duration written the way Istio's YAML writes them (`2s`, `500ms`, `30s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IstioDuration(pub Duration);

impl<'de> Deserialize<'de> for IstioDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        humantime::parse_duration(raw.trim())
            .map(IstioDuration)
            .map_err(|e| serde::de::Error::custom(format!("bad duration {raw:?}: {e}")))
    }
}

// ---------------------------------------------------------------- VirtualService

/// `VirtualService.spec` (networking.istio.io/v1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Hosts the rules apply to.
    pub hosts: Vec<String>,
    /// HTTP routes, first match wins.
    pub http: Vec<HttpRoute>,
}

/// One `http` route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRoute {
    /// Route name (Envoy route name).
    #[serde(default)]
    pub name: Option<String>,
    /// Match conditions (ORed); absent = everything.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatch>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
    /// Overall timeout; absent = disabled (istiod sets 0, not Envoy's 15 s default).
    #[serde(default)]
    pub timeout: Option<IstioDuration>,
    /// Retry policy.
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(default)]
    pub fault: Option<HttpFault>,
}

/// `HTTPMatchRequest`: the URI and method conditions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpMatch {
    /// Path condition.
    #[serde(default)]
    pub uri: Option<StringMatch>,
    /// Method condition.
    #[serde(default)]
    pub method: Option<StringMatch>,
}

/// `StringMatch`: exact or prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub enum StringMatch {
    /// Exact string.
    #[serde(rename = "exact")]
    Exact(String),
    /// Prefix.
    #[serde(rename = "prefix")]
    Prefix(String),
}

/// A weighted destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to.
    pub destination: Destination,
    /// Relative weight; a single destination gets everything.
    #[serde(default)]
    pub weight: Option<u32>,
}

/// `Destination`: host, subset and port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Service host (FQDN in this project).
    pub host: String,
    /// DestinationRule subset.
    #[serde(default)]
    pub subset: Option<String>,
    /// Service port; required here (the translator knows no Service objects).
    pub port: PortSelector,
}

/// `PortSelector`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    pub number: u16,
}

/// `HTTPRetry`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries (not tries).
    pub attempts: u32,
    /// Bound on each try.
    #[serde(default)]
    pub per_try_timeout: Option<IstioDuration>,
    /// Comma-separated Envoy retry conditions and numeric status codes.
    #[serde(default)]
    pub retry_on: Option<String>,
}

/// `HTTPFaultInjection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFault {
    /// Delay fault.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Abort fault.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

/// `Percent`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percent {
    /// 0..=100, fractions allowed.
    pub value: f64,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultDelay {
    /// Share of requests delayed; absent = all (Istio).
    #[serde(default)]
    pub percentage: Option<Percent>,
    /// The delay.
    pub fixed_delay: IstioDuration,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultAbort {
    /// Share of requests aborted; absent = all (Istio).
    #[serde(default)]
    pub percentage: Option<Percent>,
    /// Status returned.
    pub http_status: u16,
}

// ---------------------------------------------------------------- DestinationRule

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// Service host.
    pub host: String,
    /// Policy for every subset unless the subset overrides it.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets.
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

/// A subset: labels select endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subset {
    /// Name routes refer to.
    pub name: String,
    /// Endpoint labels.
    pub labels: BTreeMap<String, String>,
}

/// `TrafficPolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Client TLS.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// Connection pool limits.
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    /// Passive health checking.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
}

/// `ClientTLSSettings`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// Only `ISTIO_MUTUAL` and `DISABLE` are supported.
    pub mode: String,
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionPool {
    /// TCP settings.
    #[serde(default)]
    pub tcp: Option<TcpPool>,
    /// HTTP settings.
    #[serde(default)]
    pub http: Option<HttpPool>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpPool {
    /// Envoy `max_connections`.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Envoy cluster `connect_timeout`.
    #[serde(default)]
    pub connect_timeout: Option<IstioDuration>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpPool {
    /// Envoy `max_pending_requests`.
    #[serde(default)]
    pub http1_max_pending_requests: Option<u32>,
    /// Envoy `max_requests`.
    #[serde(default)]
    pub http2_max_requests: Option<u32>,
    /// Envoy `max_retries`.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection.
    #[serde(default, rename = "consecutive5xxErrors")]
    pub consecutive_5xx_errors: Option<u32>,
    /// Analysis sweep interval.
    #[serde(default)]
    pub interval: Option<IstioDuration>,
    /// Minimum ejection duration.
    #[serde(default)]
    pub base_ejection_time: Option<IstioDuration>,
    /// Bound on the ejected share of hosts.
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    /// Panic threshold.
    #[serde(default)]
    pub min_health_percent: Option<u32>,
}

// ---------------------------------------------------------------- security

/// `WorkloadSelector`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// `PeerAuthentication.spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Absent = the whole namespace.
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// Mode.
    #[serde(default)]
    pub mtls: Option<PeerMtls>,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerMtls {
    /// `STRICT`, `PERMISSIVE`, `DISABLE` or `UNSET`.
    pub mode: String,
}

/// `AuthorizationPolicy.spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Absent = the whole namespace.
    #[serde(default)]
    pub selector: Option<WorkloadSelector>,
    /// `ALLOW` (default) or `DENY`.
    #[serde(default)]
    pub action: Option<String>,
    /// Rules; ORed.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// `Rule`: every `from` and `to` part must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Sources (ORed).
    #[serde(default)]
    pub from: Vec<RuleFrom>,
    /// Operations (ORed).
    #[serde(default)]
    pub to: Vec<RuleTo>,
}

/// `Rule.From`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    /// The source.
    pub source: Source,
}

/// `Source`: only principals.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Peer identities without the `spiffe://` scheme.
    pub principals: Vec<String>,
}

/// `Rule.To`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    /// The operation.
    pub operation: Operation,
}

/// `Operation`: methods and paths.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// HTTP methods (ORed); empty = any.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Paths (ORed); empty = any.
    #[serde(default)]
    pub paths: Vec<String>,
}

// ---------------------------------------------------------------- loading

/// Aliases for the resource types.
pub type VirtualService = Resource<VirtualServiceSpec>;
/// DestinationRule.
pub type DestinationRule = Resource<DestinationRuleSpec>;
/// PeerAuthentication.
pub type PeerAuthentication = Resource<PeerAuthenticationSpec>;
/// AuthorizationPolicy.
pub type AuthorizationPolicy = Resource<AuthorizationPolicySpec>;

/// The mesh policy, as the translator sees it.
#[derive(Debug, Clone, Default)]
pub struct Manifests {
    /// VirtualServices.
    pub virtual_services: Vec<VirtualService>,
    /// DestinationRules.
    pub destination_rules: Vec<DestinationRule>,
    /// PeerAuthentications.
    pub peer_authentications: Vec<PeerAuthentication>,
    /// AuthorizationPolicies.
    pub authorization_policies: Vec<AuthorizationPolicy>,
}

/// The files of `istio/` the local mesh is made of (relative to that directory): the default policy plus the
/// canary's routing for recommendation. The fault examples replace the data VirtualService on demand
/// ([`Manifests::replace_virtual_service`]).
pub const DEFAULT_FILES: [&str; 6] = [
    "virtualservice-data.yaml",
    "destinationrule-data.yaml",
    "peerauthentication.yaml",
    "authorizationpolicy-data.yaml",
    "canary/virtualservice-recommendation.yaml",
    "canary/destinationrule-recommendation.yaml",
];

const NETWORKING: &str = "networking.istio.io/v1";
const SECURITY: &str = "security.istio.io/v1";

impl Manifests {
    /// Reads [`DEFAULT_FILES`] from `istio_dir`.
    pub fn load(istio_dir: &Path) -> Result<Self, Error> {
        let mut out = Self::default();
        for file in DEFAULT_FILES {
            out.add_file(&istio_dir.join(file))?;
        }
        Ok(out)
    }

    /// Adds every resource of one (multi-document) YAML file.
    pub fn add_file(&mut self, path: &Path) -> Result<(), Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(path.display().to_string(), e))?;
        self.add_yaml(&text).map_err(|e| Error::Manifest(path.display().to_string(), e))
    }

    /// Adds every resource of a YAML text.
    pub fn add_yaml(&mut self, text: &str) -> Result<(), String> {
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc).map_err(|e| e.to_string())?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
            let api = value.get("apiVersion").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
            let expected = match kind.as_str() {
                "VirtualService" | "DestinationRule" => NETWORKING,
                "PeerAuthentication" | "AuthorizationPolicy" => SECURITY,
                other => return Err(format!("kind {other:?} is not part of the local mesh")),
            };
            if api != expected {
                return Err(format!("{kind}: apiVersion {api:?} is not {expected:?}"));
            }
            let err = |e: serde_yaml::Error| format!("{kind}: {e}");
            match kind.as_str() {
                "VirtualService" => self.virtual_services.push(serde_yaml::from_value(value).map_err(err)?),
                "DestinationRule" => self.destination_rules.push(serde_yaml::from_value(value).map_err(err)?),
                "PeerAuthentication" => self.peer_authentications.push(serde_yaml::from_value(value).map_err(err)?),
                _ => self.authorization_policies.push(serde_yaml::from_value(value).map_err(err)?),
            }
        }
        Ok(())
    }

    /// Replaces the VirtualService with the same namespace/name by the one in `path` (as `kubectl apply` of a
    /// fault example would).
    pub fn replace_virtual_service(&mut self, path: &Path) -> Result<(), Error> {
        let mut other = Self::default();
        other.add_file(path)?;
        for vs in other.virtual_services {
            self.virtual_services.retain(|old| {
                (&old.metadata.namespace, &old.metadata.name) != (&vs.metadata.namespace, &vs.metadata.name)
            });
            self.virtual_services.push(vs);
        }
        Ok(())
    }

    /// The VirtualService whose `hosts` include `host`.
    pub fn virtual_service(&self, host: &str) -> Result<&VirtualService, Error> {
        self.virtual_services
            .iter()
            .find(|vs| vs.spec.hosts.iter().any(|h| h == host))
            .ok_or_else(|| Error::Missing(format!("VirtualService for host {host}")))
    }

    /// The DestinationRule for `host`.
    pub fn destination_rule(&self, host: &str) -> Option<&DestinationRule> {
        self.destination_rules.iter().find(|dr| dr.spec.host == host)
    }

    /// The PeerAuthentication mode for a workload: a selector match beats the namespace-wide policy (Istio's
    /// precedence; the mesh-wide root-namespace policy is not modelled). Istio's default is PERMISSIVE.
    pub fn peer_mode(&self, namespace: &str, labels: &BTreeMap<String, String>) -> String {
        let in_ns = self.peer_authentications.iter().filter(|pa| pa.metadata.namespace == namespace);
        let selected = in_ns.clone().find(|pa| pa.spec.selector.as_ref().is_some_and(|s| s.selects(labels)));
        let wide = in_ns.clone().find(|pa| pa.spec.selector.is_none());
        selected
            .or(wide)
            .and_then(|pa| pa.spec.mtls.as_ref())
            .map(|m| m.mode.clone())
            .unwrap_or_else(|| "PERMISSIVE".to_owned())
    }

    /// The AuthorizationPolicies that apply to a workload.
    pub fn authorization_policies_for(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Vec<&AuthorizationPolicy> {
        self.authorization_policies
            .iter()
            .filter(|ap| ap.metadata.namespace == namespace)
            .filter(|ap| ap.spec.selector.as_ref().is_none_or(|s| s.selects(labels)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: data, namespace: agents}
spec:
  hosts: [data.agents.svc.cluster.local]
  http:
    - route:
        - destination: {host: data.agents.svc.cluster.local, port: {number: 8000}}
";

    #[test]
    fn the_repo_manifests_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../istio");
        let m = Manifests::load(&dir).expect("istio/ parses");
        assert_eq!(m.virtual_services.len(), 2);
        assert_eq!(m.destination_rules.len(), 2);
        for example in ["fault-abort.yaml", "fault-delay.yaml"] {
            let mut m = m.clone();
            m.replace_virtual_service(&dir.join("examples").join(example)).expect("example parses");
            assert_eq!(m.virtual_services.len(), 2, "{example} replaces the data VirtualService");
        }
    }

    #[test]
    fn unsupported_fields_fail_loudly() {
        let mut m = Manifests::default();
        m.add_yaml(VS).expect("minimal VirtualService");
        for (from, to) in [
            ("    - route:", "    - mirror: {host: x}\n      route:"),
            ("  http:", "  gateways: [agents]\n  http:"),
            ("port: {number: 8000}", "port: {number: 8000}, weight: 100, headers: {}"),
        ] {
            let err = Manifests::default().add_yaml(&VS.replace(from, to)).expect_err(to);
            assert!(err.contains("unknown field"), "{err}");
        }
        let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: a, namespace: n}\n\
                  spec:\n  rules:\n    - from:\n        - source: {notPrincipals: [x], principals: [y]}\n";
        assert!(Manifests::default().add_yaml(ap).unwrap_err().contains("notPrincipals"));
        let wrong_api = VS.replace("networking.istio.io/v1", "networking.istio.io/v1alpha3");
        assert!(Manifests::default().add_yaml(&wrong_api).is_err());
        assert!(Manifests::default().add_yaml("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n").is_err());
    }

    #[test]
    fn peer_authentication_precedence_and_default() {
        let mut m = Manifests::default();
        let labels: BTreeMap<String, String> = [("app".to_owned(), "data".to_owned())].into();
        assert_eq!(m.peer_mode("agents", &labels), "PERMISSIVE");
        m.add_yaml(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: agents}\n\
             spec: {mtls: {mode: STRICT}}\n---\n\
             apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: w, namespace: agents}\n\
             spec: {selector: {matchLabels: {app: data}}, mtls: {mode: DISABLE}}\n",
        )
        .unwrap();
        assert_eq!(m.peer_mode("agents", &labels), "DISABLE");
        assert_eq!(m.peer_mode("agents", &BTreeMap::new()), "STRICT");
        assert_eq!(m.peer_mode("other", &labels), "PERMISSIVE");
    }
}
