//! Talking to the broker: `POST /v1/exchange` and `POST /v1/revoke` (the
//! shared contract in README "The API"), and the response types, whose
//! secret parts are `SecretString`s from the moment they are parsed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::ClientError;
use super::retry::{self, RetryPolicy};
use crate::outbound::{AllowedUrl, Body, ClientSettings, HttpClient, Request};
use crate::secret::SecretString;

/// Largest answer read from the broker or a token endpoint.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A secret string field of a JSON answer.
pub(super) struct Secret(pub SecretString);

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

/// The exchange request body. Optional fields are left out when unset.
#[derive(Debug, Serialize)]
pub(super) struct ExchangeRequest<'a> {
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
pub(super) struct ExchangeResponse {
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
pub(super) struct Credential {
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

/// The exchange's revocation handle (its `expires_at` is not needed: the
/// broker refuses an expired handle itself).
#[derive(Debug, Deserialize)]
pub(super) struct Revocation {
    pub handle: Secret,
}

/// `200` from `POST /v1/revoke`; the client reads the count only.
#[derive(Debug, Deserialize)]
pub(super) struct RevokeResponse {
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

/// How the job client talks HTTP, to the broker and to GitHub's token
/// endpoint: the system roots, 10 s to connect, 60 s in all, 4 MiB answers.
pub(super) fn http_settings() -> ClientSettings {
    ClientSettings {
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(60),
        max_body_bytes: MAX_BODY_BYTES,
        ca_file: None,
    }
}

/// The broker at a checked base URL: https, or http to loopback only (the
/// ID token and the credentials cross this connection).
pub(super) struct Broker {
    base: AllowedUrl,
    http: HttpClient,
    retry: RetryPolicy,
}

impl Broker {
    /// Checks `url` (`--url` / `JOBKEY_URL`, or the one the state file
    /// kept) and builds the HTTP client: with `ca_file` (`--ca-file` /
    /// `JOBKEY_CA_FILE`), that file's CAs are the only ones trusted for
    /// the broker's certificate; otherwise the system's.
    pub(super) fn new(url: &str, ca_file: Option<&std::path::Path>) -> Result<Broker, ClientError> {
        let parsed = url::Url::parse(url).map_err(|e| {
            ClientError::Usage(format!(
                "--url / JOBKEY_URL `{url}` is not a URL ({e}); write e.g. https://jobkey.example.com"
            ))
        })?;
        let base = AllowedUrl::new(parsed).map_err(|source| ClientError::Url {
            setting: "--url / JOBKEY_URL",
            source,
        })?;
        let settings = ClientSettings {
            ca_file: ca_file.map(std::path::Path::to_path_buf),
            ..http_settings()
        };
        let http = HttpClient::new(settings).map_err(ClientError::Broker)?;
        Ok(Broker {
            base,
            http,
            retry: RetryPolicy::within(Duration::ZERO),
        })
    }

    /// Retries a request that found the broker or Vault unavailable for up
    /// to `window` (`--retry-for`; zero: never). See `retry`.
    pub(super) fn retrying_for(mut self, window: Duration) -> Broker {
        self.retry = RetryPolicy::within(window);
        self
    }

    /// The base URL, as `jobkey revoke` should find it again.
    pub(super) fn url(&self) -> &AllowedUrl {
        &self.base
    }

    /// `POST /v1/exchange` with the job's ID token.
    pub(super) async fn exchange(
        &self,
        token: &SecretString,
        req: &ExchangeRequest<'_>,
    ) -> Result<ExchangeResponse, ClientError> {
        let body = self
            .post(
                "the exchange",
                "/v1/exchange",
                token,
                serde_json::to_vec(req).unwrap_or_default(),
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
    pub(super) async fn revoke(
        &self,
        bearer: &SecretString,
        request_id: &str,
    ) -> Result<RevokeResponse, ClientError> {
        let req = serde_json::json!({ "request_id": request_id }).to_string();
        let body = self
            .post("the revocation", "/v1/revoke", bearer, req.into_bytes())
            .await?;
        serde_json::from_slice(body.expose()).map_err(|_| {
            ClientError::Transport(
                "the broker's answer to /v1/revoke has no \"revoked\" count".into(),
            )
        })
    }

    /// A JSON `POST` with a bearer, retried as `retry` allows; a jobkey
    /// error body becomes [`ClientError::Refused`]. `what` names the request
    /// in the retry messages.
    async fn post(
        &self,
        what: &str,
        path: &str,
        bearer: &SecretString,
        body: Vec<u8>,
    ) -> Result<Body, ClientError> {
        let url = self
            .base
            .join_path(path)
            .map_err(|source| ClientError::Url {
                setting: "--url / JOBKEY_URL",
                source,
            })?;
        retry::run(&self.retry, what, || {
            self.post_once(&url, bearer, body.clone())
        })
        .await
    }

    async fn post_once(
        &self,
        url: &AllowedUrl,
        bearer: &SecretString,
        body: Vec<u8>,
    ) -> Result<Body, ClientError> {
        let resp = self
            .http
            .send(Request::post_json(url, body).authorization("Bearer", bearer))
            .await
            .map_err(ClientError::Broker)?;
        if (200..300).contains(&resp.status) {
            return Ok(resp.body);
        }
        Err(
            match serde_json::from_slice::<ErrorBody>(resp.body.expose()) {
                Ok(e) => ClientError::Refused {
                    status: resp.status,
                    code: e.error,
                    message: e.message,
                    request_id: e.request_id,
                    retry_after: resp.retry_after,
                },
                Err(_) => ClientError::BrokerStatus {
                    status: resp.status,
                    retry_after: resp.retry_after,
                },
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_must_be_https_or_loopback() {
        use crate::outbound::{OutboundError, UrlRefusal};
        // (url, None when accepted, else the refusal)
        let cases: &[(&str, Option<Option<UrlRefusal>>)] = &[
            ("https://jobkey.example.com", None),
            ("http://127.0.0.1:8400", None),
            ("http://localhost:8400/", None),
            ("http://[::1]:8400/", None),
            (
                "http://jobkey.example.com",
                Some(Some(UrlRefusal::PlainHttp)),
            ),
            (
                "http://localhost.jobkey.example.com",
                Some(Some(UrlRefusal::PlainHttp)),
            ),
            (
                "ftp://jobkey.example.com",
                Some(Some(UrlRefusal::Scheme("ftp".into()))),
            ),
            (
                "https://ci:pw@jobkey.example.com",
                Some(Some(UrlRefusal::UserInfo)),
            ),
            // Not a URL at all: a usage error with an example.
            ("jobkey.example.com", Some(None)),
        ];
        for (u, want) in cases {
            match (Broker::new(u, None), want) {
                (Ok(b), None) => assert_eq!(b.url().as_url(), &url::Url::parse(u).unwrap()),
                (
                    Err(ClientError::Url {
                        setting: "--url / JOBKEY_URL",
                        source: OutboundError::RefusedUrl { reason, .. },
                    }),
                    Some(Some(want)),
                ) => assert_eq!(&reason, want, "{u}"),
                (Err(ClientError::Usage(m)), Some(None)) => {
                    assert!(m.contains("write e.g. https://jobkey.example.com"), "{m}")
                }
                (got, _) => panic!("{u}: {:?}", got.err()),
            }
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
