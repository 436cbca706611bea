//! Process-wide TLS set-up.
//!
//! jobkey builds reqwest and rustls with `rustls-no-provider`, so that ring is
//! the only crypto stack in the binary (see `Cargo.toml`). rustls then needs a
//! process-level default provider before the first TLS client is built, or
//! building one panics. [`install_rustls_ring_provider`] installs ring's.

/// Installs rustls' ring provider as the process default. Idempotent and
/// cheap: `outbound::HttpClient::new` and `Vault::connect` call it before
/// building their clients, and tests that build a TLS server do too. If
/// another provider was installed first, that one stays.
pub fn install_rustls_ring_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn installing_twice_is_harmless() {
        super::install_rustls_ring_provider();
        super::install_rustls_ring_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
