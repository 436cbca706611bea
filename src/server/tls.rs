//! TLS on the listener (`[tls]`): rustls on ring, a certificate that can
//! be replaced while serving, and optional client-certificate
//! authentication.
//!
//! The certificate and key are read at start-up and again on SIGHUP and
//! when either file changes (debounced like the policy reload). A new pair
//! is checked completely (both files parse, the key is one ring can sign
//! with, and it matches the certificate) before it replaces the old one,
//! in one atomic pointer store ([`CertStore`], rustls'
//! `ResolvesServerCert`): a handshake gets the old pair or the new one.
//! Connections already open keep their session. A pair that fails the
//! check is refused with a log line, and the old one keeps serving.
//!
//! With `client_ca_file`, a client must present a certificate issued by
//! one of that file's CAs, or the handshake fails. The CA file is read at
//! start-up only.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

/// Largest certificate, key or CA file read.
const MAX_PEM_BYTES: u64 = crate::files::MIB;

/// Quiet time after the last file event before reloading.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// `[tls]`: the listener's certificate and key files, and the CAs of the
/// client certificates it requires, if it requires them. Paths only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (PEM), the server's own certificate first.
    pub cert_file: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// When set: clients must present a certificate issued by one of
    /// these CAs (PEM).
    pub client_ca_file: Option<PathBuf>,
}

/// Why a certificate, key or CA file cannot be used. Names the file,
/// never its content.
#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{file}: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: no PEM certificate in it")]
    NoCertificate { file: String },
    #[error("{file}: no usable PEM private key in it ({reason})")]
    NoKey { file: String, reason: String },
    #[error("{key_file}: the key does not match the certificate in {cert_file} ({reason})")]
    Mismatch {
        cert_file: String,
        key_file: String,
        reason: String,
    },
    #[error("{file}: client CAs: {reason}")]
    ClientCa { file: String, reason: String },
    #[error("TLS set-up: {0}")]
    Setup(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    crate::files::read(path, MAX_PEM_BYTES).map_err(|e| TlsError::Read {
        file: path.display().to_string(),
        reason: e.reason(),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read {
            file: path.display().to_string(),
            reason: format!("not PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            file: path.display().to_string(),
        });
    }
    Ok(certs)
}

/// Reads and checks a certificate chain and its key.
fn load_pair(s: &TlsSettings) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(&s.cert_file)?;
    let key_pem = zeroize::Zeroizing::new(read(&s.key_file)?);
    let no_key = |reason: String| TlsError::NoKey {
        file: s.key_file.display().to_string(),
        reason,
    };
    // The key's parse error names the PEM section, never its bytes.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| no_key(e.to_string()))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| no_key(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| TlsError::Mismatch {
        cert_file: s.cert_file.display().to_string(),
        key_file: s.key_file.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(pair)
}

/// The serving certificate and key, replaced whole by [`CertStore::reload`].
pub(crate) struct CertStore {
    settings: TlsSettings,
    current: ArcSwap<CertifiedKey>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert_file", &self.settings.cert_file)
            .field("key_file", &self.settings.key_file)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl CertStore {
    /// Reads the pair; fails when it is not usable.
    pub(crate) fn load(settings: &TlsSettings) -> Result<CertStore, TlsError> {
        Ok(CertStore {
            settings: settings.clone(),
            current: ArcSwap::from_pointee(load_pair(settings)?),
        })
    }

    /// Reads the pair again. Only a usable pair replaces the serving one;
    /// on an error, the serving pair is unchanged.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let pair = load_pair(&self.settings)?;
        self.current.store(Arc::new(pair));
        Ok(())
    }
}

/// The listener's TLS: what accepts connections, and the store a reload
/// replaces the certificate in.
#[derive(Clone)]
pub(crate) struct Tls {
    pub acceptor: TlsAcceptor,
    pub store: Arc<CertStore>,
}

impl Tls {
    /// Reads the files and builds the server configuration (TLS 1.2 and
    /// 1.3, HTTP/1.1 by ALPN).
    pub(crate) fn new(settings: &TlsSettings) -> Result<Tls, TlsError> {
        crate::tls::install_rustls_ring_provider();
        let store = Arc::new(CertStore::load(settings)?);
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        let builder = match &settings.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(file) => {
                let ca_err = |reason: String| TlsError::ClientCa {
                    file: file.display().to_string(),
                    reason,
                };
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(file)? {
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| ca_err(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_cert_resolver(store.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            store,
        })
    }
}

/// Reloads `store` now; `trigger` is logged.
pub(crate) fn reload(store: &CertStore, trigger: &str) -> Result<(), TlsError> {
    match store.reload() {
        Ok(()) => {
            tracing::info!(
                trigger,
                cert_file = %store.settings.cert_file.display(),
                "reloaded the TLS certificate"
            );
            Ok(())
        }
        Err(error) => {
            tracing::error!(trigger, %error, "TLS certificate reload refused; the previous certificate keeps serving");
            Err(error)
        }
    }
}

/// Watches the certificate and key files and SIGHUP until dropped.
pub(crate) struct CertReloader {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CertReloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching the directories of the certificate and key files (a
/// renewal tool typically replaces a file by renaming a new one over it,
/// which a watch on the file itself would miss). A watcher that cannot
/// start is logged; SIGHUP still works.
pub(crate) fn spawn_reloader(store: Arc<CertStore>) -> CertReloader {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let files = [
        store.settings.cert_file.clone(),
        store.settings.key_file.clone(),
    ];
    let names: Vec<_> = files
        .iter()
        .filter_map(|f| f.file_name())
        .map(|n| n.to_owned())
        .collect();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && !event.kind.is_access()
            && event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| names.iter().any(|m| m == n)))
        {
            let _ = tx.send(());
        }
    })
    .and_then(|mut w| {
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|f| match f.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect();
        dirs.dedup();
        for dir in dirs {
            w.watch(&dir, RecursiveMode::NonRecursive)?;
        }
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(%error, "cannot watch the TLS certificate files; reload with SIGHUP");
            None
        }
    };
    let task = tokio::spawn(async move {
        let mut hup = super::reload::hangup_signal();
        loop {
            let hangup = tokio::select! {
                t = rx.recv() => match t {
                    Some(()) => false,
                    None => return,
                },
                () = super::reload::next_hangup(&mut hup) => true,
            };
            // Debounce: a renewal writes the certificate and the key.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => {}
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let trigger = if hangup { "SIGHUP" } else { "file change" };
            let _ = reload(&store, trigger);
        }
    });
    CertReloader {
        _watcher: watcher,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_file_is_named_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let settings = TlsSettings {
            cert_file: empty.clone(),
            key_file: dir.path().join("missing.pem"),
            client_ca_file: None,
        };
        let err = CertStore::load(&settings).unwrap_err();
        assert!(
            matches!(&err, TlsError::NoCertificate { file } if file.ends_with("empty.pem")),
            "{err}"
        );
    }
}
