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
use crate::policy::{CredentialSource, Decision, Grant, Request};
use crate::secret::SecretString;
use crate::token::VerifiedToken;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeRequest {
    environment: String,
    #[serde(default)]
    credentials: Vec<String>,
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

    let verified = match st.verifier.verify(token.expose_secret()).await {
        Ok(v) => v,
        Err(e) => {
            event.insert("decision".into(), json!("deny"));
            event.insert("stage".into(), json!("token"));
            event.insert(
                "reason".into(),
                json!({"code": e.code(), "message": e.to_string()}),
            );
            record(st, event).await?;
            return Err(ApiError::Token(e));
        }
    };
    drop(token);
    event.insert("identity".into(), identity(&verified));

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

    let mut issued = Vec::with_capacity(grants.len());
    for g in &grants {
        match fetch(st, g).await {
            Ok(values) => issued.push((g, values)),
            Err(e) => {
                // Nothing partial leaves: `issued` is dropped (and zeroized).
                // Vault down, or jobkey's own login failing: the job may
                // retry (503). Anything else is a broker misconfiguration.
                let unavailable =
                    e.is_unavailable() || matches!(e, crate::vault::VaultError::Login { .. });
                tracing::warn!(%request_id, credential = %g.credential, error = %e, "reading a credential from Vault failed");
                event.insert("decision".into(), json!("error"));
                event.insert("stage".into(), json!("vault"));
                event.insert(
                    "reason".into(),
                    json!({"credential": g.credential, "message": e.to_string()}),
                );
                record(st, event).await?;
                return Err(if unavailable {
                    ApiError::VaultUnavailable
                } else {
                    ApiError::VaultFailed
                });
            }
        }
    }

    let now = SystemTime::now();
    let audited: Vec<Value> = grants
        .iter()
        .map(|g| json!({"name": g.credential, "rule": g.rule, "ttl_s": g.ttl.as_secs(), "kind": kind(&g.source)}))
        .collect();
    event.insert("decision".into(), json!("allow"));
    event.insert("credentials".into(), Value::Array(audited));
    record(st, event).await?;

    let masks = crate::mask::masks(issued.iter().flat_map(|(_, v)| v.values()));
    let body = ExchangeResponse {
        request_id,
        environment: &req.environment,
        credentials: issued
            .iter()
            .map(|(g, values)| {
                (
                    g.credential.as_str(),
                    CredentialOut {
                        kind: kind(&g.source),
                        rule: &g.rule,
                        ttl_seconds: g.ttl.as_secs(),
                        expires_at: expires(now, g.ttl),
                        values: values
                            .iter()
                            .map(|(k, v)| (k.as_str(), Exposed(v)))
                            .collect(),
                    },
                )
            })
            .collect(),
        mask: masks.iter().map(Exposed).collect(),
    };
    tracing::info!(%request_id, environment = %req.environment, issuer = %verified.issuer, credentials = grants.len(), "exchange allowed");
    Ok(axum::Json(body).into_response())
}

async fn fetch(
    st: &AppState,
    g: &Grant,
) -> Result<BTreeMap<String, SecretString>, crate::vault::VaultError> {
    match &g.source {
        CredentialSource::Kv {
            mount,
            path,
            fields,
        } => st.vault.read_kv(mount, path, fields.as_deref()).await,
        _ => Err(crate::vault::VaultError::Config {
            reason: "not yet".into(),
        }),
    }
}

fn kind(source: &CredentialSource) -> &'static str {
    source.kind()
}

fn expires(now: SystemTime, ttl: Duration) -> String {
    humantime::format_rfc3339_seconds(now + ttl).to_string()
}

/// Writes the audit record; failure means no credential may leave.
async fn record(st: &AppState, event: Map<String, Value>) -> Result<(), ApiError> {
    st.audit.append(event).await.map_err(|e| {
        tracing::error!(error = %e, "writing the audit log failed; refusing the exchange");
        ApiError::AuditUnavailable
    })
}

fn identity(v: &VerifiedToken) -> Value {
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

fn bearer(headers: &HeaderMap) -> Result<SecretString, ApiError> {
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

fn parse_body(body: Result<Bytes, BytesRejection>) -> Result<ExchangeRequest, ApiError> {
    let bytes = body.map_err(|e| ApiError::BadRequest {
        code: if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_request"
        },
        message: format!("could not read the request body: {}", e.body_text()),
    })?;
    let req: ExchangeRequest = serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest {
        code: "bad_request",
        message: format!(
            "the body must be JSON like {{\"environment\": \"production\", \"credentials\": [\"deploy-db\"]}}: {e}"
        ),
    })?;
    if req.environment.is_empty() {
        return Err(ApiError::BadRequest {
            code: "bad_request",
            message: "`environment` must name an environment, e.g. \"production\"".into(),
        });
    }
    Ok(req)
}

fn request_id() -> String {
    let mut b = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Serialize)]
struct ExchangeResponse<'a> {
    request_id: &'a str,
    environment: &'a str,
    credentials: BTreeMap<&'a str, CredentialOut<'a>>,
    mask: Vec<Exposed<'a>>,
}

#[derive(Serialize)]
struct CredentialOut<'a> {
    kind: &'static str,
    rule: &'a str,
    ttl_seconds: u64,
    expires_at: String,
    values: BTreeMap<&'a str, Exposed<'a>>,
}

/// Serializes a secret into the response body — the only place secrets are
/// serialized.
struct Exposed<'a>(&'a SecretString);

impl Serialize for Exposed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.expose_secret())
    }
}
