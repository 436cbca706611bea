//! How a request's one audit record ends, and writing it.

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
    pub fn new(stage: Stage, api: ApiError, reason: &impl Serialize) -> Stop {
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

/// Writes the audit record; a failure means no credential may leave.
pub(super) async fn record(st: &AppState, event: &Event) -> Result<(), ApiError> {
    st.audit.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "writing the audit log failed; refusing the request");
        ApiError::AuditUnavailable
    })
}
