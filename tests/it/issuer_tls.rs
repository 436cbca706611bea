//! A self-managed issuer behind an internal CA: its keys are fetched over
//! TLS only when the issuer's `ca_file` names the CA that signed its
//! certificate; the system roots do not stand in for it.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{OpenBao, engines, rsa_key};
use jobkey::{DEFAULT_MAX_TOKEN_BYTES, FetchSettings, IssuerSettings, KeySource, Verifier};
use jobkey::{DevIssuer, Shape};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// A TLS listener for axum::serve.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

fn verifier(issuer: &str, ca_file: Option<std::path::PathBuf>) -> Verifier {
    let settings = IssuerSettings {
        name: "gitlab".into(),
        issuer: issuer.into(),
        provider: jobkey::Provider::Generic,
        keys: KeySource::Discovery,
        algorithms: vec![jsonwebtoken::Algorithm::RS256],
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(7200),
        ca_file,
    };
    let fetch = FetchSettings {
        timeout: Duration::from_secs(3),
        ..FetchSettings::default()
    };
    Verifier::new(
        vec![settings],
        vec!["jobkey".into()],
        fetch,
        DEFAULT_MAX_TOKEN_BYTES,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_keys_over_tls_need_the_configured_ca() {
    jobkey::install_rustls_ring_provider();
    let bao = OpenBao::start();
    let ca = engines::pki(&bao);
    let other_ca = engines::root_ca(&bao, "pki-other", "another CA");
    let (cert_pem, key_pem) = engines::server_certificate(&bao);

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain,
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", tcp.local_addr().unwrap());
    let issuer: Arc<DevIssuer> = DevIssuer::new(url.clone(), rsa_key("issuer-b", "gl-1"));
    let listener = TlsListener {
        tcp,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    };
    let app = jobkey::dev_issuer_router(issuer.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("internal-ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, &other_ca).unwrap();
    let token = issuer
        .signing_key()
        .mint(&Value::Object(Shape::Gitlab.claims(
            &url,
            "jobkey",
            crate::support::now(),
        )));

    let ok = verifier(&url, Some(ca_file)).verify(&token).await;
    assert_eq!(ok.map(|v| v.issuer).unwrap(), "gitlab");
    let fetched = issuer.jwks_fetches();
    assert_eq!(fetched, 1, "the trusted fetch reached the issuer");
    for (what, ca) in [("system roots", None), ("another CA", Some(wrong_ca))] {
        let e = verifier(&url, ca).verify(&token).await.unwrap_err();
        assert_eq!(e.code(), "issuer_unavailable", "{what}");
    }
    assert_eq!(
        issuer.jwks_fetches(),
        fetched,
        "untrusted TLS never got as far as an HTTP request"
    );
}
