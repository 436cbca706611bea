//! `POST /v1/exchange`: token in, decision, credentials out — audited first.
//!
//! [`run`] is the pipeline, one named step each: the source's rate limit,
//! verify the token, the identity's rate limit, decide, mint the revocation
//! handle, spend a single-use token, issue, remember the exchange. The
//! first step that stops ends the exchange. Whatever the outcome, [`handle`] writes the
//! one audit record, and only then answers. If the record cannot be
//! written, everything issued is revoked and nothing leaves.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;

use super::audited::{Stop, once_admitted, record};
use super::request::{bearer, json_body, request_id};
use super::{ApiError, AppState, Peer, identity};
use crate::audit::{Event, EventBuilder, Fingerprinter, IssuedCredential, Stage};
use crate::exchanges::{ExchangeRecord, RevocationHandle};
use crate::issue::{self, IssueError, Issued};
use crate::limits::{ReplayKey, Scope, Spend, Verdict, retry_after_secs};
use crate::mask::{Form, MaskCache, Masks, ValueHints};
use crate::metrics;
use crate::policy::{Decision, DenyReason, Grant, Request};
use crate::secret::SecretString;
use crate::token::VerifiedToken;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    environment: String,
    #[serde(default)]
    credentials: Vec<String>,
    /// The job's requested TTL (humantime); only ever lowers a TTL.
    #[serde(default)]
    ttl: Option<String>,
    /// For SSH-certificate credentials: the key to sign.
    #[serde(default)]
    ssh_public_key: Option<String>,
}

/// The checked request.
struct Parsed {
    environment: String,
    credentials: Vec<String>,
    ttl: Option<Duration>,
    ssh_public_key: Option<String>,
}

pub(super) async fn exchange(
    State(st): State<Arc<AppState>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let request_id = request_id();
    let peer = peer.map(|Extension(Peer(addr))| addr.ip());
    let mut environment = metrics::UNKNOWN_ENVIRONMENT.to_owned();
    let answered = once_admitted(&st, || {
        handle(&st, &request_id, peer, &headers, body, &mut environment)
    })
    .await;
    let (outcome, code) = match &answered {
        Ok(_) => (metrics::Outcome::Allow, "ok"),
        Err(e) if e.status().is_client_error() => (metrics::Outcome::Deny, e.code()),
        Err(e) => (metrics::Outcome::Error, e.code()),
    };
    metrics::exchange(&environment, outcome, code, started.elapsed());
    match answered {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(%request_id, code = e.code(), status = e.status().as_u16(), "exchange refused");
            e.into_response_with(&request_id)
        }
    }
}

/// The metrics' environment label: the name when a policy names that
/// environment, otherwise `"unknown"` (a job chooses the name it sends).
fn environment_label(st: &AppState, environment: &str) -> String {
    if st.policies.load().environments().any(|e| e == environment) {
        environment.to_owned()
    } else {
        metrics::UNKNOWN_ENVIRONMENT.to_owned()
    }
}

/// Requests refused before they start (too many in flight, the audit log
/// unwritable, no bearer token, a bad body) are answered without an audit
/// record; every other one gets exactly one (or, a repeated refusal, is
/// counted in one: see `crate::audit`).
async fn handle(
    st: &AppState,
    request_id: &str,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    environment: &mut String,
) -> Result<Response, ApiError> {
    let token = bearer(headers)?;
    let req = parse_body(body)?;
    *environment = environment_label(st, &req.environment);
    let mut event = Event::exchange(request_id, &req.environment, &req.credentials);
    if let Some(ip) = peer {
        event.source(ip);
    }
    match run(st, request_id, peer, token, &req, &mut event).await {
        Err(stop) => {
            record(st, event.refused(*stop.refusal)).await?;
            Err(stop.api)
        }
        Ok(done) => {
            let revocables = done.revocables();
            let line = event.allow(done.audited(&st.fingerprints), revocables.len());
            if let Err(e) = record(st, line).await {
                issue::revoke_all(&st.vault, revocables).await;
                if done.kept.is_some() {
                    let _ = st.exchanges.take(request_id).await;
                }
                give_back(st, done.spent.as_ref()).await;
                return Err(e);
            }
            tracing::info!(%request_id, environment = %req.environment, issuer = %done.issuer, credentials = done.grants.len(), "exchange allowed");
            Ok(done.respond(&st.masks, request_id, &req.environment))
        }
    }
}

/// What an allowed exchange produced, not yet audited or sent.
struct Done {
    issuer: String,
    grants: Vec<Grant>,
    issued: Vec<Issued>,
    /// `None` when nothing issued can be revoked (say, KV reads): then
    /// nothing is kept and the response carries no revocation handle.
    kept: Option<Kept>,
    now: SystemTime,
    /// The single-use token's mark, when its issuer has `single_use`.
    spent: Option<ReplayKey>,
}

/// An exchange remembered in the store, and the handle that revokes it.
struct Kept {
    handle: RevocationHandle,
    record: ExchangeRecord,
}

/// The pipeline. `event` receives the caller's identity on the way.
async fn run(
    st: &AppState,
    request_id: &str,
    peer: Option<IpAddr>,
    token: SecretString,
    req: &Parsed,
    event: &mut EventBuilder,
) -> Result<Done, Stop> {
    limit_source(st, peer).await?;
    let token_sha256 = crate::limits::token_sha256(token.expose_secret());
    let verified = identity::verify(st, token, event).await?;
    limit_identity(st, req, &verified).await?;
    let grants = decide(st, req, &verified)?;
    let handle = mint_handle(request_id)?;
    let spent = spend(st, &verified, &token_sha256).await?;
    let issued = match issue_grants(st, request_id, req, &verified, &grants).await {
        Ok(issued) => issued,
        Err(stop) => {
            give_back(st, spent.as_ref()).await;
            return Err(stop);
        }
    };
    let now = SystemTime::now();
    let kept = if issued.iter().all(|i| i.revocables.is_empty()) {
        None
    } else {
        match remember(st, request_id, req, &verified, &handle, &issued, now).await {
            Ok(record) => Some(Kept { handle, record }),
            Err(stop) => {
                give_back(st, spent.as_ref()).await;
                return Err(stop);
            }
        }
    };
    Ok(Done {
        issuer: verified.issuer,
        grants,
        issued,
        kept,
        now,
        spent,
    })
}

/// The caller's source address within its rate limit, before any work
/// on the token (exchanges and revocations share it).
pub(super) async fn limit_source(st: &AppState, peer: Option<IpAddr>) -> Result<(), Stop> {
    limited(Scope::Source, st.limits.check_source(peer).await)
}

/// The verified identity within its rate limit (the environment's own,
/// when it has one), before the policy and Vault.
async fn limit_identity(st: &AppState, req: &Parsed, verified: &VerifiedToken) -> Result<(), Stop> {
    limited(
        Scope::Identity,
        st.limits.check_identity(&req.environment, verified).await,
    )
}

fn limited(scope: Scope, verdict: Verdict) -> Result<(), Stop> {
    let Verdict::Limited { retry_after } = verdict else {
        return Ok(());
    };
    metrics::refused(metrics::Refusal::RateLimit);
    let retry_after_s = retry_after_secs(retry_after);
    Err(Stop::new(
        Stage::RateLimit,
        ApiError::RateLimited { retry_after_s },
        &json!({"limit": scope.name(), "retry_after_s": retry_after_s}),
    ))
}

/// A token of a `single_use` issuer is marked spent before anything is
/// issued; a second exchange with it is refused. The shared state down
/// refuses too: without it, a replay cannot be ruled out.
async fn spend(
    st: &AppState,
    verified: &VerifiedToken,
    token_sha256: &str,
) -> Result<Option<ReplayKey>, Stop> {
    let Some(key) = st.replay.key_for(verified, token_sha256) else {
        return Ok(None);
    };
    match st.replay.spend(&key).await {
        Ok(Spend::First) => Ok(Some(key)),
        Ok(Spend::Replayed) => {
            metrics::refused(metrics::Refusal::Replay);
            Err(Stop::new(
                Stage::Replay,
                ApiError::TokenReplayed,
                &json!({"code": "token_replayed"}),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "the replay cache failed; refusing a single-use token");
            Err(Stop::new(
                Stage::Replay,
                ApiError::StateUnavailable,
                &json!({"message": e.to_string()}),
            ))
        }
    }
}

/// An exchange that issued nothing (or took it all back) gives its
/// single-use token back, so the job's retry with it can succeed.
async fn give_back(st: &AppState, spent: Option<&ReplayKey>) {
    if let Some(key) = spent {
        st.replay.release(key).await;
    }
}

/// The policy's decision. A denial names the failed claims, never the
/// expected values (those are in the audit record), unless the environment
/// reports none (`report_failed_claims: false`): then every denial is the
/// same `policy_denied` with the same message. An environment without a
/// policy is said to be one, naming no other.
fn decide(st: &AppState, req: &Parsed, verified: &VerifiedToken) -> Result<Vec<Grant>, Stop> {
    let policies = st.policies.load();
    let decision = policies.decide(&Request {
        environment: &req.environment,
        issuer: &verified.issuer,
        claims: &verified.claims,
        credentials: &req.credentials,
    });
    let reason = match decision {
        Decision::Allow(grants) => return Ok(grants),
        Decision::Deny(reason) => reason,
    };
    let env = crate::audit::bounded(&req.environment);
    let api = if let DenyReason::UnknownEnvironment { .. } = reason {
        ApiError::Denied {
            code: reason.code(),
            message: format!(
                "there is no policy for the environment `{env}`: check the environment name the job asks for"
            ),
            failed_claims: None,
        }
    } else if !policies.reports_failed_claims(&req.environment) {
        ApiError::Denied {
            code: "policy_denied",
            message: format!("denied by the `{env}` policy"),
            failed_claims: None,
        }
    } else {
        let failed_claims = reason.failed_claims();
        let message = if failed_claims.is_empty() {
            format!("denied by the `{env}` policy ({})", reason.code())
        } else {
            format!(
                "denied by the `{env}` policy: these claims did not match: {}",
                failed_claims.join(", ")
            )
        };
        ApiError::Denied {
            code: reason.code(),
            message,
            failed_claims: Some(failed_claims),
        }
    };
    Err(Stop::new(Stage::Policy, api, &reason))
}

/// The revocation handle exists before anything is issued, so that a
/// failure to make one leaves nothing behind.
fn mint_handle(request_id: &str) -> Result<RevocationHandle, Stop> {
    RevocationHandle::mint().map_err(|e| {
        tracing::error!(%request_id, error = %e, "no revocation handle; refusing the exchange");
        Stop::new(
            Stage::Internal,
            ApiError::Internal,
            &json!({"message": e.to_string()}),
        )
    })
}

/// Every grant, or nothing: on a failure what was issued is revoked.
async fn issue_grants(
    st: &AppState,
    request_id: &str,
    req: &Parsed,
    verified: &VerifiedToken,
    grants: &[Grant],
) -> Result<Vec<Issued>, Stop> {
    let ctx = issue::Context {
        claims: &verified.claims,
        request_id,
        requested_ttl: req.ttl,
        ssh_public_key: req.ssh_public_key.as_deref(),
    };
    issue::issue_all(&st.vault, grants, &ctx)
        .await
        .map_err(|(credential, e)| {
            tracing::warn!(%request_id, %credential, error = %e, "issuing a credential failed");
            let stage = match e {
                IssueError::Vault(_) => Stage::Vault,
                IssueError::Claim(_) | IssueError::Request(_) => Stage::Credential,
            };
            let reason = json!({"credential": credential, "message": e.to_string()});
            Stop::new(stage, ApiError::from_issue(&credential, &e), &reason)
        })
}

/// Records what can be revoked (and who may revoke it); if the store
/// fails, what was issued is revoked again.
async fn remember(
    st: &AppState,
    request_id: &str,
    req: &Parsed,
    verified: &VerifiedToken,
    handle: &RevocationHandle,
    issued: &[Issued],
    now: SystemTime,
) -> Result<ExchangeRecord, Stop> {
    let longest = issued.iter().map(|i| i.ttl).max().unwrap_or_default();
    let rec = ExchangeRecord {
        request_id: request_id.to_owned(),
        environment: req.environment.clone(),
        handle_sha256: handle.sha256(),
        owner: identity::owner(verified),
        revocables: issued.iter().flat_map(|i| i.revocables.clone()).collect(),
        expires_at: unix(now + longest),
    };
    if let Err(e) = st.exchanges.put(&rec).await {
        tracing::error!(%request_id, error = %e, "recording the exchange failed; revoking what was issued");
        issue::revoke_all(&st.vault, &rec.revocables).await;
        return Err(Stop::new(
            Stage::Store,
            ApiError::StoreUnavailable,
            &json!({"message": e.to_string()}),
        ));
    }
    Ok(rec)
}

impl Done {
    fn revocables(&self) -> &[crate::vault::Revocable] {
        self.kept
            .as_ref()
            .map(|k| k.record.revocables.as_slice())
            .unwrap_or_default()
    }

    /// The audit record's credentials: keyed fingerprints, never values
    /// (`jobkey audit find` maps a leaked value back to this line).
    fn audited(&self, fp: &Fingerprinter) -> Vec<IssuedCredential> {
        self.grants
            .iter()
            .zip(&self.issued)
            .map(|(g, i)| IssuedCredential {
                name: g.credential.clone(),
                rule: g.rule.clone(),
                kind: i.kind.to_owned(),
                ttl_s: i.ttl.as_secs(),
                wrapped: i.wrapped,
                fingerprints: i
                    .values
                    .iter()
                    .map(|(field, v)| (field.clone(), fp.fingerprint(v.expose_secret())))
                    .collect(),
            })
            .collect()
    }

    /// The response: credentials, the mask list, the revocation handle.
    /// The hints of stable values (KV reads) come from the mask cache;
    /// the others, new for every exchange, are computed.
    fn respond(&self, masks: &MaskCache, request_id: &str, environment: &str) -> Response {
        let mut hints = Masks::default();
        for (g, i) in self.grants.iter().zip(&self.issued) {
            for (field, s) in &i.values {
                let label = format!("{}.{field}", g.credential);
                hints.push(if i.stable {
                    masks.get(&label, s)
                } else {
                    Arc::new(ValueHints::compute(&label, s))
                });
            }
        }
        if let Some(k) = &self.kept {
            let handle = ValueHints::compute("revocation.handle", k.handle.as_secret());
            hints.push(Arc::new(handle));
        }
        let longest = self.issued.iter().map(|i| i.ttl).max().unwrap_or_default();
        let mask = hints.mask();
        // The masks' literals, the values (and room for the rest).
        let size = mask.iter().map(|f| f.json_len() + 1).sum::<usize>()
            + self
                .issued
                .iter()
                .flat_map(|i| i.values.values())
                .map(|v| 2 * v.expose_secret().len())
                .sum::<usize>()
            + 2048;
        let body = ExchangeResponse {
            request_id,
            environment,
            credentials: self
                .grants
                .iter()
                .zip(&self.issued)
                .map(|(g, i)| (g.credential.as_str(), CredentialOut::new(g, i, self.now)))
                .collect(),
            mask: mask.into_iter().map(ExposedMask).collect(),
            mask_warnings: hints.warnings().collect(),
            revocation: self.kept.as_ref().map(|k| RevocationOut {
                handle: Exposed(k.handle.as_secret()),
                expires_at: expires(self.now, longest),
            }),
        };
        json_response(&body, size)
    }
}

/// `body` as `application/json`, serialized into one buffer of about its
/// size (`size`): a response carries tens of KiB of masks, and a buffer
/// grown by doubling copied them about ten times over.
fn json_response(body: &impl Serialize, size: usize) -> Response {
    let mut buf = Vec::with_capacity(size);
    match serde_json::to_writer(&mut buf, body) {
        Ok(()) => (
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            Bytes::from(buf),
        )
            .into_response(),
        // Strings, maps of strings and JSON literals always serialize;
        // should that ever fail, the operators hear of it (serde_json's
        // message names the kind of failure, never a value).
        Err(error) => {
            tracing::error!(%error, "the answer could not be serialized; answering 500");
            axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn expires(now: SystemTime, ttl: Duration) -> String {
    humantime::format_rfc3339_seconds(now + ttl).to_string()
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<Parsed, ApiError> {
    let raw: ExchangeRequest = json_body(
        body,
        r#"{"environment": "production", "credentials": ["deploy-db"]}"#,
    )?;
    if raw.environment.is_empty() {
        return Err(ApiError::BadRequest {
            message: "`environment` must name an environment, e.g. \"production\"".into(),
        });
    }
    let ttl = match raw.ttl.as_deref() {
        None => None,
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(ApiError::BadRequest {
                    message: "`ttl` must be a positive duration such as \"10m\"".into(),
                });
            }
        },
    };
    Ok(Parsed {
        environment: raw.environment,
        credentials: raw.credentials,
        ttl,
        ssh_public_key: raw.ssh_public_key,
    })
}

#[derive(Serialize)]
struct ExchangeResponse<'a> {
    request_id: &'a str,
    environment: &'a str,
    credentials: BTreeMap<&'a str, CredentialOut<'a>>,
    mask: Vec<ExposedMask<'a>>,
    mask_warnings: Vec<&'a str>,
    /// Absent when nothing issued can be revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    revocation: Option<RevocationOut<'a>>,
}

#[derive(Serialize)]
struct RevocationOut<'a> {
    handle: Exposed<'a>,
    expires_at: String,
}

#[derive(Serialize)]
struct CredentialOut<'a> {
    kind: &'static str,
    rule: &'a str,
    ttl_seconds: u64,
    expires_at: String,
    values: BTreeMap<&'a str, Exposed<'a>>,
    info: BTreeMap<&'a str, &'a str>,
    wrapped: bool,
}

impl<'a> CredentialOut<'a> {
    fn new(g: &'a Grant, i: &'a Issued, now: SystemTime) -> Self {
        CredentialOut {
            kind: i.kind,
            rule: &g.rule,
            ttl_seconds: i.ttl.as_secs(),
            expires_at: expires(now, i.ttl),
            values: i
                .values
                .iter()
                .map(|(k, v)| (k.as_str(), Exposed(v)))
                .collect(),
            info: i
                .info
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            wrapped: i.wrapped,
        }
    }
}

/// Serializes a secret into the response body — with [`ExposedMask`], the
/// only place secrets are serialized.
struct Exposed<'a>(&'a SecretString);

impl Serialize for Exposed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}

/// A mask in the response body: its JSON literal, made when its hints were
/// computed (`src/mask/form.rs`), copied as it is.
struct ExposedMask<'a>(&'a Form);

impl Serialize for ExposedMask<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.expose_json() {
            Some(json) => json.serialize(s),
            None => s.serialize_str(self.0.value().expose_secret()),
        }
    }
}
