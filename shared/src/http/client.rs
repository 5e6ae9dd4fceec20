//! The outbound reqwest client builder: the Dapr sidecar client, the `healthcheck` subcommand and the tests use it.
//! (The recommendation agent's data call uses hyper-util's client directly, with the same TLS: see its `data_client`.)

/// A reqwest builder with rustls on the `ring` provider.
///
/// reqwest is built without its default provider (aws-lc-rs needs cmake and a C toolchain in a musl build), so the
/// provider is installed process-wide here before any client exists; installing twice is harmless.
pub fn builder() -> reqwest::ClientBuilder {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
