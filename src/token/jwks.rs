//! Per-issuer key cache: keys fetched only from the issuer's configured
//! source, through `crate::outbound` (timeouts, size cap, no redirects,
//! https or loopback http only).
//!
//! How the keys stay current without a request ever waiting on keys it
//! already has:
//! - **In the background.** Once the keys have been asked for (or warmed
//!   up), a task per issuer refreshes them when three quarters of
//!   `max_key_age` have passed, and retries a failed refresh with a backoff
//!   (1 s doubling to 60 s). A failed refresh keeps the keys already held.
//!   A request whose key is cached returns at once, whatever is being
//!   fetched meanwhile. A pinned JWKS file is not refreshed for age.
//! - **On an unknown `kid`.** The request waits for a fetch that starts
//!   after it arrived (single flight: every request that arrived before
//!   that fetch started shares it), and fetches start at most once per
//!   `min_refetch_interval`. So a key the issuer has just published is
//!   accepted after at most that interval, while a flood of random `kid`s
//!   costs one fetch per interval, however many there are. A request does
//!   not wait longer than [`MAX_WAIT_FOR_A_FETCH`] for its turn; past that
//!   it is refused as if the key were unknown.
//! - **Unknown `kid`s are remembered.** A `kid` that a successful fetch
//!   (started after the `kid` was asked for) did not have is refused at
//!   once for [`UNKNOWN_KID_MEMORY`], with no fetch and no wait. A later
//!   refresh that has the `kid` wins: the cache is looked up first.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::TokenError;
use super::issuer::{FetchSettings, IssuerSettings, KeySource};
use crate::outbound::{AllowedUrl, Body, ClientSettings, HttpClient, OutboundError, Request};

/// At most this many keys are taken from one JWKS document.
const MAX_KEYS: usize = 64;

/// A request with an unknown `kid` waits at most this long for the next
/// fetch it may trigger (with a `min_refetch_interval` longer than this,
/// it is refused until the interval has passed).
pub(super) const MAX_WAIT_FOR_A_FETCH: Duration = Duration::from_secs(2);

/// How long a `kid` that a fetch did not have is refused without a fetch.
pub(super) const UNKNOWN_KID_MEMORY: Duration = Duration::from_secs(60);

/// At most this many unknown `kid`s are remembered per issuer (when full,
/// the expired ones are dropped, then all of them: forgetting only costs
/// a fetch per `min_refetch_interval`).
const MAX_UNKNOWN_KIDS: usize = 4096;

/// Background retries of a failed refresh back off from the first to the
/// last of these.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// The background task fetches at most this often, whatever `max_key_age`.
const MIN_BACKGROUND_INTERVAL: Duration = Duration::from_secs(1);

/// One verification key.
pub(super) struct Key {
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

/// The last fetch attempt; held in the fetch lock, so fetches are single
/// flight.
#[derive(Default)]
struct Attempt {
    started: Option<Instant>,
    succeeded: bool,
}

/// The keys of one issuer.
pub(super) struct KeyCache {
    issuer: Arc<IssuerSettings>,
    client: HttpClient,
    fetch: FetchSettings,
    keys: RwLock<Arc<KeySet>>,
    /// Held while a fetch runs; requests with a cached key never take it.
    fetching: Mutex<Attempt>,
    /// `kid`s a successful fetch did not have, with when it was found out.
    unknown: std::sync::Mutex<HashMap<String, Instant>>,
    /// The background refresh task, once started.
    refresher: OnceLock<tokio::task::AbortHandle>,
}

impl Drop for KeyCache {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.take() {
            task.abort();
        }
    }
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

/// A std mutex's guard, poisoned or not (the data stays consistent: every
/// critical section is a lookup, an insert or a clean-up).
fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl KeyCache {
    /// Builds the cache and its HTTP client (with the issuer's CA file, if any).
    pub(super) fn new(
        issuer: Arc<IssuerSettings>,
        fetch: FetchSettings,
    ) -> Result<Self, FetchError> {
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
            fetching: Mutex::new(Attempt::default()),
            unknown: std::sync::Mutex::new(HashMap::new()),
            refresher: OnceLock::new(),
        })
    }

    /// Fetches the key set now (start-up warm-up and tests), then keeps it
    /// fresh in the background.
    pub(super) async fn refresh(self: &Arc<Self>) -> Result<usize, FetchError> {
        let result = {
            let mut attempt = self.fetching.lock().await;
            self.attempt(&mut attempt).await
        };
        self.keep_fresh();
        result
    }

    /// The key for a token's `kid` (or the only key, for a token without
    /// one). A cached key is returned at once; see the module docs for an
    /// unknown one.
    pub(super) async fn key_for(
        self: &Arc<Self>,
        kid: Option<&str>,
    ) -> Result<Arc<Key>, TokenError> {
        if let Some(k) = lookup(&self.snapshot(), kid) {
            self.keep_fresh();
            return Ok(k);
        }
        if let Some(kid) = kid
            && self.recently_unknown(kid)
        {
            return Err(self.no_key(&self.snapshot()));
        }
        let arrived = Instant::now();
        let covered = self.fetch_after(arrived).await;
        self.keep_fresh();
        let current = self.snapshot();
        if let Some(k) = lookup(&current, kid) {
            return Ok(k);
        }
        if covered && let Some(kid) = kid {
            self.remember_unknown(kid);
        }
        Err(self.no_key(&current))
    }

    fn no_key(&self, current: &KeySet) -> TokenError {
        if current.fetched_at.is_none() {
            TokenError::IssuerUnavailable {
                issuer: self.issuer.name.clone(),
            }
        } else {
            TokenError::UnknownKey {
                issuer: self.issuer.name.clone(),
            }
        }
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

    fn recently_unknown(&self, kid: &str) -> bool {
        lock(&self.unknown)
            .get(kid)
            .is_some_and(|t| t.elapsed() < UNKNOWN_KID_MEMORY)
    }

    fn remember_unknown(&self, kid: &str) {
        let mut unknown = lock(&self.unknown);
        if unknown.len() >= MAX_UNKNOWN_KIDS {
            unknown.retain(|_, t| t.elapsed() < UNKNOWN_KID_MEMORY);
            if unknown.len() >= MAX_UNKNOWN_KIDS {
                unknown.clear();
            }
        }
        unknown.insert(kid.to_owned(), Instant::now());
    }

    /// Waits for a fetch that started at or after `arrived`: one already
    /// done by another request, or one this request starts when
    /// `min_refetch_interval` allows (waiting at most
    /// [`MAX_WAIT_FOR_A_FETCH`] for that). Returns whether such a fetch
    /// succeeded.
    async fn fetch_after(&self, arrived: Instant) -> bool {
        let mut attempt = self.fetching.lock().await;
        if let Some(started) = attempt.started {
            if started >= arrived {
                return attempt.succeeded;
            }
            let wait = started
                .checked_add(self.fetch.min_refetch_interval)
                .map_or(Duration::MAX, |next| {
                    next.saturating_duration_since(Instant::now())
                });
            if wait > MAX_WAIT_FOR_A_FETCH {
                return false;
            }
            // Holding the lock: whoever arrives meanwhile is served by the
            // fetch that follows.
            tokio::time::sleep(wait).await;
        }
        self.attempt_logged(&mut attempt).await
    }

    /// One fetch, recorded in `a` (the fetch lock's content): started now,
    /// and failed until it succeeds, so a request cancelled in the middle
    /// leaves a failed attempt behind. A failure keeps the keys already held.
    async fn attempt(&self, a: &mut Attempt) -> Result<usize, FetchError> {
        a.started = Some(Instant::now());
        a.succeeded = false;
        let fetched = self.fetch_set().await;
        crate::metrics::jwks_fetch(&self.issuer.name, fetched.is_ok());
        let set = fetched?;
        let n = set.by_kid.len() + set.without_kid.len();
        self.store(set);
        a.succeeded = true;
        Ok(n)
    }

    /// [`attempt`](Self::attempt), with a failure logged.
    async fn attempt_logged(&self, a: &mut Attempt) -> bool {
        match self.attempt(a).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(
                    issuer = %self.issuer.name,
                    error = %e,
                    "fetching the issuer's keys failed; keeping the keys already held"
                );
                false
            }
        }
    }

    /// Starts the background refresh once (not for a pinned file, and only
    /// inside a tokio runtime).
    fn keep_fresh(self: &Arc<Self>) {
        if self.refresher.get().is_some() || matches!(self.issuer.keys, KeySource::JwksFile(_)) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.refresher.get_or_init(|| {
            runtime
                .spawn(refresh_in_background(Arc::downgrade(self)))
                .abort_handle()
        });
    }

    /// How long until the next background refresh: three quarters of
    /// `max_key_age` after the keys were fetched (at least
    /// [`MIN_BACKGROUND_INTERVAL`] from now), or the backoff after
    /// `failures` failed attempts in a row.
    fn next_refresh_in(&self, failures: u32) -> Duration {
        let delay = if failures > 0 {
            RETRY_FIRST
                .saturating_mul(1 << (failures - 1).min(10))
                .min(RETRY_MAX)
        } else {
            match self.snapshot().fetched_at {
                Some(at) => at
                    .checked_add(self.fetch.max_key_age / 4 * 3)
                    .map_or(Duration::MAX, |due| {
                        due.saturating_duration_since(Instant::now())
                    }),
                None => RETRY_FIRST,
            }
        };
        delay.max(MIN_BACKGROUND_INTERVAL)
    }

    /// One background refresh, in the fetch lock like any fetch.
    async fn refresh_now(&self) -> bool {
        let mut attempt = self.fetching.lock().await;
        self.attempt_logged(&mut attempt).await
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

/// The background refresh of one issuer's keys; ends when the cache is
/// dropped (it holds the cache only while a refresh runs).
async fn refresh_in_background(cache: Weak<KeyCache>) {
    let mut failures: u32 = 0;
    loop {
        let Some(delay) = cache.upgrade().map(|c| c.next_refresh_in(failures)) else {
            return;
        };
        tokio::time::sleep(delay).await;
        let Some(c) = cache.upgrade() else {
            return;
        };
        failures = if c.refresh_now().await {
            0
        } else {
            failures.saturating_add(1)
        };
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
