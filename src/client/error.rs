//! `ClientError`: everything `jobkey fetch` and `jobkey revoke` can fail
//! with. Messages say what to fix and never contain a token, a credential
//! value, a revocation handle or a response body.

use std::time::Duration;

use super::private_dir::FsError;
use crate::outbound::OutboundError;

/// The job client's errors.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// A bad command line or a setting the client cannot use.
    #[error("{0}")]
    Usage(String),
    /// A URL the client was given is not one it sends a token to: https,
    /// or plain http to a loopback address only.
    #[error("{setting}: {source}")]
    Url {
        /// Where the URL came from (a flag or a variable).
        setting: &'static str,
        source: OutboundError,
    },
    /// The job's ID token could not be obtained.
    #[error("cannot obtain the job's ID token: {0}")]
    Token(String),
    /// The request to GitHub's token endpoint failed (connection, TLS,
    /// timeout, redirect, size).
    #[error("cannot obtain the job's ID token: GitHub's token endpoint: {0}")]
    TokenEndpoint(OutboundError),
    /// The request to the broker failed (connection, TLS, timeout,
    /// redirect, size).
    #[error("the broker: {0}")]
    Broker(OutboundError),
    /// The broker's answer is not what jobkey sends.
    #[error("{0}")]
    Transport(String),
    /// An error status without a jobkey error body (a proxy in front of the
    /// broker, or not the broker at all).
    #[error("the broker answered HTTP {status} without a jobkey error body; is --url the broker?")]
    BrokerStatus {
        status: u16,
        /// The `Retry-After` sent with it, if any.
        retry_after: Option<Duration>,
    },
    /// The broker refused, with its error code, message and request id.
    #[error("the broker refused ({status} {code}): {message}{}", request_id.as_deref().map(|r| format!(" [request_id {r}]")).unwrap_or_default())]
    Refused {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// The broker's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The masks could not be registered with the CI; nothing was delivered.
    #[error("cannot register the masks with the CI, so nothing was delivered: {0}")]
    Mask(String),
    /// Writing the credentials (files, `$GITHUB_ENV`, outputs) failed.
    #[error("cannot deliver the credentials: {0}")]
    Deliver(String),
    /// The credentials directory was refused (a symlink, another user's, open
    /// to others) or could not be written.
    #[error("cannot deliver the credentials: {0}")]
    Files(FsError),
    /// Running the `--exec` command failed.
    #[error("cannot run the command: {0}")]
    Exec(String),
    /// Reading or writing the revocation state file failed.
    #[error("revocation state: {0}")]
    State(String),
    /// The revocation state file or its directory was refused or could not
    /// be written.
    #[error("revocation state: {0}")]
    StateFiles(FsError),
    /// `jobkey revoke` could not revoke some of the exchanges (each is
    /// reported on stderr); they stay in the state file for another try.
    #[error("{failed} of {total} exchange(s) could not be revoked (see above)")]
    Revoke { failed: usize, total: usize },
}
