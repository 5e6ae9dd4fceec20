//! The outbound HTTP client builder everything here uses: the recommendation agent's data client, the Dapr sidecar
//! client, the `healthcheck` subcommand.

/// A reqwest builder with rustls on the `ring` provider.
///
/// reqwest is built without its default provider (aws-lc-rs needs cmake and a C toolchain in a musl build), so the
/// provider is installed process-wide here before any client exists; installing twice is harmless.
pub fn builder() -> reqwest::ClientBuilder {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
