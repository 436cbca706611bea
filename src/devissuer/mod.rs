//! A local stand-in for a CI provider's OIDC issuer, for tests and the demo.
//!
//! It serves real OIDC discovery and a real JWKS over HTTP and signs real
//! tokens with real keys (ring), shaped like GitHub's or GitLab's. Its
//! `/mint` endpoint signs whatever it is asked to: it is test equipment, and
//! `jobkey dev-issuer` refuses to listen anywhere but loopback.

mod keys;
mod shapes;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub use keys::{KeyError, SigningKey};
pub use shapes::Shape;

/// The issuer's state: its URL, its published keys (the first one signs),
/// and counters tests use to prove fetches are rate-limited.
pub struct DevIssuer {
    url: String,
    keys: RwLock<Vec<Arc<SigningKey>>>,
    jwks_fetches: AtomicUsize,
    jwks_failing: std::sync::atomic::AtomicBool,
    /// How long the JWKS endpoint waits before answering, in milliseconds.
    jwks_delay_ms: std::sync::atomic::AtomicU64,
}

impl DevIssuer {
    pub fn new(url: String, key: SigningKey) -> Arc<Self> {
        Arc::new(DevIssuer {
            url,
            keys: RwLock::new(vec![Arc::new(key)]),
            jwks_fetches: AtomicUsize::new(0),
            jwks_failing: std::sync::atomic::AtomicBool::new(false),
            jwks_delay_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The issuer URL (`iss` of its tokens).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn read_keys(&self) -> Vec<Arc<SigningKey>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The key that signs minted tokens.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.read_keys()
            .into_iter()
            .next()
            .expect("a DevIssuer always has at least one key")
    }

    /// Replaces the published keys (key rotation); the first one signs.
    pub fn publish(&self, keys: Vec<SigningKey>) {
        assert!(!keys.is_empty(), "publish at least one key");
        let keys = keys.into_iter().map(Arc::new).collect();
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self.read_keys().iter().map(|k| k.public_jwk()).collect();
        json!({ "keys": keys })
    }

    /// Makes the JWKS endpoint answer 503 (an issuer outage) or recover.
    pub fn set_jwks_failing(&self, failing: bool) {
        self.jwks_failing.store(failing, Ordering::SeqCst);
    }

    /// Makes the JWKS endpoint wait this long before answering (a slow
    /// issuer).
    pub fn set_jwks_delay(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.jwks_delay_ms.store(ms, Ordering::SeqCst);
    }

    /// How many times the JWKS was asked for.
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a `shape` job for audience `aud`, issued now.
    pub fn claims(&self, shape: Shape, aud: &str) -> Map<String, Value> {
        shape.claims(&self.url, aud, now())
    }

    /// A token of `shape` with `overrides` applied (a `null` override
    /// removes the claim).
    pub fn mint(&self, shape: Shape, aud: &str, overrides: &Map<String, Value>) -> String {
        let mut claims = self.claims(shape, aud);
        apply(&mut claims, overrides);
        self.signing_key().mint(&Value::Object(claims))
    }
}

/// Applies overrides: a `null` value removes the claim.
pub fn apply(claims: &mut Map<String, Value>, overrides: &Map<String, Value>) {
    for (k, v) in overrides {
        if v.is_null() {
            claims.remove(k);
        } else {
            claims.insert(k.clone(), v.clone());
        }
    }
}

/// Seconds since the epoch.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The HTTP routes: discovery, JWKS, and `POST /mint`.
pub fn router(issuer: Arc<DevIssuer>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/.well-known/jwks", get(jwks))
        .route("/mint", post(mint))
        .with_state(issuer)
}

/// Binds `addr` (port 0 for a free one), serves the issuer in the
/// background, and returns it with its URL `http://<bound address>`.
pub async fn spawn(addr: SocketAddr, key: SigningKey) -> std::io::Result<Arc<DevIssuer>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let issuer = DevIssuer::new(url, key);
    let app = router(issuer.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "dev issuer stopped");
        }
    });
    Ok(issuer)
}

async fn discovery(State(i): State<Arc<DevIssuer>>) -> Json<Value> {
    Json(json!({
        "issuer": i.url,
        "jwks_uri": format!("{}/.well-known/jwks", i.url),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [i.signing_key().alg()],
    }))
}

async fn jwks(State(i): State<Arc<DevIssuer>>) -> Result<Json<Value>, axum::http::StatusCode> {
    i.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let delay = i.jwks_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if i.jwks_failing.load(Ordering::SeqCst) {
        return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(i.jwks()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    shape: Shape,
    audience: String,
    #[serde(default)]
    claims: Map<String, Value>,
}

async fn mint(State(i): State<Arc<DevIssuer>>, Json(req): Json<MintRequest>) -> Json<Value> {
    Json(json!({ "token": i.mint(req.shape, &req.audience, &req.claims) }))
}
