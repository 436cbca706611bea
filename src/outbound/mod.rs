//! Outbound HTTP policy: every HTTP request jobkey makes goes through here.
//!
//! That is the issuer discovery and JWKS fetches of the key cache
//! (`src/token/jwks.rs`) and the job client's calls to the broker and to
//! GitHub's token endpoint (`src/client/`). Vault is the one exception: it is
//! reached through vaultrs, which builds its own client (`src/vault/`).
//!
//! The rules, each enforced here once:
//! - **Which URLs.** [`AllowedUrl`] is a URL that passed [`check_url`]:
//!   `https` with a host, or `http` to a loopback address only (127.0.0.0/8,
//!   `[::1]`, `localhost`), and no user name or password in it. A request
//!   takes an `AllowedUrl`, so an unchecked URL cannot be fetched.
//! - **How.** [`HttpClient`] is reqwest on rustls with ring's provider
//!   (`src/tls.rs`), optionally trusting only the certificates of a CA file,
//!   with a connect timeout and a total timeout (sending, waiting and reading
//!   the body), and no redirects: a `3xx` is [`OutboundError::Redirect`], so
//!   a token or handle is never re-sent to another address.
//! - **How much.** A body is read up to a cap, and refused as soon as it
//!   would pass it (a `Content-Length` above the cap is refused before any
//!   read); the buffer never holds more than the cap, and it is wiped when
//!   dropped ([`Body`]).
//!
//! [`OutboundError`] messages name the URL (never with a password: URLs with
//! one are refused) and what went wrong; they never contain a header value
//! (a token), or any part of a response body.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use url::Url;
use zeroize::Zeroize;

use crate::secret::SecretString;

/// Why a URL is not fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    /// Neither `https` nor `http`.
    #[error(
        "scheme `{0}` is never fetched: it must be https (plain http only to a loopback address)"
    )]
    Scheme(String),
    /// `http` to a host that is not a loopback address.
    #[error(
        "plain http goes only to a loopback address (127.0.0.0/8, [::1] or localhost); it must be https"
    )]
    PlainHttp,
    /// A user name or password in the URL.
    #[error(
        "a user name or password in the URL is refused: it would be sent with every request and shown in logs"
    )]
    UserInfo,
    /// No host to connect to.
    #[error("the URL names no host")]
    NoHost,
}

/// What went wrong with an outbound request. Messages never contain a token,
/// a password or a response body.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The text is not a URL.
    #[error("not a URL ({0})")]
    NotAUrl(url::ParseError),
    /// The URL is not one jobkey fetches.
    #[error("`{url}` is refused: {reason}")]
    RefusedUrl { url: String, reason: UrlRefusal },
    /// The server answered with a redirect, which is never followed.
    #[error(
        "{url} answered with a redirect (HTTP {status}); redirects are never followed, so nothing is re-sent to another address"
    )]
    Redirect { url: String, status: u16 },
    /// No complete answer within the connect or the total timeout.
    #[error(
        "{url} did not answer in time (at most {} to connect and {} in all)",
        humantime::format_duration(*connect),
        humantime::format_duration(*total)
    )]
    Timeout {
        url: String,
        connect: Duration,
        total: Duration,
    },
    /// The answer is longer than the cap.
    #[error("{url} answered with more than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    /// No connection: refused, unreachable, or the TLS handshake failed
    /// (an untrusted certificate, a server that does not speak TLS).
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// The server answered with a status that is not a success.
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    /// The connection broke while sending or reading (after connecting).
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// The CA file cannot be used.
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    /// A header value (its name only is given) cannot be sent in HTTP.
    #[error("the {0} header cannot be sent: its value has characters HTTP does not allow")]
    InvalidHeader(&'static str),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Checks `url` against the policy: `https` with a host, or `http` to a
/// loopback address; no user name or password.
pub(crate) fn check_url(url: &Url) -> Result<(), UrlRefusal> {
    let loopback_only = match url.scheme() {
        "https" => false,
        "http" => true,
        other => return Err(UrlRefusal::Scheme(other.chars().take(32).collect())),
    };
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefusal::UserInfo);
    }
    let Some(host) = url.host() else {
        return Err(UrlRefusal::NoHost);
    };
    if loopback_only && !is_loopback(&host) {
        return Err(UrlRefusal::PlainHttp);
    }
    Ok(())
}

/// True when `url` may be fetched (see [`check_url`]).
pub(crate) fn url_is_allowed(url: &Url) -> bool {
    check_url(url).is_ok()
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
    }
}

/// A URL that passed [`check_url`]; the only kind [`HttpClient`] requests.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AllowedUrl(Url);

impl AllowedUrl {
    /// Checks `url`.
    pub(crate) fn new(url: Url) -> Result<Self, OutboundError> {
        match check_url(&url) {
            Ok(()) => Ok(AllowedUrl(url)),
            Err(reason) => Err(OutboundError::RefusedUrl {
                url: shown(&url),
                reason,
            }),
        }
    }

    /// Parses and checks `s`.
    pub(crate) fn parse(s: &str) -> Result<Self, OutboundError> {
        Url::parse(s)
            .map_err(OutboundError::NotAUrl)
            .and_then(Self::new)
    }

    /// This URL with `path` appended (`path` starts with `/`; a trailing `/`
    /// of this URL is not doubled), checked again.
    pub(crate) fn join_path(&self, path: &str) -> Result<Self, OutboundError> {
        let mut s = self.0.as_str().trim_end_matches('/').to_owned();
        s.push_str(path);
        Self::parse(&s)
    }

    pub(crate) fn as_url(&self) -> &Url {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl std::fmt::Debug for AllowedUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AllowedUrl({})", self.0.as_str())
    }
}

/// A URL as errors show it: without a user name or password.
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

/// How an [`HttpClient`] behaves.
#[derive(Debug, Clone)]
pub(crate) struct ClientSettings {
    /// Longest wait for the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Longest time for the whole request: connecting, sending, and reading
    /// the whole body.
    pub timeout: Duration,
    /// Largest body read.
    pub max_body_bytes: usize,
    /// A PEM bundle to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
}

/// The one HTTP client builder of jobkey (see the module docs).
pub(crate) struct HttpClient {
    inner: reqwest::Client,
    connect_timeout: Duration,
    timeout: Duration,
    max_body_bytes: usize,
}

impl HttpClient {
    /// Builds a client: rustls on ring, no redirects, the timeouts, and the
    /// CA file's certificates as the only roots when one is given.
    pub(crate) fn new(settings: ClientSettings) -> Result<Self, OutboundError> {
        crate::tls::install_rustls_ring_provider();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .user_agent(concat!("jobkey/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &settings.ca_file {
            builder = builder.tls_certs_only(ca_certificates(ca)?);
        }
        let inner = builder
            .build()
            .map_err(|e| OutboundError::Build(causes(&e)))?;
        Ok(HttpClient {
            inner,
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// Sends `req` and reads the whole answer (capped). A redirect is an
    /// error; any other status is returned with its body, for the caller to
    /// read an error document from ([`Response::success`] refuses it).
    pub(crate) async fn send(&self, req: Request<'_>) -> Result<Response, OutboundError> {
        let url = shown(req.url.as_url());
        // reqwest's own total timeout covers the body too; this one makes
        // the bound independent of how reqwest counts it.
        match tokio::time::timeout(self.timeout, self.send_and_read(req, &url)).await {
            Ok(answer) => answer,
            Err(_) => Err(self.timed_out(&url)),
        }
    }

    async fn send_and_read(&self, req: Request<'_>, url: &str) -> Result<Response, OutboundError> {
        let mut builder = self.inner.request(req.method, req.url.as_url().clone());
        if let Some((scheme, credentials)) = req.authorization {
            let value = SecretString::new(format!("{scheme} {}", credentials.expose_secret()));
            let mut header = HeaderValue::from_str(value.expose_secret())
                .map_err(|_| OutboundError::InvalidHeader("Authorization"))?;
            header.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, header);
        }
        if req.accept_json {
            builder = builder.header(ACCEPT, "application/json");
        }
        if let Some(body) = req.json_body {
            builder = builder.header(CONTENT_TYPE, "application/json").body(body);
        }
        let resp = builder.send().await.map_err(|e| self.failed(url, &e))?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(OutboundError::Redirect {
                url: url.to_owned(),
                status: status.as_u16(),
            });
        }
        // Only the delay-seconds form; an HTTP date is ignored.
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = self.read_capped(resp, url).await?;
        Ok(Response {
            url: url.to_owned(),
            status: status.as_u16(),
            retry_after,
            body,
        })
    }

    /// Reads the body, refusing it as soon as it would pass the cap.
    async fn read_capped(
        &self,
        mut resp: reqwest::Response,
        url: &str,
    ) -> Result<Body, OutboundError> {
        let limit = self.max_body_bytes;
        let too_large = || OutboundError::TooLarge {
            url: url.to_owned(),
            limit,
        };
        let declared = resp.content_length();
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Body(Vec::with_capacity(
            declared.map_or(0, |n| usize::try_from(n).unwrap_or(limit)),
        ));
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.failed(url, &e))? {
            if chunk.len() > limit - body.0.len() {
                return Err(too_large());
            }
            body.append(&chunk, limit);
        }
        Ok(body)
    }

    fn timed_out(&self, url: &str) -> OutboundError {
        OutboundError::Timeout {
            url: url.to_owned(),
            connect: self.connect_timeout,
            total: self.timeout,
        }
    }

    fn failed(&self, url: &str, e: &reqwest::Error) -> OutboundError {
        if e.is_timeout() {
            self.timed_out(url)
        } else if e.is_connect() {
            OutboundError::Connect {
                url: url.to_owned(),
                reason: causes(e),
            }
        } else {
            OutboundError::Transport {
                url: url.to_owned(),
                reason: causes(e),
            }
        }
    }
}

/// One request: a method, an [`AllowedUrl`], and the few headers jobkey
/// sends.
pub(crate) struct Request<'a> {
    method: reqwest::Method,
    url: &'a AllowedUrl,
    authorization: Option<(&'static str, &'a SecretString)>,
    accept_json: bool,
    json_body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    pub(crate) fn get(url: &'a AllowedUrl) -> Self {
        Request {
            method: reqwest::Method::GET,
            url,
            authorization: None,
            accept_json: false,
            json_body: None,
        }
    }

    /// A `POST` of a JSON document (`Content-Type: application/json`).
    pub(crate) fn post_json(url: &'a AllowedUrl, body: Vec<u8>) -> Self {
        Request {
            method: reqwest::Method::POST,
            json_body: Some(body),
            ..Request::get(url)
        }
    }

    /// `Authorization: <scheme> <credentials>`, marked sensitive so the HTTP
    /// stack does not log it.
    pub(crate) fn authorization(
        mut self,
        scheme: &'static str,
        credentials: &'a SecretString,
    ) -> Self {
        self.authorization = Some((scheme, credentials));
        self
    }

    /// `Accept: application/json`.
    pub(crate) fn accept_json(mut self) -> Self {
        self.accept_json = true;
        self
    }
}

/// An answer that is not a redirect, with its whole body.
#[derive(Debug)]
pub(crate) struct Response {
    url: String,
    pub status: u16,
    /// `Retry-After` in seconds, when the server sent it in that form.
    pub retry_after: Option<Duration>,
    pub body: Body,
}

impl Response {
    /// The body of a `2xx` answer; any other status is
    /// [`OutboundError::Status`] (and the body is wiped).
    pub(crate) fn success(self) -> Result<Body, OutboundError> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            Err(OutboundError::Status {
                url: self.url,
                status: self.status,
            })
        }
    }
}

/// A response body: wiped when dropped, and so is every smaller buffer it
/// grew out of. Its `Debug` shows the length only.
pub(crate) struct Body(Vec<u8>);

impl Body {
    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Appends `bytes` (the caller keeps the total within `limit`). When the
    /// buffer must grow, the old one is wiped instead of being left to the
    /// allocator.
    fn append(&mut self, bytes: &[u8], limit: usize) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let capacity = needed.max(self.0.capacity() * 2).min(limit.max(needed));
            let mut grown = Vec::with_capacity(capacity);
            grown.extend_from_slice(&self.0);
            let mut old = std::mem::replace(&mut self.0, grown);
            old.zeroize();
        }
        self.0.extend_from_slice(bytes);
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Body({} bytes)", self.0.len())
    }
}

/// The certificates of a PEM bundle; a file without one is refused.
fn ca_certificates(path: &std::path::Path) -> Result<Vec<reqwest::Certificate>, OutboundError> {
    let err = |reason: String| OutboundError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let pem = crate::files::read(path, crate::files::MIB).map_err(|e| err(e.reason()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| err(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

/// The causes under a reqwest error ("connection refused", "invalid peer
/// certificate: UnknownIssuer"), without reqwest's own line, which repeats
/// the URL. None of them carries a header or a body.
fn causes(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        "the request failed".into()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests;
