//! The repo's Istio resources as the single source of truth for a local mesh.
//!
//! [`model`] reads the VirtualServices, DestinationRules, PeerAuthentication and AuthorizationPolicy under `istio/`
//! (strictly: unknown fields are errors); [`envoy`] turns them into Envoy v3 bootstraps the way istiod would
//! configure the sidecars: a client sidecar for a workload's outbound calls and a server sidecar for its inbound
//! traffic; [`certs`] issues the SPIFFE workload certificates istiod's CA would.

pub mod certs;
pub mod envoy;
pub mod model;

pub use envoy::{Addr, ClientSidecar, Endpoint, Outbound, ServerSidecar, Tls};
pub use model::Manifests;

/// What can go wrong while reading manifests or translating them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A manifest could not be parsed (often: a field the translator does not support).
    #[error("{0}: {1}")]
    Manifest(String, String),
    /// A resource the translation needs is absent.
    #[error("missing {0}")]
    Missing(String),
    /// The manifests ask for something this translator does not reproduce.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Certificate generation failed.
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Istio's trust domain (the default `cluster.local`; the project does not change it).
pub const TRUST_DOMAIN: &str = "cluster.local";

/// The SPIFFE URI istiod's CA puts in a workload certificate: `spiffe://<trust domain>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

/// Namespace of a `<svc>.<ns>.svc.cluster.local` host.
pub fn host_namespace(host: &str) -> Option<&str> {
    host.split('.').nth(1)
}

/// Short service name of a host.
pub fn host_service(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}
