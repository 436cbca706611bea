//! `POST /v1/exchange`: token in, decision, credentials out — audited first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::{ApiError, AppState};
use crate::audit;
use crate::exchanges::{ExchangeRecord, Owner, RevocationHandle};
use crate::issue::{self, IssueError};
use crate::policy::{Decision, Request};
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

/// Claims copied into the audit record (scalars only): who ran what, where.
const AUDITED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "jti",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "ref",
    "ref_type",
    "ref_protected",
    "sha",
    "environment",
    "event_name",
    "workflow_ref",
    "job_workflow_ref",
    "runner_environment",
    "actor",
    "user_login",
    "run_id",
    "run_attempt",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    // Buildkite: the organisation (shared issuer), pipeline and build.
    "organization_slug",
    "organization_id",
    "pipeline_slug",
    "build_number",
    "build_branch",
    "step_key",
];

pub async fn exchange(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let request_id = request_id();
    match handle(&st, &request_id, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::info!(%request_id, code = e.code(), status = e.status().as_u16(), "exchange refused");
            e.into_response_with(&request_id)
        }
    }
}

async fn handle(
    st: &AppState,
    request_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(headers)?;
    let req = parse_body(body)?;
    let mut event = Map::new();
    event.insert("time".into(), json!(audit::timestamp()));
    event.insert("request_id".into(), json!(request_id));
    event.insert("environment".into(), json!(req.environment));
    event.insert("requested".into(), json!(req.credentials));

    let verified = verify_audited(st, &token, &mut event).await?;
    drop(token);

    let policies = st.policies.load();
    let decision = policies.decide(&Request {
        environment: &req.environment,
        issuer: &verified.issuer,
        claims: &verified.claims,
        credentials: &req.credentials,
    });
    let grants = match decision {
        Decision::Allow(grants) => grants,
        Decision::Deny(reason) => {
            event.insert("decision".into(), json!("deny"));
            event.insert("stage".into(), json!("policy"));
            event.insert(
                "reason".into(),
                serde_json::to_value(&reason).unwrap_or(Value::Null),
            );
            record(st, event).await?;
            let failed_claims = reason.failed_claims();
            let message = if failed_claims.is_empty() {
                format!(
                    "denied by the `{}` policy ({})",
                    req.environment,
                    reason.code()
                )
            } else {
                format!(
                    "denied by the `{}` policy: these claims did not match: {}",
                    req.environment,
                    failed_claims.join(", ")
                )
            };
            return Err(ApiError::Denied {
                code: reason.code(),
                message,
                failed_claims,
            });
        }
    };

    // The revocation handle exists before anything is issued, so that a
    // failure to make one leaves nothing behind.
    let handle = match RevocationHandle::mint() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(%request_id, error = %e, "no revocation handle; refusing the exchange");
            event.insert("decision".into(), json!("error"));
            event.insert("stage".into(), json!("internal"));
            event.insert("reason".into(), json!({"message": e.to_string()}));
            record(st, event).await?;
            return Err(ApiError::Internal);
        }
    };
    let ctx = issue::Context {
        claims: &verified.claims,
        request_id,
        requested_ttl: req.ttl,
        ssh_public_key: req.ssh_public_key.as_deref(),
    };
    let issued = match issue::issue_all(&st.vault, &grants, &ctx).await {
        Ok(issued) => issued,
        Err((credential, e)) => {
            // Nothing partial leaves: what was issued has been revoked.
            tracing::warn!(%request_id, %credential, error = %e, "issuing a credential failed");
            let (stage, api) = match &e {
                IssueError::Vault(v) => (
                    "vault",
                    if v.is_retryable() {
                        ApiError::VaultUnavailable
                    } else {
                        ApiError::VaultFailed
                    },
                ),
                IssueError::Claim(t) => (
                    "credential",
                    ApiError::ClaimNotUsable {
                        message: format!("credential `{credential}`: {t}"),
                    },
                ),
                IssueError::Request(m) => (
                    "credential",
                    ApiError::BadRequest {
                        code: "bad_request",
                        message: format!("credential `{credential}`: {m}"),
                    },
                ),
            };
            event.insert("decision".into(), json!("error"));
            event.insert("stage".into(), json!(stage));
            event.insert(
                "reason".into(),
                json!({"credential": credential, "message": e.to_string()}),
            );
            record(st, event).await?;
            return Err(api);
        }
    };

    // Remember what can be revoked, then audit, then answer. If either
    // step fails, everything issued is revoked again.
    let now = SystemTime::now();
    let longest = issued.iter().map(|i| i.ttl).max().unwrap_or_default();
    let rec = ExchangeRecord {
        request_id: request_id.to_owned(),
        environment: req.environment.clone(),
        handle_sha256: handle.sha256(),
        owner: owner(&verified),
        revocables: issued.iter().flat_map(|i| i.revocables.clone()).collect(),
        expires_at: unix(now + longest),
    };
    if let Err(e) = st.exchanges.put(&rec).await {
        tracing::error!(%request_id, error = %e, "recording the exchange failed; revoking what was issued");
        issue::revoke_all(&st.vault, &rec.revocables).await;
        event.insert("decision".into(), json!("error"));
        event.insert("stage".into(), json!("lease_store"));
        event.insert("reason".into(), json!({"message": e.to_string()}));
        record(st, event).await?;
        return Err(ApiError::StoreUnavailable);
    }

    let audited: Vec<Value> = grants
        .iter()
        .zip(&issued)
        .map(|(g, i)| {
            // Keyed fingerprints, never values: `jobkey audit find` maps a
            // leaked value back to this line.
            let fingerprints: Map<String, Value> = i
                .values
                .iter()
                .map(|(field, v)| (field.clone(), json!(st.fingerprints.fingerprint(v.expose_secret()))))
                .collect();
            json!({"name": g.credential, "rule": g.rule, "ttl_s": i.ttl.as_secs(), "kind": i.kind, "wrapped": i.wrapped, "fingerprints": fingerprints})
        })
        .collect();
    event.insert("decision".into(), json!("allow"));
    event.insert("credentials".into(), Value::Array(audited));
    event.insert("revocable".into(), json!(rec.revocables.len()));
    if let Err(e) = record(st, event).await {
        issue::revoke_all(&st.vault, &rec.revocables).await;
        let _ = st.exchanges.take(request_id).await;
        return Err(e);
    }

    let hints = crate::mask::hints(
        grants
            .iter()
            .zip(&issued)
            .flat_map(|(g, i)| {
                i.values
                    .iter()
                    .map(move |(field, s)| (format!("{}.{field}", g.credential), s))
            })
            .chain(std::iter::once((
                "revocation.handle".to_owned(),
                handle.as_secret(),
            ))),
    );
    let body = ExchangeResponse {
        request_id,
        environment: &req.environment,
        credentials: grants
            .iter()
            .zip(&issued)
            .map(|(g, i)| {
                (
                    g.credential.as_str(),
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
                    },
                )
            })
            .collect(),
        mask: hints.mask.iter().map(Exposed).collect(),
        mask_warnings: &hints.warnings,
        revocation: RevocationOut {
            handle: Exposed(handle.as_secret()),
            expires_at: expires(now, longest),
        },
    };
    tracing::info!(%request_id, environment = %req.environment, issuer = %verified.issuer, credentials = grants.len(), "exchange allowed");
    Ok(axum::Json(body).into_response())
}

/// The job's identity for revocation by ID token: issuer name, `sub` and
/// the run (GitHub `run_id`, GitLab `pipeline_id`). `None` when any is
/// missing; then only the handle can revoke.
pub(super) fn owner(v: &VerifiedToken) -> Option<Owner> {
    let text = |name: &str| match v.claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(n @ Value::Number(_)) => Some(n.to_string()),
        _ => None,
    };
    Some(Owner {
        issuer: v.issuer.clone(),
        sub: text("sub")?,
        run: text("run_id").or_else(|| text("pipeline_id"))?,
    })
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn expires(now: SystemTime, ttl: Duration) -> String {
    humantime::format_rfc3339_seconds(now + ttl).to_string()
}

/// Verifies an ID token. A refusal is audited (`decision: deny`, `stage:
/// token`) before the error returns; an accepted token's identity is added
/// to `event`.
pub(super) async fn verify_audited(
    st: &AppState,
    token: &SecretString,
    event: &mut Map<String, Value>,
) -> Result<VerifiedToken, ApiError> {
    match st.verifier.verify(token.expose_secret()).await {
        Ok(v) => {
            event.insert("identity".into(), identity(&v));
            Ok(v)
        }
        Err(e) => {
            event.insert("decision".into(), json!("deny"));
            event.insert("stage".into(), json!("token"));
            event.insert(
                "reason".into(),
                json!({"code": e.code(), "message": e.to_string()}),
            );
            record(st, std::mem::take(event)).await?;
            Err(ApiError::Token(e))
        }
    }
}

/// Writes the audit record; failure means no credential may leave.
pub(super) async fn record(st: &AppState, event: Map<String, Value>) -> Result<(), ApiError> {
    st.audit.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "writing the audit log failed; refusing the exchange");
        ApiError::AuditUnavailable
    })
}

pub(super) fn identity(v: &VerifiedToken) -> Value {
    let mut m = Map::new();
    m.insert("issuer".into(), json!(v.issuer));
    for name in AUDITED_CLAIMS {
        if let Some(val) = v.claims.get(*name)
            && (val.is_string() || val.is_number() || val.is_boolean())
        {
            m.insert((*name).into(), val.clone());
        }
    }
    Value::Object(m)
}

pub(super) fn bearer(headers: &HeaderMap) -> Result<SecretString, ApiError> {
    let Some(h) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Err(ApiError::Token(crate::token::TokenError::Missing));
    };
    let s = h.to_str().map_err(|_| {
        ApiError::Token(crate::token::TokenError::Malformed(
            "the Authorization header is not ASCII",
        ))
    })?;
    let (scheme, rest) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
        return Err(ApiError::Token(crate::token::TokenError::Missing));
    }
    Ok(SecretString::new(rest.trim().to_owned()))
}

/// The checked request.
struct Parsed {
    environment: String,
    credentials: Vec<String>,
    ttl: Option<Duration>,
    ssh_public_key: Option<String>,
}

/// Reads a JSON request body strictly; errors say what to send, by example.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| ApiError::BadRequest {
        code: if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_request"
        },
        message: format!("could not read the request body: {}", e.body_text()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "bad_request",
        message: format!("the body must be JSON like {example}: {e}"),
    })
}

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<Parsed, ApiError> {
    let raw: ExchangeRequest = json_body(
        body,
        r#"{"environment": "production", "credentials": ["deploy-db"]}"#,
    )?;
    if raw.environment.is_empty() {
        return Err(ApiError::BadRequest {
            code: "bad_request",
            message: "`environment` must name an environment, e.g. \"production\"".into(),
        });
    }
    let ttl = match raw.ttl.as_deref() {
        None => None,
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if !d.is_zero() => Some(d),
            _ => {
                return Err(ApiError::BadRequest {
                    code: "bad_request",
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

#[derive(Serialize)]
struct ExchangeResponse<'a> {
    request_id: &'a str,
    environment: &'a str,
    credentials: BTreeMap<&'a str, CredentialOut<'a>>,
    mask: Vec<Exposed<'a>>,
    mask_warnings: &'a [String],
    revocation: RevocationOut<'a>,
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

/// Serializes a secret into the response body — the only place secrets are
/// serialized.
pub(super) struct Exposed<'a>(pub(super) &'a SecretString);

impl Serialize for Exposed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}
