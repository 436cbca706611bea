//! One crypto stack: rustls (for Vault and issuer fetches) runs on ring.

/// Installs ring as rustls' process-wide provider. Idempotent.
pub fn install_rustls_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
