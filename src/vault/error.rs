//! The one error type of the Vault layer, and the single place where
//! vaultrs/rustify/reqwest errors are turned into it.
//!
//! Invariant: a `VaultError` never carries a secret. Messages hold what jobkey
//! asked for (mount, path, field name, file path, environment variable name),
//! HTTP status codes and the short error strings Vault puts in `errors`
//! ("permission denied", "Vault is sealed"). They never hold a token, a
//! secret_id, a secret value or a raw response body, and no vaultrs error is
//! kept as a `source` (rustify's errors carry response bodies in their
//! `Debug`).

use vaultrs::error::ClientError;

/// Why a call to Vault failed.
///
/// How the server should answer a job: [`VaultError::Unavailable`] and
/// [`VaultError::Login`] mean "jobkey cannot reach or use Vault right now"
/// (503, retry later); [`VaultError::NotFound`] and
/// [`VaultError::PermissionDenied`] are facts about the requested secret
/// (usually a policy or deployment mistake); the rest are bugs or
/// misconfiguration (500), [`VaultError::NotAllowed`] included.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VaultError {
    /// Vault could not answer: connection refused, DNS or TLS failure, a
    /// timeout, a 5xx or 429 answer, sealed or uninitialized.
    #[error("Vault is unavailable: {reason}")]
    Unavailable { reason: String },

    /// The secret path, or a requested field of it, does not exist (HTTP 404
    /// or a field absent from the secret). `what` names the path or field.
    #[error("not found in Vault: {what}")]
    NotFound { what: String },

    /// Vault answered 403 to jobkey's own, still valid token: its Vault
    /// policy does not allow this path.
    #[error("Vault denied access to {what}")]
    PermissionDenied { what: String },

    /// jobkey could not authenticate itself: the token was refused or has
    /// expired and could not be renewed, or the AppRole login failed.
    #[error("jobkey cannot log in to Vault: {reason}")]
    Login { reason: String },

    /// Local configuration is unusable: unreadable token or secret_id file,
    /// unset environment variable, bad CA file, bad address.
    #[error("Vault configuration error: {reason}")]
    Config { reason: String },

    /// A mount or path that jobkey refuses to send (empty segment, `..`,
    /// characters that would change the request URL). Checked before any
    /// request leaves the process.
    #[error("invalid Vault path: {reason}")]
    InvalidPath { reason: String },

    /// Vault refused the request with a 4xx status other than 403/404
    /// (typically 400: a malformed request).
    #[error(
        "Vault refused the request for {what} (HTTP {status}){}",
        vault_errors(errors)
    )]
    Rejected {
        what: String,
        status: u16,
        errors: Vec<String>,
    },

    /// jobkey's own configuration does not allow this request, so it was
    /// refused before anything reached Vault: a `vault_token` policy outside
    /// `[vault] allowed_token_policies`, or no token role configured. A
    /// policy set naming such a policy is refused when it is loaded, so this
    /// is the second check, not the first.
    #[error("refused by jobkey's configuration: {reason}")]
    NotAllowed { reason: String },

    /// Vault answered something jobkey could not understand (unexpected
    /// JSON, empty data). The body is deliberately not included.
    #[error("unexpected answer from Vault: {reason}")]
    BadResponse { reason: String },
}

impl VaultError {
    /// True when Vault itself is down, sealed, overloaded or too slow: the
    /// request may succeed later and the server should answer 503.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, VaultError::Unavailable { .. })
    }

    /// True when the job may retry the same request later: Vault is
    /// unavailable, or jobkey's own login is not usable right now (a new
    /// login runs in the background). The server answers 503 for these and
    /// 502 for the rest (a broker misconfiguration).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            VaultError::Unavailable { .. } | VaultError::Login { .. }
        )
    }
}

fn vault_errors(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

/// Vault's `errors` strings, bounded in size. They are short messages such as
/// "permission denied"; the bound protects logs from a proxy that answers with
/// an HTML page.
fn bounded(errors: &[String]) -> Vec<String> {
    const MAX: usize = 200;
    errors
        .iter()
        .take(4)
        .map(|e| {
            if e.len() <= MAX {
                e.clone()
            } else {
                let mut cut = MAX;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                format!("{}…", &e[..cut])
            }
        })
        .collect()
}

/// Maps an HTTP error status from Vault. `what` names what was asked for.
pub(crate) fn from_status(status: u16, errors: &[String], what: &str) -> VaultError {
    match status {
        404 => VaultError::NotFound {
            what: what.to_owned(),
        },
        403 => VaultError::PermissionDenied {
            what: what.to_owned(),
        },
        429 | 500..=599 => {
            let errors = bounded(errors);
            let reason = if errors.is_empty() {
                format!("HTTP {status} for {what}")
            } else {
                format!("HTTP {status} for {what}: {}", errors.join("; "))
            };
            VaultError::Unavailable { reason }
        }
        _ => VaultError::Rejected {
            what: what.to_owned(),
            status,
            errors: bounded(errors),
        },
    }
}

/// Describes a transport error (reqwest, under rustify) without any body.
pub(crate) fn from_transport(err: &(dyn std::error::Error + 'static)) -> VaultError {
    let mut timeout = false;
    let mut connect = false;
    let mut root = err.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(re) = e.downcast_ref::<reqwest::Error>() {
            timeout |= re.is_timeout();
            connect |= re.is_connect();
        }
        root = e.to_string();
        cur = e.source();
    }
    let reason = if timeout {
        format!("request timed out ({root})")
    } else if connect {
        format!("cannot connect ({root})")
    } else {
        format!("request failed ({root})")
    };
    VaultError::Unavailable { reason }
}

/// The one mapping from vaultrs' `ClientError` to [`VaultError`].
///
/// `what` names the object of the request ("secret secret/app/db",
/// "auth/approle login") for NotFound/PermissionDenied messages.
pub(crate) fn from_client(err: ClientError, what: &str) -> VaultError {
    match err {
        ClientError::APIError { code, errors } => from_status(code, &errors, what),
        ClientError::RestClientError { source } => match RestError::classify(&source) {
            RestError::Status(code) => from_status(code, &[], what),
            // The interesting part (reqwest's error) is the `source` of
            // rustify's error.
            RestError::Transport => match std::error::Error::source(&source) {
                Some(inner) => from_transport(inner),
                None => VaultError::Unavailable {
                    reason: "request failed".to_owned(),
                },
            },
            RestError::Parse => VaultError::BadResponse {
                reason: format!("could not parse the answer for {what}"),
            },
            RestError::Build => VaultError::InvalidPath {
                reason: format!("could not build a request for {what}"),
            },
        },
        ClientError::FileNotFoundError { path } => VaultError::Config {
            reason: format!("file not found: {path}"),
        },
        ClientError::FileReadError { source, path } => VaultError::Config {
            reason: format!("cannot read {path}: {source}"),
        },
        ClientError::ParseCertificateError { path, .. } => VaultError::Config {
            reason: format!("{path} holds no usable PEM CA certificate"),
        },
        ClientError::RestClientBuildError { source } => VaultError::Config {
            reason: format!("cannot build the HTTP client: {source}"),
        },
        ClientError::ResponseEmptyError | ClientError::ResponseDataEmptyError => {
            VaultError::BadResponse {
                reason: format!("empty answer for {what}"),
            }
        }
        ClientError::JsonParseError { .. } => VaultError::BadResponse {
            reason: format!("unexpected JSON in the answer for {what}"),
        },
        other => VaultError::BadResponse {
            // Display strings of the remaining variants are fixed texts.
            reason: format!("{other} ({what})"),
        },
    }
}

/// Classification of rustify's error without touching the response content
/// it may carry.
enum RestError {
    Status(u16),
    Transport,
    Parse,
    Build,
}

impl RestError {
    fn classify(e: &rustify::errors::ClientError) -> RestError {
        use rustify::errors::ClientError as R;
        match e {
            R::ServerResponseError { code, .. } => RestError::Status(*code),
            R::RequestError { .. } | R::ResponseError { .. } => RestError::Transport,
            R::ResponseParseError { .. }
            | R::ResponseConversionError { .. }
            | R::DataParseError { .. } => RestError::Parse,
            _ => RestError::Build,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_variants() {
        assert_eq!(
            from_client(
                ClientError::APIError {
                    code: 404,
                    errors: vec![]
                },
                "secret secret/a"
            ),
            VaultError::NotFound {
                what: "secret secret/a".into()
            }
        );
        assert!(matches!(
            from_client(
                ClientError::APIError {
                    code: 403,
                    errors: vec!["permission denied".into()]
                },
                "x"
            ),
            VaultError::PermissionDenied { .. }
        ));
        for code in [429, 500, 502, 503, 504] {
            let e = from_client(
                ClientError::APIError {
                    code,
                    errors: vec!["Vault is sealed".into()],
                },
                "x",
            );
            assert!(e.is_unavailable(), "{code}: {e}");
            assert!(e.to_string().contains("Vault is sealed"), "{e}");
        }
        let e = from_client(
            ClientError::APIError {
                code: 400,
                errors: vec!["invalid role or secret ID".into()],
            },
            "login",
        );
        assert!(matches!(e, VaultError::Rejected { status: 400, .. }), "{e}");
        assert!(!e.is_unavailable());
    }

    #[test]
    fn non_json_error_bodies_are_classified_by_status_and_never_shown() {
        let body = "<html>secret-looking-body s.abcdef</html>".to_owned();
        let e = from_client(
            ClientError::RestClientError {
                source: rustify::errors::ClientError::ServerResponseError {
                    code: 503,
                    content: Some(body.clone()),
                },
            },
            "secret secret/a",
        );
        assert!(e.is_unavailable());
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s.abcdef"), "{shown}");

        let e = from_client(
            ClientError::RestClientError {
                source: rustify::errors::ClientError::ResponseParseError {
                    source: std::io::Error::other("bad json").into(),
                    content: Some(body),
                },
            },
            "secret secret/a",
        );
        assert!(matches!(e, VaultError::BadResponse { .. }));
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("s.abcdef"), "{shown}");
    }

    #[test]
    fn long_vault_error_strings_are_bounded() {
        let e = from_status(500, &["x".repeat(10_000)], "y");
        assert!(e.to_string().len() < 400, "{}", e.to_string().len());
    }

    #[test]
    fn only_unavailable_is_unavailable() {
        assert!(!VaultError::Login { reason: "x".into() }.is_unavailable());
        assert!(!VaultError::NotFound { what: "x".into() }.is_unavailable());
        assert!(VaultError::Unavailable { reason: "x".into() }.is_unavailable());
    }

    #[test]
    fn unavailable_and_login_are_retryable_the_rest_is_not() {
        assert!(VaultError::Unavailable { reason: "x".into() }.is_retryable());
        assert!(VaultError::Login { reason: "x".into() }.is_retryable());
        assert!(!VaultError::NotFound { what: "x".into() }.is_retryable());
        assert!(!VaultError::PermissionDenied { what: "x".into() }.is_retryable());
    }
}
