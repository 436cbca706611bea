//! Token verification: is this ID token from an issuer jobkey trusts, signed
//! by that issuer's key, meant for jobkey, and valid now?
//!
//! The order of checks is part of the security design:
//! 1. size cap, before any parsing;
//! 2. structure and header: `alg` never `none` or HMAC, no `jku`/`x5u`/`jwk`/
//!    `x5c` (keys come only from configuration), no `crit`;
//! 3. `iss` looked up among the configured issuers *before* any network
//!    request, so a token cannot make jobkey fetch from a URL it names;
//! 4. `alg` on that issuer's allow-list; key by `kid` from that issuer's cache;
//! 5. signature (jsonwebtoken with the ring provider);
//! 6. only then the claims: `aud`, `exp`, `nbf`, `iat`, lifetime.

mod claims;
mod error;
mod issuer;
mod jwks;
mod ring_provider;
mod unverified;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

pub use error::TokenError;
pub use issuer::{FetchSettings, IssuerSettings, KeySource};
pub use jwks::FetchError;
use jwks::KeyCache;
pub(crate) use unverified::unverified_claims;

/// Tokens longer than this are refused before parsing.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A token that passed every check: the issuer's configured name, its
/// provider and the verified claims. Claims are not secret; the token itself
/// is never kept.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub issuer: String,
    /// The issuer's provider, from its settings.
    pub provider: crate::provider::Provider,
    pub claims: Map<String, Value>,
}

struct Entry {
    settings: Arc<IssuerSettings>,
    keys: Arc<KeyCache>,
}

/// Verifies tokens against the configured issuers.
pub struct Verifier {
    by_iss: HashMap<String, Entry>,
    audiences: Vec<String>,
    max_token_bytes: usize,
}

impl Verifier {
    /// Builds the verifier; fetches nothing yet (see [`Verifier::warm_up`]).
    pub fn new(
        issuers: Vec<IssuerSettings>,
        audiences: Vec<String>,
        fetch: FetchSettings,
        max_token_bytes: usize,
    ) -> Result<Self, FetchError> {
        ring_provider::install();
        let mut by_iss = HashMap::new();
        for s in issuers {
            let settings = Arc::new(s);
            let keys = Arc::new(KeyCache::new(settings.clone(), fetch.clone())?);
            by_iss.insert(settings.issuer.clone(), Entry { settings, keys });
        }
        Ok(Verifier {
            by_iss,
            audiences,
            max_token_bytes,
        })
    }

    /// Fetches every issuer's keys once, and starts each issuer's background
    /// refresh; failures are returned per issuer name (the server logs them
    /// and keeps starting: the keys are fetched again on first use, and in
    /// the background with a backoff).
    pub async fn warm_up(&self) -> Vec<(String, FetchError)> {
        let mut failures = Vec::new();
        for e in self.by_iss.values() {
            if let Err(err) = e.keys.refresh().await {
                failures.push((e.settings.name.clone(), err));
            }
        }
        failures
    }

    /// Verifies `token` at the current time.
    pub async fn verify(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.verify_at(token, now).await
    }

    /// Verifies `token` as of `now` (seconds since the epoch).
    pub async fn verify_at(&self, token: &str, now: u64) -> Result<VerifiedToken, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge {
                len: token.len(),
                limit: self.max_token_bytes,
            });
        }
        let parts = split(token)?;
        let header = decode_object(parts[0], "the header is not a base64url JSON object")?;
        let alg = check_header(&header)?;
        let claims = decode_object(parts[1], "the payload is not a base64url JSON object")?;
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(TokenError::UnknownIssuer)?;
        let entry = self.by_iss.get(iss).ok_or(TokenError::UnknownIssuer)?;
        let settings = &entry.settings;
        if !settings.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed {
                alg: format!("{alg:?}"),
                issuer: settings.name.clone(),
            });
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(TokenError::Malformed("`kid` is not a string")),
        };
        let key = entry.keys.key_for(kid).await?;
        if key.alg.is_some_and(|a| a != alg) {
            return Err(TokenError::BadSignature);
        }
        verify_signature(token, &key.decoding, alg)?;
        claims::check(&claims, settings, &self.audiences, now)?;
        Ok(VerifiedToken {
            issuer: settings.name.clone(),
            provider: settings.provider,
            claims,
        })
    }
}

/// The unpadded base64url alphabet, by byte. A table: this check reads
/// every byte of every token, and three comparisons per byte cost about
/// three times the instructions of a lookup (callgrind, `make bench`:
/// ~24,000 against ~7,500 per exchange).
const BASE64URL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
        b += 1;
    }
    t
};

fn split(token: &str) -> Result<[&str; 3], TokenError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    if h.is_empty() || p.is_empty() {
        return Err(TokenError::Malformed("empty header or payload"));
    }
    if s.is_empty() {
        return Err(TokenError::Malformed("the signature is missing"));
    }
    let b64url = |part: &str| part.bytes().all(|b| BASE64URL[usize::from(b)]);
    if !(b64url(h) && b64url(p) && b64url(s)) {
        return Err(TokenError::Malformed("a part is not unpadded base64url"));
    }
    Ok([h, p, s])
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed(what)),
    }
}

/// Header checks that need no issuer. Returns the (asymmetric) algorithm.
fn check_header(header: &Map<String, Value>) -> Result<Algorithm, TokenError> {
    for name in ["jku", "x5u", "jwk", "x5c"] {
        if header.contains_key(name) {
            return Err(TokenError::ForbiddenHeader(name));
        }
    }
    if let Some(crit) = header.get("crit") {
        let first = crit
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .unwrap_or("crit");
        return Err(TokenError::UnsupportedCritical(truncate(first)));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::Malformed("the header has no `alg`"))?;
    match alg.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) | Err(_) => {
            Err(TokenError::UnsupportedAlgorithm(truncate(alg)))
        }
        Ok(a) => Ok(a),
    }
}

/// Header values echoed in errors are cut short: they come from the token.
fn truncate(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(32).collect()
}

fn verify_signature(
    token: &str,
    key: &jsonwebtoken::DecodingKey,
    alg: Algorithm,
) -> Result<(), TokenError> {
    // Header and payload were parsed already; verify the signature over
    // the signing input only (jsonwebtoken's `crypto::verify`, which goes
    // through the ring provider), instead of letting `decode` parse both
    // again.
    let Some((message, signature)) = token.rsplit_once('.') else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    match jsonwebtoken::crypto::verify(signature, message.as_bytes(), key, alg) {
        Ok(true) => Ok(()),
        _ => Err(TokenError::BadSignature),
    }
}

#[cfg(test)]
mod tests;
