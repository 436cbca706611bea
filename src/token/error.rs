//! Why a token was refused.
//!
//! Every variant but [`TokenError::IssuerUnavailable`] is caused by the token
//! itself (untrusted input) and becomes a 401 with the variant's stable
//! [`code`](TokenError::code). Messages describe the problem and never quote
//! the token or any part of it beyond short, non-secret header values.

use thiserror::Error;

/// A token refusal. The `Display` text is safe to send to the job.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization: Bearer` token came with the request.
    #[error("no ID token: send it as `Authorization: Bearer <token>`")]
    Missing,
    /// Longer than the configured cap; refused before any parsing.
    #[error("the token is {len} bytes; the limit is {limit}")]
    TooLarge { len: usize, limit: usize },
    /// Not three base64url parts of JSON objects.
    #[error("the token is not a well-formed JWS compact token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, an HMAC algorithm, or one jobkey does not know.
    #[error("algorithm `{0}` is never accepted")]
    UnsupportedAlgorithm(String),
    /// `alg` is a real algorithm but not on this issuer's allow-list.
    #[error("algorithm `{alg}` is not allowed for issuer `{issuer}`")]
    AlgorithmNotAllowed { alg: String, issuer: String },
    /// A `jku`, `x5u`, `jwk` or `x5c` header: keys come only from the
    /// issuer's configured source, so a token naming its own key is refused.
    #[error("header `{0}` is not accepted: keys come only from the issuer's configured source")]
    ForbiddenHeader(&'static str),
    /// A `crit` header: jobkey understands no JWS extensions.
    #[error("critical header extension `{0}` is not understood")]
    UnsupportedCritical(String),
    /// `iss` is not exactly one of the configured issuers.
    #[error("issuer is not trusted by this broker")]
    UnknownIssuer,
    /// No key with the token's `kid` in the issuer's key set.
    #[error("no key of issuer `{issuer}` matches the token's key id")]
    UnknownKey { issuer: String },
    /// The signature does not verify with the issuer's key.
    #[error("the signature does not verify")]
    BadSignature,
    /// `aud` missing, or none of its values is one of jobkey's audiences.
    #[error("the token's audience does not include this broker's audience ({expected})")]
    AudienceMismatch { expected: String },
    /// `exp` (plus leeway) is in the past.
    #[error("the token expired")]
    Expired,
    /// `nbf` (minus leeway) is in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` (minus leeway) is in the future.
    #[error("the token claims to be issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the issuer's maximum lifetime.
    #[error(
        "the token's lifetime of {lifetime_s} s exceeds the maximum of {max_s} s for this issuer"
    )]
    LifetimeTooLong { lifetime_s: u64, max_s: u64 },
    /// A required claim (`exp`, `iat`) is missing.
    #[error("required claim `{0}` is missing")]
    MissingClaim(&'static str),
    /// A registered claim has the wrong type (e.g. `exp` as a string).
    #[error("claim `{0}` has the wrong type")]
    InvalidClaim(&'static str),
    /// The issuer's keys could not be fetched and none are cached. Not the
    /// job's fault: a 503.
    #[error("the keys of issuer `{issuer}` are unavailable right now")]
    IssuerUnavailable { issuer: String },
}

impl TokenError {
    /// A stable, machine-readable code for the API's `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Missing => "token_missing",
            TokenError::TooLarge { .. } => "token_too_large",
            TokenError::Malformed(_) => "malformed_token",
            TokenError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            TokenError::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            TokenError::ForbiddenHeader(_) => "forbidden_header",
            TokenError::UnsupportedCritical(_) => "unsupported_critical_header",
            TokenError::UnknownIssuer => "unknown_issuer",
            TokenError::UnknownKey { .. } => "unknown_key",
            TokenError::BadSignature => "bad_signature",
            TokenError::AudienceMismatch { .. } => "audience_mismatch",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::IssuedInFuture => "token_issued_in_future",
            TokenError::LifetimeTooLong { .. } => "token_lifetime_too_long",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::InvalidClaim(_) => "invalid_claim",
            TokenError::IssuerUnavailable { .. } => "issuer_unavailable",
        }
    }

    /// True when the job is not at fault and may retry (503, not 401).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, TokenError::IssuerUnavailable { .. })
    }
}
