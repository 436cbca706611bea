//! Per-issuer key cache: fetched only from the issuer's configured source,
//! refetched on an unknown `kid` at most once per interval, kept when a
//! refetch fails. Fetches have a timeout, a size cap and follow no redirects.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;
use url::Url;

use super::TokenError;
use super::issuer::{FetchSettings, IssuerSettings, KeySource, url_is_allowed};

/// At most this many keys are taken from one JWKS document.
const MAX_KEYS: usize = 64;

/// One verification key.
pub struct Key {
    pub decoding: DecodingKey,
    /// The `alg` the JWK declares, if any; a token must then use exactly it.
    pub alg: Option<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    without_kid: Vec<Arc<Key>>,
    fetched_at: Option<Instant>,
}

/// The keys of one issuer.
pub struct KeyCache {
    issuer: Arc<IssuerSettings>,
    client: reqwest::Client,
    fetch: FetchSettings,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch was attempted; the lock makes fetches single-flight.
    last_attempt: Mutex<Option<Instant>>,
}

/// Why a fetch failed (logged, never sent to a job).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{0}")]
    Document(String),
    #[error("reading {path}: {reason}")]
    File { path: String, reason: String },
}

impl KeyCache {
    /// Builds the cache and its HTTP client (with the issuer's CA file, if any).
    pub fn new(issuer: Arc<IssuerSettings>, fetch: FetchSettings) -> Result<Self, FetchError> {
        crate::tls::install_rustls_ring_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(fetch.timeout)
            .connect_timeout(fetch.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jobkey/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &issuer.ca_file {
            let pem = std::fs::read(ca).map_err(|e| FetchError::File {
                path: ca.display().to_string(),
                reason: e.to_string(),
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| FetchError::File {
                    path: ca.display().to_string(),
                    reason: format!("not a PEM certificate bundle: {e}"),
                })?;
            if certs.is_empty() {
                return Err(FetchError::File {
                    path: ca.display().to_string(),
                    reason: "no certificate in the file".into(),
                });
            }
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| FetchError::Http {
            url: issuer.issuer.clone(),
            reason: format!("building the HTTP client: {e}"),
        })?;
        Ok(KeyCache {
            issuer,
            client,
            fetch,
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_attempt: Mutex::new(None),
        })
    }

    /// Fetches the key set now (start-up warm-up and tests).
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        let set = self.fetch_set().await?;
        let n = set.by_kid.len() + set.without_kid.len();
        self.store(set);
        Ok(n)
    }

    /// The key for a token's `kid` (or the only key, for a token without one).
    pub async fn key_for(&self, kid: Option<&str>) -> Result<Arc<Key>, TokenError> {
        let current = self.snapshot();
        let stale = current
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.fetch.max_key_age);
        if let Some(k) = lookup(&current, kid) {
            if stale && !matches!(self.issuer.keys, KeySource::JwksFile(_)) {
                self.try_refetch().await;
            }
            return Ok(k);
        }
        self.try_refetch().await;
        let current = self.snapshot();
        if let Some(k) = lookup(&current, kid) {
            return Ok(k);
        }
        if current.fetched_at.is_none() {
            return Err(TokenError::IssuerUnavailable {
                issuer: self.issuer.name.clone(),
            });
        }
        Err(TokenError::UnknownKey {
            issuer: self.issuer.name.clone(),
        })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn store(&self, set: KeySet) {
        let set = Arc::new(set);
        match self.keys.write() {
            Ok(mut g) => *g = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// Refetches unless a fetch was attempted within the minimum interval.
    async fn try_refetch(&self) {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.fetch.min_refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch_set().await {
            Ok(set) => self.store(set),
            Err(e) => tracing::warn!(
                issuer = %self.issuer.name,
                error = %e,
                "fetching the issuer's keys failed; keeping the keys already held"
            ),
        }
    }

    async fn fetch_set(&self) -> Result<KeySet, FetchError> {
        let doc = match &self.issuer.keys {
            KeySource::JwksFile(path) => std::fs::read(path).map_err(|e| FetchError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?,
            KeySource::JwksUrl(url) => self.get(url).await?,
            KeySource::Discovery => {
                let url = self.discover().await?;
                self.get(&url).await?
            }
        };
        let set = parse_jwks(&doc)?;
        tracing::info!(
            issuer = %self.issuer.name,
            keys = set.by_kid.len() + set.without_kid.len(),
            "fetched the issuer's keys"
        );
        Ok(set)
    }

    async fn discover(&self) -> Result<Url, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let base = self.issuer.issuer.trim_end_matches('/');
        let url = Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .map_err(|e| FetchError::Document(format!("discovery URL: {e}")))?;
        let body = self.get(&url).await?;
        let d: Discovery = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Document(format!("discovery document: {e}")))?;
        if d.issuer != self.issuer.issuer {
            return Err(FetchError::Document(format!(
                "discovery document names issuer {:?}, expected {:?}",
                d.issuer, self.issuer.issuer
            )));
        }
        let jwks =
            Url::parse(&d.jwks_uri).map_err(|e| FetchError::Document(format!("jwks_uri: {e}")))?;
        if !url_is_allowed(&jwks) {
            return Err(FetchError::Document(format!(
                "jwks_uri {jwks} is neither https nor loopback http"
            )));
        }
        Ok(jwks)
    }

    /// GET with the size cap; no redirects (the client refuses them).
    async fn get(&self, url: &Url) -> Result<Vec<u8>, FetchError> {
        let err = |reason: String| FetchError::Http {
            url: url.to_string(),
            reason,
        };
        let mut resp = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(err(format!("status {}", resp.status())));
        }
        let max = self.fetch.max_bytes;
        if resp.content_length().is_some_and(|n| n > max as u64) {
            return Err(err(format!("document larger than {max} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| err(e.to_string()))? {
            if body.len() + chunk.len() > max {
                return Err(err(format!("document larger than {max} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn lookup(set: &KeySet, kid: Option<&str>) -> Option<Arc<Key>> {
    match kid {
        Some(kid) => set.by_kid.get(kid).cloned(),
        None if set.by_kid.len() + set.without_kid.len() == 1 => set
            .by_kid
            .values()
            .chain(set.without_kid.iter())
            .next()
            .cloned(),
        None => None,
    }
}

/// Parses a JWKS document. Keys that are not signature keys, use symmetric
/// material, or do not parse are skipped (with a log line), so one odd key
/// does not take the issuer down; a document with no usable key is an error.
fn parse_jwks(doc: &[u8]) -> Result<KeySet, FetchError> {
    #[derive(Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
    }
    let doc: Doc = serde_json::from_slice(doc)
        .map_err(|e| FetchError::Document(format!("JWKS document: {e}")))?;
    let mut set = KeySet {
        fetched_at: Some(Instant::now()),
        ..KeySet::default()
    };
    for raw in doc.keys.into_iter().take(MAX_KEYS) {
        match parse_key(raw) {
            Ok((kid, key)) => match kid {
                Some(kid) => {
                    set.by_kid.entry(kid).or_insert_with(|| Arc::new(key));
                }
                None => set.without_kid.push(Arc::new(key)),
            },
            Err(reason) => tracing::warn!(reason, "skipping a key of the JWKS document"),
        }
    }
    if set.by_kid.is_empty() && set.without_kid.is_empty() {
        return Err(FetchError::Document(
            "the JWKS document has no usable signature key".into(),
        ));
    }
    Ok(set)
}

fn parse_key(raw: serde_json::Value) -> Result<(Option<String>, Key), &'static str> {
    if raw.get("kty").and_then(|v| v.as_str()) == Some("oct") {
        return Err("symmetric (oct) keys are never used");
    }
    if let Some(u) = raw.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("key is not for signatures");
    }
    let jwk: Jwk = serde_json::from_value(raw).map_err(|_| "key does not parse as a JWK")?;
    let alg = match &jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(
            ka.to_string()
                .parse::<Algorithm>()
                .map_err(|_| "key declares an algorithm that is not a JWS signature algorithm")?,
        ),
    };
    if matches!(
        alg,
        Some(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
    ) {
        return Err("HMAC keys are never used");
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| "key material is invalid")?;
    Ok((jwk.common.key_id.clone(), Key { decoding, alg }))
}
