//! Typed calls to the Vault endpoints vaultrs lacks or handles poorly:
//! leases, the database / rabbitmq / kubernetes / ssh engines, PKI issue and
//! revoke, token creation through a role, response wrapping.
//!
//! One small function sends a request through vaultrs' own reqwest client
//! (same CA, same timeout) with jobkey's token, and reads Vault's envelope
//! (`lease_id`, `lease_duration`, `data`, `auth`, `wrap_info`) into typed
//! structs. Error bodies become [`VaultError`] from their status and Vault's
//! short `errors` strings only; a body is never kept.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::auth::ClientHandle;
use super::error::{VaultError, from_status, from_transport};

/// Vault's answer envelope. `D` is the endpoint's `data`.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope<D> {
    #[serde(default)]
    pub lease_id: String,
    #[serde(default)]
    pub lease_duration: u64,
    #[serde(default = "Option::default")]
    pub data: Option<D>,
    #[serde(default)]
    pub auth: Option<AuthInfo>,
}

/// `auth` of a token-creating answer.
#[derive(Deserialize)]
pub(crate) struct AuthInfo {
    pub client_token: String,
    pub accessor: String,
    #[serde(default)]
    pub lease_duration: u64,
}

impl std::fmt::Debug for AuthInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInfo")
            .field("accessor", &self.accessor)
            .finish_non_exhaustive()
    }
}

impl Drop for AuthInfo {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.client_token);
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

/// No `data` expected.
#[derive(Debug, Deserialize)]
pub(crate) struct Nothing {}

/// Sends `method path` (relative to `/v1/`) with an optional JSON body.
/// `what` names the request in errors. 204 answers yield an empty envelope.
pub(crate) async fn call<D: DeserializeOwned>(
    client: &ClientHandle,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    what: &str,
) -> Result<Envelope<D>, VaultError> {
    call_with(client, method, path, body, None, what)
        .await
        .and_then(|bytes| parse(&bytes, what))
}

/// Like [`call`] but asks Vault to response-wrap the answer for `wrap_ttl`
/// and returns the raw `wrap_info` part.
pub(crate) async fn call_wrapped(
    client: &ClientHandle,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    wrap_ttl: Duration,
    what: &str,
) -> Result<WrapInfo, VaultError> {
    let bytes = call_with(client, method, path, body, Some(wrap_ttl), what).await?;
    #[derive(Deserialize)]
    struct Wrapped {
        wrap_info: Option<WrapInfo>,
    }
    let w: Wrapped = serde_json::from_slice(&bytes).map_err(|_| VaultError::BadResponse {
        reason: format!("unexpected JSON in the answer for {what}"),
    })?;
    w.wrap_info.ok_or_else(|| VaultError::BadResponse {
        reason: format!("no wrap_info in the answer for {what}"),
    })
}

/// A response-wrapping token and its metadata.
#[derive(Deserialize)]
pub(crate) struct WrapInfo {
    pub token: String,
    pub accessor: String,
    pub ttl: u64,
}

impl Drop for WrapInfo {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.token);
    }
}

fn parse<D: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<Envelope<D>, VaultError> {
    if bytes.is_empty() {
        return Ok(Envelope {
            lease_id: String::new(),
            lease_duration: 0,
            data: None,
            auth: None,
        });
    }
    serde_json::from_slice(bytes).map_err(|_| VaultError::BadResponse {
        reason: format!("unexpected JSON in the answer for {what}"),
    })
}

async fn call_with(
    client: &ClientHandle,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    wrap_ttl: Option<Duration>,
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, VaultError> {
    let base = &client.0.settings.address;
    let url = base
        .join(&format!("v1/{path}"))
        .map_err(|_| VaultError::InvalidPath {
            reason: format!("could not build a request for {what}"),
        })?;
    let mut req = client
        .0
        .http
        .http
        .request(method, url)
        .header("X-Vault-Request", "true")
        .header("X-Vault-Token", client.0.settings.token.as_str());
    if let Some(ttl) = wrap_ttl {
        req = req.header("X-Vault-Wrap-TTL", format!("{}s", ttl.as_secs().max(1)));
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.map_err(|e| from_transport(&e))?;
    let status = resp.status().as_u16();
    let bytes =
        zeroize::Zeroizing::new(resp.bytes().await.map_err(|e| from_transport(&e))?.to_vec());
    if (200..300).contains(&status) {
        return Ok(bytes);
    }
    let errors = serde_json::from_slice::<ErrorBody>(&bytes)
        .map(|b| b.errors)
        .unwrap_or_default();
    Err(from_status(status, &errors, what))
}

/// A TTL as Vault takes it.
pub(crate) fn ttl_param(ttl: Duration) -> String {
    format!("{}s", ttl.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_parse_with_and_without_data() {
        #[derive(Debug, Deserialize)]
        struct D {
            username: String,
        }
        let e: Envelope<D> = parse(
            br#"{"lease_id":"database/creds/app/x","lease_duration":300,"renewable":true,"data":{"username":"u","password":"p"}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(e.lease_id, "database/creds/app/x");
        assert_eq!(e.lease_duration, 300);
        assert_eq!(e.data.unwrap().username, "u");
        let e: Envelope<Nothing> = parse(b"", "x").unwrap();
        assert!(e.data.is_none());
        let err = parse::<D>(b"<html>s.secret</html>", "x").unwrap_err();
        assert!(!err.to_string().contains("s.secret"));
    }

    #[test]
    fn auth_info_debug_hides_the_token() {
        let a: AuthInfo = serde_json::from_str(
            r#"{"client_token":"s.topsecret","accessor":"acc","lease_duration":5}"#,
        )
        .unwrap();
        let shown = format!("{a:?}");
        assert!(
            !shown.contains("topsecret") && shown.contains("acc"),
            "{shown}"
        );
    }
}
