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
//! Revocation shares the exchange's per-source rate limit (checked before
//! the credential), and does not spend a single-use token: the job
//! revokes with the same token it exchanged.
//!
//! An exchange that is unknown, already revoked, expired, or not the
//! caller's gets the same `404 unknown_exchange`, so a caller cannot probe
//! for other jobs' exchanges. The record is taken from the store atomically
//! before revoking, so two concurrent revocations revoke once; if Vault
//! fails part-way, what is left is stored again and the answer is `503`
//! (retry the same request). Every outcome is audited, in one record.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::audited::{Stop, once_admitted, record};
use super::request::{bearer, json_body, request_id};
use super::{ApiError, AppState, Peer, identity};
use crate::audit::{Auth, Event, EventBuilder, Stage};
use crate::exchanges::{ExchangeRecord, ExchangeStoreError, HandleHash, Owner, RevocationHandle};
use crate::secret::SecretString;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    request_id: String,
}

pub(super) async fn revoke(
    State(st): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let rid = request_id();
    let peer = peer.map(|Extension(Peer(addr))| addr.ip());
    match once_admitted(&st, || handle(&st, &rid, peer, &headers, body)).await {
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
    Job(Owner),
    /// A verified token without sub or run id: owns nothing.
    Nobody,
}

impl Caller {
    fn owns(&self, rec: &ExchangeRecord) -> bool {
        match self {
            // Comparing hashes: timing reveals nothing about the handle.
            Caller::Handle(hash) => *hash == rec.handle_sha256,
            Caller::Job(o) => rec.owner.as_ref() == Some(o),
            Caller::Nobody => false,
        }
    }
}

async fn handle(
    st: &AppState,
    rid: &str,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let secret = bearer(headers)?;
    let req: RevokeRequest = json_body(body, r#"{"request_id": "<the exchange's request_id>"}"#)?;
    let mut event = Event::revoke(rid, &req.request_id);
    if let Some(ip) = peer {
        event.source(ip);
    }
    match run(st, peer, secret, &req.request_id, &mut event).await {
        Err(stop) => {
            record(st, event.refused(*stop.refusal)).await?;
            Err(stop.api)
        }
        Ok(revoked) => {
            record(st, event.revocation_done(revoked)).await?;
            tracing::info!(request_id = %rid, exchange = %req.request_id, revoked, "exchange revoked");
            Ok(
                axum::Json(json!({"request_id": req.request_id, "revoked": revoked}))
                    .into_response(),
            )
        }
    }
}

/// The pipeline: who is asking, their exchange, revoke it. Returns how many
/// items were revoked.
async fn run(
    st: &AppState,
    peer: Option<IpAddr>,
    secret: SecretString,
    exchange: &str,
    event: &mut EventBuilder,
) -> Result<usize, Stop> {
    super::exchange::limit_source(st, peer).await?;
    let caller = authenticate(st, secret, event).await?;
    let rec = take_owned(st, exchange, &caller, event).await?;
    revoke_record(st, rec, event).await
}

/// A handle, or an ID token verified like an exchange's.
async fn authenticate(
    st: &AppState,
    secret: SecretString,
    event: &mut EventBuilder,
) -> Result<Caller, Stop> {
    match RevocationHandle::from_bearer(secret) {
        Ok(handle) => {
            event.auth(Auth::Handle);
            Ok(Caller::Handle(handle.sha256()))
        }
        Err(token) => {
            event.auth(Auth::IdToken);
            let v = identity::verify(st, token, event).await?;
            Ok(identity::owner(&v).map_or(Caller::Nobody, Caller::Job))
        }
    }
}

/// Takes the exchange's record from the store if it is the caller's. The
/// audit record gets the exchange's environment and owner once it is
/// found, also when it is not the caller's.
async fn take_owned(
    st: &AppState,
    exchange: &str,
    caller: &Caller,
    event: &mut EventBuilder,
) -> Result<ExchangeRecord, Stop> {
    let unknown = || {
        Stop::new(
            Stage::Revoke,
            ApiError::UnknownExchange,
            &json!({"code": "unknown_exchange"}),
        )
    };
    let Some(rec) = st.exchanges.get(exchange).await.map_err(store_failed)? else {
        return Err(unknown());
    };
    event.exchange_found(&rec.environment, rec.owner.as_ref());
    if !caller.owns(&rec) {
        return Err(unknown());
    }
    // `None`: revoked concurrently.
    st.exchanges
        .take(exchange)
        .await
        .map_err(store_failed)?
        .ok_or_else(unknown)
}

fn store_failed(e: ExchangeStoreError) -> Stop {
    tracing::error!(error = %e, "reading the exchange store failed");
    Stop::new(
        Stage::Store,
        ApiError::StoreUnavailable,
        &json!({"message": e.to_string()}),
    )
}

/// Revokes every item; what Vault refused is stored again for a retry.
async fn revoke_record(
    st: &AppState,
    rec: ExchangeRecord,
    event: &mut EventBuilder,
) -> Result<usize, Stop> {
    let (revoked, failed) = crate::issue::revoke_all(&st.vault, &rec.revocables).await;
    if failed.is_empty() {
        return Ok(revoked);
    }
    event.revoked(revoked);
    let left = failed.len();
    let rest = ExchangeRecord {
        revocables: failed,
        ..rec
    };
    let restored = st.exchanges.put(&rest).await.is_ok();
    Err(Stop::new(
        Stage::Vault,
        ApiError::RevokeIncomplete,
        &json!({"message": format!("{left} credential(s) could not be revoked"), "kept_for_retry": restored}),
    ))
}
