//! Request plumbing shared by the handlers: the bearer credential, the
//! strict JSON body, the request id.

use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};

use super::ApiError;
use crate::secret::SecretString;
use crate::token::TokenError;

/// The `Authorization: Bearer` credential (an ID token or a revocation
/// handle), straight into a [`SecretString`].
pub(super) fn bearer(headers: &HeaderMap) -> Result<SecretString, ApiError> {
    let Some(h) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::Token(TokenError::Missing));
    };
    let s = h.to_str().map_err(|_| {
        ApiError::Token(TokenError::Malformed(
            "the Authorization header is not ASCII",
        ))
    })?;
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
        return Err(ApiError::Token(TokenError::Missing));
    }
    Ok(SecretString::new(rest.trim().to_owned()))
}

/// Reads a JSON request body strictly; errors say what to send, by example.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        let message = format!("could not read the request body: {}", e.body_text());
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { message }
        } else {
            ApiError::BadRequest { message }
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        message: format!("the body must be JSON like {example}: {e}"),
    })
}

/// A request id: random, or (should the system have no randomness) the
/// time, which is unique enough to find a request and protects nothing.
pub(super) fn request_id() -> String {
    crate::random::hex_token::<12>().unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        format!("t{nanos:x}")
    })
}
