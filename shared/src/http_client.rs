//! The outbound HTTP client builder both agents use (the recommendation agent for data, both for `healthcheck`).

/// A reqwest builder with rustls on the `ring` provider.
///
/// reqwest is built without its default provider (aws-lc-rs needs cmake and a C toolchain in a musl build), so the
/// provider is installed process-wide here before any client exists; installing twice is harmless.
pub fn builder() -> reqwest::ClientBuilder {
    let _already_installed = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
