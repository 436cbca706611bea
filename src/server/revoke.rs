//! `POST /v1/revoke`: the job revokes everything one exchange issued.
//!
//! Authentication, either of:
//! - the exchange's **revocation handle** (`Bearer jkr_…`): its SHA-256
//!   must equal the one stored with the exchange;
//! - an **ID token of the same job**: verified like any exchange token, and
//!   its issuer name, `sub` and run (`run_id` / `pipeline_id`) must equal
//!   the exchange's. A token of another run, repository or issuer is not
//!   the owner.
//!
//! An exchange that is unknown, already revoked, expired, or not the
//! caller's gets the same `404 unknown_exchange`, so a caller cannot probe
//! for other jobs' exchanges. The record is taken from the store atomically
//! before revoking, so two concurrent revocations revoke once; if Vault
//! fails part-way, what is left is stored again and the answer is `503`
//! (retry the same request). Every outcome is audited.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::exchange::{bearer, json_body, owner, record, request_id, verify_audited};
use super::{ApiError, AppState};
use crate::audit;
use crate::exchanges::{HandleHash, RevocationHandle};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    request_id: String,
}

pub async fn revoke(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rid = request_id();
    match handle(&st, &rid, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(request_id = %rid, code = e.code(), status = e.status().as_u16(), "revocation refused");
            e.into_response_with(&rid)
        }
    }
}

/// How the caller proved who it is.
enum Caller {
    Handle(HandleHash),
    Job(crate::exchanges::Owner),
    /// A verified token without sub or run id: owns nothing.
    Nobody,
}

async fn handle(
    st: &AppState,
    rid: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let secret = bearer(headers)?;
    let req: RevokeRequest = json_body(body, r#"{"request_id": "<the exchange's request_id>"}"#)?;
    let mut event = Map::new();
    event.insert("time".into(), json!(audit::timestamp()));
    event.insert("request_id".into(), json!(rid));
    event.insert("action".into(), json!("revoke"));
    event.insert("exchange".into(), json!(req.request_id));

    let caller = match RevocationHandle::from_bearer(secret) {
        Ok(handle) => {
            event.insert("auth".into(), json!("handle"));
            Caller::Handle(handle.sha256())
        }
        Err(token) => {
            event.insert("auth".into(), json!("id_token"));
            let v = verify_audited(st, &token, &mut event).await?;
            owner(&v).map_or(Caller::Nobody, Caller::Job)
        }
    };

    let deny = |mut event: Map<String, Value>| async move {
        event.insert("decision".into(), json!("deny"));
        event.insert("stage".into(), json!("revoke"));
        event.insert("reason".into(), json!({"code": "unknown_exchange"}));
        record(st, event).await?;
        Err::<Response, ApiError>(ApiError::UnknownExchange)
    };
    let store_err = |e: crate::exchanges::ExchangeStoreError| {
        tracing::error!(error = %e, "reading the exchange store failed");
        ApiError::StoreUnavailable
    };

    let Some(rec) = st.exchanges.get(&req.request_id).await.map_err(store_err)? else {
        return deny(event).await;
    };
    let owns = match &caller {
        // Comparing hashes: timing reveals nothing about the handle.
        Caller::Handle(hash) => *hash == rec.handle_sha256,
        Caller::Job(o) => rec.owner.as_ref() == Some(o),
        Caller::Nobody => false,
    };
    if !owns {
        return deny(event).await;
    }
    let Some(rec) = st
        .exchanges
        .take(&req.request_id)
        .await
        .map_err(store_err)?
    else {
        return deny(event).await; // revoked concurrently
    };

    let (revoked, failed) = crate::issue::revoke_all(&st.vault, &rec.revocables).await;
    event.insert("environment".into(), json!(rec.environment));
    event.insert("revoked".into(), json!(revoked));
    // Whose exchange it was (issuer, sub, run), also when a handle revoked it.
    if let Some(o) = &rec.owner {
        event.insert("exchange_owner".into(), json!(o));
    }
    if !failed.is_empty() {
        let left = failed.len();
        let mut rest = rec;
        rest.revocables = failed;
        let restored = st.exchanges.put(&rest).await.is_ok();
        event.insert("decision".into(), json!("error"));
        event.insert("stage".into(), json!("vault"));
        event.insert(
            "reason".into(),
            json!({"message": format!("{left} credential(s) could not be revoked"), "kept_for_retry": restored}),
        );
        record(st, event).await?;
        return Err(ApiError::RevokeIncomplete);
    }
    event.insert("decision".into(), json!("allow"));
    record(st, event).await?;
    tracing::info!(request_id = %rid, exchange = %req.request_id, revoked, "exchange revoked");
    Ok(axum::Json(json!({"request_id": req.request_id, "revoked": revoked})).into_response())
}
