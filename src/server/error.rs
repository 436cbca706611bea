//! The one place errors become HTTP responses.
//!
//! Every failure the API returns is an [`ApiError`]; its body is always
//! `{"error": "<stable code>", "message": "...", "request_id": "..."}` (plus
//! `failed_claims` for a policy denial that reports them), with
//! `Cache-Control: no-store`. A connection over the listener's cap gets the
//! same answer written raw ([`ApiError::into_http1_bytes`]).
//! Messages say what is wrong and what to do; they never carry a token, a
//! secret, or a policy's expected values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::issue::IssueError;
use crate::token::TokenError;

/// An API failure.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request itself is malformed (body, JSON, fields), or lacks what
    /// a credential needs (400).
    BadRequest { message: String },
    /// The body is larger than `max_body_bytes` (413).
    BodyTooLarge { message: String },
    /// The ID token was refused (401), or the issuer's keys are unavailable (503).
    Token(TokenError),
    /// The policy denied the request (403). `failed_claims` names the claims
    /// that did not match, never what was expected; `None` when the
    /// environment does not report them (`report_failed_claims: false`).
    Denied {
        code: &'static str,
        message: String,
        failed_claims: Option<Vec<String>>,
    },
    /// Vault is unreachable, sealed or failing (503): nothing was issued.
    VaultUnavailable,
    /// Vault refused or lacked what the policy names (a broker
    /// misconfiguration, not the job's fault): 502.
    VaultFailed,
    /// The audit record could not be written: no credential leaves (503).
    AuditUnavailable,
    /// A credential's name template needs a claim the token lacks or holds
    /// an unusable value (403); nothing was issued.
    ClaimNotUsable { message: String },
    /// The exchange store could not record or read an exchange (503); on
    /// an exchange, what was issued has been revoked. (Its code keeps the
    /// store's earlier name, `lease_store_unavailable`: clients match it.)
    StoreUnavailable,
    /// Revocation: the exchange is unknown, already revoked, expired or not
    /// the caller's (404, one answer for all).
    UnknownExchange,
    /// Revocation: some credentials could not be revoked yet (503); the
    /// rest was, and the same request can be retried.
    RevokeIncomplete,
    /// No such route (404).
    NotFound,
    /// jobkey itself failed (no randomness from the system); 500, nothing
    /// was issued.
    Internal,
    /// The route exists, not with this method (405).
    MethodNotAllowed,
    /// Too many connections, or too many exchanges and revocations in
    /// flight (503, `Retry-After: 1`): nothing was done.
    Busy,
    /// The request's body did not arrive within `request_timeout` (408).
    RequestTimeout,
    /// Over a rate limit, per source or per identity (429, with
    /// `Retry-After` in whole seconds, rounded up): nothing was done.
    RateLimited { retry_after_s: u64 },
    /// The issuer's tokens are single-use and this one was exchanged
    /// before (401).
    TokenReplayed,
    /// The shared state that single-use tokens need (Redis) could not be
    /// used, so the token could not be checked (503): nothing was issued.
    StateUnavailable,
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Token(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Token(_) => StatusCode::UNAUTHORIZED,
            ApiError::Denied { .. } => StatusCode::FORBIDDEN,
            ApiError::VaultUnavailable | ApiError::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::VaultFailed => StatusCode::BAD_GATEWAY,
            ApiError::ClaimNotUsable { .. } => StatusCode::FORBIDDEN,
            ApiError::StoreUnavailable | ApiError::RevokeIncomplete => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UnknownExchange | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TokenReplayed => StatusCode::UNAUTHORIZED,
            ApiError::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::Token(e) => e.code(),
            ApiError::Denied { code, .. } => code,
            ApiError::VaultUnavailable => "vault_unavailable",
            ApiError::VaultFailed => "vault_error",
            ApiError::AuditUnavailable => "audit_unavailable",
            ApiError::ClaimNotUsable { .. } => "claim_not_usable",
            ApiError::StoreUnavailable => "lease_store_unavailable",
            ApiError::UnknownExchange => "unknown_exchange",
            ApiError::RevokeIncomplete => "revoke_incomplete",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Internal => "internal_error",
            ApiError::Busy => "server_busy",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::TokenReplayed => "token_replayed",
            ApiError::StateUnavailable => "state_unavailable",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            ApiError::BadRequest { message }
            | ApiError::BodyTooLarge { message }
            | ApiError::Denied { message, .. }
            | ApiError::ClaimNotUsable { message } => message.clone(),
            ApiError::StoreUnavailable => "the exchange could not be recorded for revocation, so nothing was issued. Retry later.".into(),
            ApiError::UnknownExchange => "no such exchange to revoke: unknown, already revoked, expired, or not yours".into(),
            ApiError::RevokeIncomplete => "some credentials could not be revoked yet; retry the same request".into(),
            ApiError::Internal => "jobkey failed internally; nothing was issued. Retry, and tell the broker's operators (quote the request id).".into(),
            ApiError::NotFound => "no such endpoint; jobkey serves POST /v1/exchange, POST /v1/revoke, GET /healthz and GET /readyz".into(),
            ApiError::MethodNotAllowed => "wrong method for this endpoint: /v1/exchange and /v1/revoke take POST, /healthz and /readyz take GET".into(),
            ApiError::Token(e) => e.to_string(),
            ApiError::VaultUnavailable => "Vault is unavailable; nothing was issued. Retry later.".into(),
            ApiError::VaultFailed => {
                "the broker could not read a credential the policy grants; nothing was issued. Ask the broker's operators (quote the request id).".into()
            }
            ApiError::AuditUnavailable => {
                "the decision could not be recorded in the audit log, so nothing was issued. Retry later.".into()
            }
            ApiError::Busy => "jobkey is handling as many requests as it may; nothing was done. Retry after the time in Retry-After.".into(),
            ApiError::RequestTimeout => "the request did not arrive in time; send the whole request at once".into(),
            ApiError::RateLimited { .. } => "too many requests from this job or this address; nothing was done. Retry after the time in Retry-After.".into(),
            ApiError::TokenReplayed => "this ID token was exchanged before, and its issuer's tokens are single-use; request a fresh token for each exchange".into(),
            ApiError::StateUnavailable => "single-use tokens cannot be checked right now, so nothing was issued. Retry later.".into(),
        }
    }

    /// The seconds in `Retry-After`, on a 503 or a 429.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Busy => Some(1),
            ApiError::RateLimited { retry_after_s } => Some((*retry_after_s).max(1)),
            _ if self.status() == StatusCode::SERVICE_UNAVAILABLE => Some(5),
            _ => None,
        }
    }

    fn body(&self, request_id: &str) -> serde_json::Value {
        let message = match self {
            // The why (expected values) is for the operator: the request
            // id finds it in the audit log.
            ApiError::Denied { .. } => format!(
                "{}; for why, ask an operator to run `jobkey audit show {request_id}`",
                self.message()
            ),
            _ => self.message(),
        };
        let mut body = json!({
            "error": self.code(),
            "message": message,
            "request_id": request_id,
        });
        if let ApiError::Denied {
            failed_claims: Some(claims),
            ..
        } = self
        {
            body["failed_claims"] = json!(claims);
        }
        body
    }

    /// A credential of an exchange could not be issued (nothing was: what
    /// was issued before has been revoked). Vault unreachable is 503, any
    /// other Vault failure 502; what the token or the request lacks is the
    /// job's to fix (403, 400).
    pub(crate) fn from_issue(credential: &str, e: &IssueError) -> ApiError {
        match e {
            IssueError::Vault(v) if v.is_retryable() => ApiError::VaultUnavailable,
            IssueError::Vault(_) => ApiError::VaultFailed,
            IssueError::Claim(t) => ApiError::ClaimNotUsable {
                message: format!("credential `{credential}`: {t}"),
            },
            IssueError::Request(m) => ApiError::BadRequest {
                message: format!("credential `{credential}`: {m}"),
            },
        }
    }

    /// The response, tagged with the request id.
    pub(crate) fn into_response_with(self, request_id: &str) -> Response {
        let status = self.status();
        let mut resp = (status, axum::Json(self.body(request_id))).into_response();
        if let Some(seconds) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }

    /// The same answer as raw HTTP/1.1 bytes, for a connection the
    /// listener turns away without serving it: the same headers as every
    /// response, and `Connection: close`.
    pub(crate) fn into_http1_bytes(self, request_id: &str) -> Vec<u8> {
        let status = self.status();
        let body = self.body(request_id).to_string();
        let mut head = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\nconnection: close\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        if let Some(seconds) = self.retry_after() {
            head.push_str(&format!("retry-after: {seconds}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::BadRequest {
                    message: "x".into(),
                },
                400,
                "bad_request",
            ),
            (
                ApiError::BodyTooLarge {
                    message: "x".into(),
                },
                413,
                "body_too_large",
            ),
            (ApiError::Token(TokenError::Expired), 401, "token_expired"),
            (
                ApiError::Token(TokenError::IssuerUnavailable { issuer: "g".into() }),
                503,
                "issuer_unavailable",
            ),
            (
                ApiError::Denied {
                    code: "no_rule_matched",
                    message: "x".into(),
                    failed_claims: Some(vec![]),
                },
                403,
                "no_rule_matched",
            ),
            (ApiError::Busy, 503, "server_busy"),
            (ApiError::RequestTimeout, 408, "request_timeout"),
            (ApiError::VaultUnavailable, 503, "vault_unavailable"),
            (ApiError::VaultFailed, 502, "vault_error"),
            (ApiError::AuditUnavailable, 503, "audit_unavailable"),
            (ApiError::Internal, 500, "internal_error"),
            (ApiError::NotFound, 404, "not_found"),
            (ApiError::MethodNotAllowed, 405, "method_not_allowed"),
            (
                ApiError::ClaimNotUsable {
                    message: "x".into(),
                },
                403,
                "claim_not_usable",
            ),
            (ApiError::StoreUnavailable, 503, "lease_store_unavailable"),
            (ApiError::UnknownExchange, 404, "unknown_exchange"),
            (ApiError::RevokeIncomplete, 503, "revoke_incomplete"),
            (
                ApiError::RateLimited { retry_after_s: 7 },
                429,
                "rate_limited",
            ),
            (ApiError::TokenReplayed, 401, "token_replayed"),
            (ApiError::StateUnavailable, 503, "state_unavailable"),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status, "{code}");
            assert_eq!(e.code(), code);
            let r = e.into_response_with("rid");
            assert_eq!(
                r.headers().contains_key(header::RETRY_AFTER),
                status == 503 || status == 429,
                "{code}"
            );
        }
    }

    #[test]
    fn a_rate_limit_says_when_to_retry_in_whole_seconds() {
        for (secs, header) in [(7, "7"), (0, "1"), (120, "120")] {
            let r = ApiError::RateLimited {
                retry_after_s: secs,
            }
            .into_response_with("rid");
            assert_eq!(r.headers()[header::RETRY_AFTER], header);
        }
        let raw =
            String::from_utf8(ApiError::RateLimited { retry_after_s: 3 }.into_http1_bytes("rid"))
                .unwrap();
        assert!(raw.contains("\r\nretry-after: 3\r\n"), "{raw}");
        let r = ApiError::TokenReplayed.into_response_with("rid");
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    #[test]
    fn failed_claims_are_in_the_body_only_when_reported() {
        for (claims, present) in [(Some(vec!["ref".to_owned()]), true), (None, false)] {
            let body = ApiError::Denied {
                code: "no_rule_matched",
                message: "x".into(),
                failed_claims: claims,
            }
            .body("rid");
            assert_eq!(body.get("failed_claims").is_some(), present, "{body}");
        }
    }

    #[test]
    fn a_raw_answer_is_the_same_answer_with_connection_close() {
        let raw = String::from_utf8(ApiError::Busy.into_http1_bytes("rid")).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        for line in [
            "retry-after: 1",
            "connection: close",
            "cache-control: no-store",
            "x-content-type-options: nosniff",
            "content-type: application/json",
        ] {
            assert!(head.lines().any(|l| l == line), "{line}: {head}");
        }
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["error"].as_str(), v["request_id"].as_str()),
            (Some("server_busy"), Some("rid"))
        );
    }

    #[test]
    fn an_issue_failure_maps_to_its_status() {
        use crate::policy::TemplateError;
        use crate::vault::VaultError;
        let cases: Vec<(IssueError, u16, &str)> = vec![
            (
                IssueError::Vault(VaultError::Unavailable {
                    reason: "down".into(),
                }),
                503,
                "vault_unavailable",
            ),
            (
                IssueError::Vault(VaultError::NotFound {
                    what: "secret/x".into(),
                }),
                502,
                "vault_error",
            ),
            (
                IssueError::Claim(TemplateError::MissingClaim {
                    claim: "actor".into(),
                }),
                403,
                "claim_not_usable",
            ),
            (
                IssueError::Request("send `ssh_public_key`".into()),
                400,
                "bad_request",
            ),
        ];
        for (e, status, code) in cases {
            let api = ApiError::from_issue("deploy-db", &e);
            assert_eq!((api.status().as_u16(), api.code()), (status, code), "{e}");
            if status < 500 {
                assert!(api.message().starts_with("credential `deploy-db`: "));
            }
        }
    }
}
