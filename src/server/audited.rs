//! How a request's one audit record ends, and writing it.

use axum::response::Response;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::audit::{Event, Refusal, Stage};

/// Why a request stopped before it was allowed: what the audit record says
/// and what the caller gets.
pub(super) struct Stop {
    /// Boxed: a `Stop` travels through every step's `Result`.
    pub refusal: Box<Refusal>,
    pub api: ApiError,
}

impl Stop {
    /// The caller gets `api`. The record says `deny` when that is a 4xx
    /// (the request's fault) and `error` when it is a 5xx (jobkey's or a
    /// service's), at `stage`, with `reason` for the auditor.
    pub(super) fn new(stage: Stage, api: ApiError, reason: &impl Serialize) -> Stop {
        let refusal = if api.status().is_client_error() {
            Refusal::deny(stage, api.code(), reason)
        } else {
            Refusal::error(stage, api.code(), reason)
        };
        Stop {
            refusal: Box::new(refusal),
            api,
        }
    }
}

/// Lets a request start: a place among the requests in flight, waited
/// for up to `[server] queue_timeout` (then `503 server_busy`), and an
/// audit log that accepts writes (otherwise `503 audit_unavailable`:
/// nothing may run that cannot be recorded). The permit is held until the
/// request ends.
async fn admit(st: &AppState) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    let permit = match st.in_flight.try_acquire() {
        Ok(p) => Some(p),
        Err(_) => tokio::time::timeout(st.server.queue_timeout, st.in_flight.acquire())
            .await
            .ok()
            .and_then(Result::ok),
    };
    let permit = permit.ok_or_else(|| {
        crate::metrics::refused(crate::metrics::Refusal::Busy);
        tracing::warn!(
            max_in_flight = st.server.max_in_flight,
            queue_timeout = ?st.server.queue_timeout,
            "too many requests in flight for longer than queue_timeout; answering 503"
        );
        ApiError::Busy
    })?;
    st.audit.check_writable().map_err(|e| {
        tracing::warn!(error = %e, "the audit log is unwritable; refusing the request");
        ApiError::AuditUnavailable
    })?;
    Ok(permit)
}

/// Runs a request's `work` once [`admit`]ted, holding its place until the
/// work ends. The work is built and boxed only then: an async fn's future
/// is as large as its largest state, and axum allocates a handler's whole
/// future when the request arrives, so every request waiting for its place
/// would otherwise hold the exchange's ~8 KiB (8 MB with 1,000 jobs
/// queued) instead of a few hundred bytes.
pub(super) async fn once_admitted<F>(
    st: &AppState,
    work: impl FnOnce() -> F,
) -> Result<Response, ApiError>
where
    F: std::future::Future<Output = Result<Response, ApiError>>,
{
    let _in_flight = admit(st).await?;
    Box::pin(work()).await
}

/// Writes the audit record; a failure means no credential may leave.
pub(super) async fn record(st: &AppState, event: Event) -> Result<(), ApiError> {
    st.audit.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "writing the audit log failed; refusing the request");
        ApiError::AuditUnavailable
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::audit::Decision;
    use crate::token::TokenError;

    #[test]
    fn the_request_s_fault_is_deny_and_jobkey_s_is_error() {
        let cases: Vec<(ApiError, Decision)> = vec![
            (ApiError::Token(TokenError::Expired), Decision::Deny),
            (ApiError::Token(TokenError::BadSignature), Decision::Deny),
            (
                ApiError::Token(TokenError::IssuerUnavailable {
                    issuer: "github".into(),
                }),
                Decision::Error,
            ),
            (
                ApiError::Denied {
                    code: "no_rule_matched",
                    message: "x".into(),
                    failed_claims: Some(vec![]),
                },
                Decision::Deny,
            ),
            (
                ApiError::ClaimNotUsable {
                    message: "x".into(),
                },
                Decision::Deny,
            ),
            (
                ApiError::BadRequest {
                    message: "x".into(),
                },
                Decision::Deny,
            ),
            (ApiError::UnknownExchange, Decision::Deny),
            (ApiError::VaultUnavailable, Decision::Error),
            (ApiError::VaultFailed, Decision::Error),
            (ApiError::StoreUnavailable, Decision::Error),
            (ApiError::RevokeIncomplete, Decision::Error),
            (ApiError::Internal, Decision::Error),
            (ApiError::Busy, Decision::Error),
            (ApiError::RequestTimeout, Decision::Deny),
        ];
        for (api, decision) in cases {
            let code = api.code();
            let stop = Stop::new(Stage::Vault, api, &json!({}));
            assert_eq!(stop.refusal.decision(), decision, "{code}");
            assert_eq!(stop.api.code(), code);
        }
    }
}
