//! Per-issuer key cache: fetched only from the issuer's configured source,
//! refetched on an unknown `kid` at most once per interval, kept when a
//! refetch fails. Fetches go through `crate::outbound` (timeouts, size cap,
//! no redirects, https or loopback http only).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::TokenError;
use super::issuer::{FetchSettings, IssuerSettings, KeySource};
use crate::outbound::{AllowedUrl, Body, ClientSettings, HttpClient, OutboundError, Request};

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
    client: HttpClient,
    fetch: FetchSettings,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch was attempted; the lock makes fetches single-flight.
    last_attempt: Mutex<Option<Instant>>,
}

/// Why a fetch failed (logged, never sent to a job).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed, or the outbound policy refused it (see
    /// `crate::outbound`).
    #[error("{0}")]
    Outbound(#[from] OutboundError),
    /// The discovery document names an issuer other than the configured one.
    #[error("the discovery document names issuer {found:?}, expected {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    /// The discovery document's `jwks_uri` is not a URL jobkey fetches.
    #[error("the discovery document's jwks_uri: {0}")]
    JwksUriRefused(OutboundError),
    /// A discovery or JWKS document that cannot be used.
    #[error("{0}")]
    Document(String),
    /// A pinned JWKS file that cannot be read.
    #[error("reading {path}: {reason}")]
    File { path: String, reason: String },
}

impl KeyCache {
    /// Builds the cache and its HTTP client (with the issuer's CA file, if any).
    pub fn new(issuer: Arc<IssuerSettings>, fetch: FetchSettings) -> Result<Self, FetchError> {
        let client = HttpClient::new(ClientSettings {
            connect_timeout: fetch.timeout,
            timeout: fetch.timeout,
            max_body_bytes: fetch.max_bytes,
            ca_file: issuer.ca_file.clone(),
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
        let set = match &self.issuer.keys {
            KeySource::JwksFile(path) => parse_jwks(
                &crate::files::read(path, self.fetch.max_bytes as u64).map_err(|e| {
                    FetchError::File {
                        path: path.display().to_string(),
                        reason: e.reason(),
                    }
                })?,
            )?,
            KeySource::JwksUrl(url) => {
                parse_jwks(self.get(&AllowedUrl::new(url.clone())?).await?.expose())?
            }
            KeySource::Discovery => {
                let url = self.discover().await?;
                parse_jwks(self.get(&url).await?.expose())?
            }
        };
        tracing::info!(
            issuer = %self.issuer.name,
            keys = set.by_kid.len() + set.without_kid.len(),
            "fetched the issuer's keys"
        );
        Ok(set)
    }

    /// The `jwks_uri` of the issuer's discovery document, which must name
    /// the configured issuer and a URL the outbound policy allows.
    async fn discover(&self) -> Result<AllowedUrl, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let url = AllowedUrl::parse(&self.issuer.issuer)?
            .join_path("/.well-known/openid-configuration")?;
        let body = self.get(&url).await?;
        let d: Discovery = serde_json::from_slice(body.expose())
            .map_err(|e| FetchError::Document(format!("discovery document: {e}")))?;
        if d.issuer != self.issuer.issuer {
            return Err(FetchError::IssuerMismatch {
                found: d.issuer.chars().take(200).collect(),
                expected: self.issuer.issuer.clone(),
            });
        }
        AllowedUrl::parse(&d.jwks_uri).map_err(FetchError::JwksUriRefused)
    }

    /// GET through the outbound client: size cap, timeouts, no redirects.
    async fn get(&self, url: &AllowedUrl) -> Result<Body, FetchError> {
        Ok(self.client.send(Request::get(url)).await?.success()?)
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
