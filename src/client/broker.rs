//! Talking to the broker: `POST /v1/exchange` and `POST /v1/revoke` (the
//! shared contract in README "The API"), and the response types, whose
//! secret parts are `SecretString`s from the moment they are parsed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroize;

use super::ClientError;
use crate::secret::SecretString;

/// Largest answer read from the broker or a token endpoint.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A secret string field of a JSON answer.
pub struct Secret(pub SecretString);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Secret(SecretString::new(s)))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A response body that is wiped when dropped.
pub struct Body(Vec<u8>);

impl Body {
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The exchange request body. Optional fields are left out when unset.
#[derive(Debug, Serialize)]
pub struct ExchangeRequest<'a> {
    pub environment: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub credentials: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<&'a str>,
}

/// `200` from `POST /v1/exchange`. Unknown fields are ignored so that an
/// older client keeps working with a newer broker.
#[derive(Debug, Deserialize)]
pub struct ExchangeResponse {
    pub request_id: String,
    pub environment: String,
    pub credentials: BTreeMap<String, Credential>,
    #[serde(default)]
    pub mask: Vec<Secret>,
    #[serde(default)]
    pub mask_warnings: Vec<String>,
    #[serde(default)]
    pub revocation: Option<Revocation>,
}

#[derive(Debug, Deserialize)]
pub struct Credential {
    pub kind: String,
    pub rule: String,
    pub ttl_seconds: u64,
    pub expires_at: String,
    /// Secret fields (masked).
    #[serde(default)]
    pub values: BTreeMap<String, Secret>,
    /// Non-secret fields (a certificate, a serial number, an accessor).
    #[serde(default)]
    pub info: BTreeMap<String, String>,
    #[serde(default)]
    pub wrapped: bool,
}

#[derive(Debug, Deserialize)]
pub struct Revocation {
    pub handle: Secret,
    pub expires_at: String,
}

#[derive(Debug, Deserialize)]
pub struct RevokeResponse {
    pub request_id: String,
    pub revoked: u64,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    request_id: Option<String>,
}

/// The HTTP client: rustls on ring, no redirects (a token or handle is never
/// re-sent elsewhere), a timeout.
pub fn http_client() -> Result<reqwest::Client, ClientError> {
    crate::tls::install_rustls_ring_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("jobkey/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Transport(format!("cannot build the HTTP client: {e}")))
}

/// A transport error without anything but its kind and the URL.
pub fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirects are not followed"
    } else {
        "request failed"
    };
    match e.url() {
        Some(u) => format!("{kind} ({})", u.as_str()),
        None => kind.to_owned(),
    }
}

/// Reads a body, refusing more than `MAX_BODY_BYTES`.
pub async fn read_capped(mut resp: reqwest::Response) -> Result<Body, String> {
    let mut buf = Body(Vec::new());
    while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
        if buf.0.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(format!("the answer is longer than {MAX_BODY_BYTES} bytes"));
        }
        buf.0.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The broker's base URL, checked: https, or http to loopback only (the ID
/// token and the credentials cross this connection).
pub fn base_url(url: &str) -> Result<url::Url, ClientError> {
    let u = url::Url::parse(url).map_err(|e| {
        ClientError::Usage(format!(
            "--url / JOBKEY_URL `{url}` is not a URL ({e}); write e.g. https://jobkey.example.com"
        ))
    })?;
    if !crate::outbound::url_is_allowed(&u) {
        return Err(ClientError::Usage(format!(
            "--url / JOBKEY_URL `{url}` must be https (plain http only to a loopback address)"
        )));
    }
    Ok(u)
}

fn endpoint(base: &url::Url, path: &str) -> Result<url::Url, ClientError> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push_str(path);
    url::Url::parse(&s).map_err(|e| ClientError::Usage(format!("{s}: {e}")))
}

/// `POST /v1/exchange` with the job's ID token.
pub async fn exchange(
    base: &url::Url,
    token: &SecretString,
    req: &ExchangeRequest<'_>,
) -> Result<ExchangeResponse, ClientError> {
    let body = post(
        base,
        "/v1/exchange",
        token,
        &serde_json::to_vec(req).unwrap_or_default(),
    )
    .await?;
    serde_json::from_slice(body.expose()).map_err(|e| {
        ClientError::Transport(format!(
            "the broker's answer is not a jobkey exchange response (line {}, column {}); is --url the broker?",
            e.line(),
            e.column()
        ))
    })
}

/// `POST /v1/revoke` with the revocation handle (or the job's ID token).
pub async fn revoke(
    base: &url::Url,
    bearer: &SecretString,
    request_id: &str,
) -> Result<RevokeResponse, ClientError> {
    let req = serde_json::json!({ "request_id": request_id }).to_string();
    let body = post(base, "/v1/revoke", bearer, req.as_bytes()).await?;
    serde_json::from_slice(body.expose()).map_err(|_| {
        ClientError::Transport(
            "the broker's answer to /v1/revoke is not {\"request_id\", \"revoked\"}".into(),
        )
    })
}

async fn post(
    base: &url::Url,
    path: &str,
    bearer: &SecretString,
    body: &[u8],
) -> Result<Body, ClientError> {
    let url = endpoint(base, path)?;
    let resp = http_client()?
        .post(url)
        .header(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", bearer.expose_secret()),
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_vec())
        .send()
        .await
        .map_err(|e| ClientError::Transport(format!("the broker: {}", describe(&e))))?;
    let status = resp.status();
    let body = read_capped(resp)
        .await
        .map_err(|e| ClientError::Transport(format!("the broker: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    Err(match serde_json::from_slice::<ErrorBody>(body.expose()) {
        Ok(e) => ClientError::Refused {
            status: status.as_u16(),
            code: e.error,
            message: e.message,
            request_id: e.request_id,
        },
        Err(_) => ClientError::Transport(format!(
            "the broker answered HTTP {} without a jobkey error body; is --url the broker?",
            status.as_u16()
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_https_or_loopback() {
        let cases = [
            ("https://jobkey.example.com", true),
            ("http://127.0.0.1:8400", true),
            ("http://localhost:8400/", true),
            ("http://jobkey.example.com", false),
            ("ftp://jobkey.example.com", false),
            ("jobkey.example.com", false),
        ];
        for (u, ok) in cases {
            assert_eq!(base_url(u).is_ok(), ok, "{u}");
        }
    }

    #[test]
    fn optional_request_fields_are_left_out() {
        let none: Vec<String> = vec![];
        let r = ExchangeRequest {
            environment: "production",
            credentials: &none,
            ttl: None,
            ssh_public_key: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"environment":"production"}"#
        );
    }

    #[test]
    fn a_parsed_response_never_shows_its_secrets_in_debug() {
        let body = r#"{"request_id":"r1","environment":"production",
            "credentials":{"db":{"kind":"database","rule":"r","ttl_seconds":300,"expires_at":"x",
              "values":{"password":"hunter2-secret-value"},"info":{"host":"db.internal"}}},
            "mask":["hunter2-secret-value"],"mask_warnings":[],
            "revocation":{"handle":"handle-secret-value","expires_at":"y"},"future_field":1}"#;
        let r: ExchangeResponse = serde_json::from_str(body).unwrap();
        let shown = format!("{r:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("handle-secret"), "{shown}");
        assert!(shown.contains("db.internal"), "info is not secret");
    }
}
