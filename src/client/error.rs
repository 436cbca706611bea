//! `ClientError`: everything `jobkey fetch` and `jobkey revoke` can fail
//! with. Messages say what to fix and never contain a token, a credential
//! value, a revocation handle or a response body.

/// The job client's errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A bad command line or a setting the client cannot use.
    #[error("{0}")]
    Usage(String),
    /// The job's ID token could not be obtained.
    #[error("cannot obtain the job's ID token: {0}")]
    Token(String),
    /// The broker could not be reached, or its answer could not be read.
    #[error("{0}")]
    Transport(String),
    /// The broker refused, with its error code, message and request id.
    #[error("the broker refused ({status} {code}): {message}{}", request_id.as_deref().map(|r| format!(" [request_id {r}]")).unwrap_or_default())]
    Refused {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
    },
    /// The masks could not be registered with the CI; nothing was delivered.
    #[error("cannot register the masks with the CI, so nothing was delivered: {0}")]
    Mask(String),
    /// Writing the credentials (files, `$GITHUB_ENV`, outputs) failed.
    #[error("cannot deliver the credentials: {0}")]
    Deliver(String),
    /// Running the `--exec` command failed.
    #[error("cannot run the command: {0}")]
    Exec(String),
    /// Reading or writing the revocation state file failed.
    #[error("revocation state: {0}")]
    State(String),
}

impl ClientError {
    /// The broker's error code, when the broker refused.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}
