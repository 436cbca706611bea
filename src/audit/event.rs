//! The audit record: one [`Event`] per request, whatever its outcome, and
//! the log's own lines.
//!
//! An exchange or a revocation starts an [`EventBuilder`]
//! ([`Event::exchange`], [`Event::revoke`]), fills it as it goes (the
//! caller's source address and [`Identity`], the exchange's environment and
//! owner), and ends it once: [`EventBuilder::allow`],
//! [`EventBuilder::revocation_done`] or [`EventBuilder::refused`] with a
//! [`Refusal`]. Only a finished `Event` can be appended to the log.
//!
//! The log writes three lines of its own, each an `Event` with its own
//! [`Action`] and no request id: `refusals_summarized` ([`Summary`]: the
//! refusals counted instead of written), `log_recovered` ([`Recovery`]: a
//! torn last line set aside at start-up) and `log_resumed` ([`Outage`]:
//! appends work again after failing).
//!
//! No secret type can enter an `Event`. Its fields are strings, numbers,
//! the enums below, an exchange's [`Owner`], [`Fingerprint`]s (made by the
//! [`Fingerprinter`](super::Fingerprinter), or read back from a log) and,
//! for `reason`, a JSON value made from anything that implements
//! `Serialize`. `SecretString` is none of these and does not implement
//! `Serialize`, so the compiler refuses it:
//!
//! ```compile_fail,E0277
//! use jobkey::{Refusal, Stage};
//! use jobkey::SecretString;
//!
//! let token = SecretString::new("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_owned());
//! // error[E0277]: the trait bound `SecretString: Serialize` is not satisfied
//! let _ = Refusal::deny(Stage::Token, "bad_signature", &token);
//! ```
//!
//! Nor can it be slipped in through a JSON value:
//!
//! ```compile_fail,E0277
//! use jobkey::{Refusal, Stage};
//! use jobkey::SecretString;
//!
//! let token = SecretString::new("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".to_owned());
//! let _ = Refusal::deny(Stage::Token, "bad_signature", &serde_json::json!({"token": token}));
//! ```
//!
//! The same call with a reason that holds no secret compiles, so what the
//! two examples above are refused for is the `SecretString`:
//!
//! ```
//! use jobkey::{Refusal, Stage};
//!
//! let code = "bad_signature".to_owned();
//! let _ = Refusal::deny(Stage::Token, "bad_signature", &code);
//! let _ = Refusal::deny(Stage::Token, "bad_signature", &serde_json::json!({"token": code}));
//! ```
//!
//! Caller-controlled strings (the environment asked for, each requested
//! credential name, the exchange id a revocation names, and every claim of
//! a token that did not verify) are [`bounded`]: a string longer than
//! [`MAX_STRING_BYTES`] is replaced by its length and a SHA-256 prefix, and
//! the requested list keeps at most [`MAX_REQUESTED`] names. A caller that
//! proved nothing cannot make one audit line large.
//!
//! Logs written before the record was typed read back as `Event`s: fields
//! they lack take their serde defaults (`action` is `exchange`, an
//! `identity` is `verified`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::Fingerprint;
use super::checkpoint::Checkpoint;
use crate::exchanges::Owner;

/// Longest caller-controlled string kept as is, in bytes.
pub(crate) const MAX_STRING_BYTES: usize = 128;
/// Most requested credential names kept on one line.
pub(crate) const MAX_REQUESTED: usize = 32;
/// Most claims kept in an identity.
pub(crate) const MAX_IDENTITY_CLAIMS: usize = 48;

/// What the line records: a request (`exchange`, `revoke`), or the log's
/// own housekeeping (`refusals_summarized`, `log_recovered`,
/// `log_resumed`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `POST /v1/exchange` (lines written before `action` existed are
    /// exchanges).
    #[default]
    Exchange,
    /// `POST /v1/revoke`.
    Revoke,
    /// Refusals that were counted instead of written one by one: the
    /// repeats, within one window, of a refusal from the same source at
    /// the same stage with the same code ([`Summary`]).
    RefusalsSummarized,
    /// At start-up, a torn last line (an interrupted write) was moved to a
    /// file beside the log ([`Recovery`]).
    LogRecovered,
    /// Appends failed for a while (a full disk) and work again; the
    /// requests refused meanwhile are counted ([`Outage`]).
    LogResumed,
    /// The chain's head, signed ([`Checkpoint`]): records up to its `seq`
    /// can be shown to exist to whoever kept the checkpoint or the key.
    Checkpoint,
}

/// How the request ended. One meaning each, for both actions: `action`
/// says whether an `allow` granted credentials or revoked them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Done: credentials were issued (exchange), or an exchange's
    /// credentials were revoked (revoke).
    Allow,
    /// Refused because of the request: its token, the policy, a claim or
    /// key the credential needs, or an exchange that is not the caller's.
    /// The caller got a 4xx.
    Deny,
    /// jobkey or a service it depends on failed (Vault, the exchange store,
    /// the issuer's keys, randomness). The caller got a 5xx.
    Error,
}

/// Where a request that was not allowed stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Token verification.
    Token,
    /// The policy decision.
    Policy,
    /// A credential's own needs: a name template's claim, the SSH key.
    Credential,
    /// Vault: issuing, or revoking.
    Vault,
    /// The exchange store (named as the API's `lease_store_unavailable`).
    #[serde(rename = "lease_store")]
    Store,
    /// Revocation: the exchange is unknown or not the caller's.
    Revoke,
    /// jobkey itself (no randomness).
    Internal,
    /// A rate limit, per source or per identity.
    RateLimit,
    /// A single-use token's check: replayed, or the shared state down.
    Replay,
}

/// How a revocation proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// The exchange's revocation handle.
    Handle,
    /// An ID token of the same job.
    IdToken,
}

/// One claim value: a scalar, or (a verified token's claim only) an array
/// or object as the issuer sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ClaimValue {
    Bool(bool),
    Number(Number),
    String(String),
    /// An array or an object (say, an `aud` list): recorded for verified
    /// tokens only, whose size the verifier's token cap bounds.
    Structured(Value),
}

impl ClaimValue {
    /// A scalar claim; `None` for null, arrays and objects.
    fn scalar(v: &Value) -> Option<ClaimValue> {
        match v {
            Value::Bool(b) => Some(ClaimValue::Bool(*b)),
            Value::Number(n) => Some(ClaimValue::Number(n.clone())),
            Value::String(s) => Some(ClaimValue::String(s.clone())),
            _ => None,
        }
    }

    /// Any claim but null.
    fn any(v: &Value) -> Option<ClaimValue> {
        match v {
            Value::Array(_) | Value::Object(_) => Some(ClaimValue::Structured(v.clone())),
            other => Self::scalar(other),
        }
    }

    /// The claim as the token had it.
    pub fn to_json(&self) -> Value {
        match self {
            ClaimValue::Bool(b) => Value::Bool(*b),
            ClaimValue::Number(n) => Value::Number(n.clone()),
            ClaimValue::String(s) => Value::String(s.clone()),
            ClaimValue::Structured(v) => v.clone(),
        }
    }

    /// The value as text (for people: `jobkey audit find`); an array or
    /// object as compact JSON.
    pub fn to_text(&self) -> String {
        match self {
            ClaimValue::Bool(b) => b.to_string(),
            ClaimValue::Number(n) => n.to_string(),
            ClaimValue::String(s) => s.clone(),
            ClaimValue::Structured(v) => v.to_string(),
        }
    }
}

fn yes() -> bool {
    true
}

/// Who made the request: the issuer's configured name and the audited
/// claims, flat (`identity.repository`, `identity.run_id`, …).
///
/// `verified: false` marks the claims of a token that was refused: read
/// without verification (anyone can write them), bounded, and with no
/// issuer name (the issuer was not established).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Identity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    issuer: Option<String>,
    #[serde(default = "yes")]
    verified: bool,
    #[serde(flatten)]
    claims: BTreeMap<String, ClaimValue>,
}

impl Identity {
    /// A verified token's identity: `issuer` (the configured name) and
    /// every claim of the token (claims are not secrets, and with all of
    /// them a decision can be replayed: `jobkey policy replay`).
    pub fn verified(issuer: &str, claims: &Map<String, Value>) -> Identity {
        Identity {
            issuer: Some(issuer.to_owned()),
            verified: true,
            claims: claims
                .iter()
                .filter(|(name, _)| !is_identity_field(name))
                .filter_map(|(name, v)| Some((name.clone(), ClaimValue::any(v)?)))
                .collect(),
        }
    }

    /// A refused token's claims, read without verification: the scalar
    /// claims among `names`, each string [`bounded`], at most
    /// [`MAX_IDENTITY_CLAIMS`].
    pub fn unverified(claims: &Map<String, Value>, names: &[&str]) -> Identity {
        Identity {
            issuer: None,
            verified: false,
            claims: pick(claims, names)
                .map(|(k, v)| match v {
                    ClaimValue::String(s) => (k, ClaimValue::String(bounded(&s))),
                    other => (k, other),
                })
                .take(MAX_IDENTITY_CLAIMS)
                .collect(),
        }
    }

    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    pub fn is_verified(&self) -> bool {
        self.verified
    }

    pub fn claim(&self, name: &str) -> Option<&ClaimValue> {
        self.claims.get(name)
    }
}

/// `issuer` and `verified` are the identity's own fields: claims of those
/// names are not recorded.
fn is_identity_field(name: &str) -> bool {
    matches!(name, "issuer" | "verified")
}

fn pick<'a>(
    claims: &'a Map<String, Value>,
    names: &'a [&str],
) -> impl Iterator<Item = (String, ClaimValue)> + 'a {
    names.iter().filter_map(|name| {
        if is_identity_field(name) {
            return None;
        }
        let v = ClaimValue::scalar(claims.get(*name)?)?;
        Some(((*name).to_owned(), v))
    })
}

/// One issued credential: what, under which rule, for how long, and a
/// keyed fingerprint of each secret field (never the value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct IssuedCredential {
    pub name: String,
    pub rule: String,
    pub kind: String,
    /// The actual TTL, in seconds.
    pub ttl_s: u64,
    pub wrapped: bool,
    pub fingerprints: BTreeMap<String, Fingerprint>,
}

/// Why a request was not allowed: the decision (`deny` or `error`), the
/// stage, the error code the caller got, and the detail for the auditor.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    decision: Decision,
    stage: Stage,
    code: String,
    reason: Value,
}

impl Refusal {
    /// Refused because of the request (the caller got a 4xx).
    pub fn deny(stage: Stage, code: &str, reason: &impl Serialize) -> Refusal {
        Self::new(Decision::Deny, stage, code, reason)
    }

    /// jobkey or a service it needs failed (the caller got a 5xx).
    pub fn error(stage: Stage, code: &str, reason: &impl Serialize) -> Refusal {
        Self::new(Decision::Error, stage, code, reason)
    }

    fn new(decision: Decision, stage: Stage, code: &str, reason: &impl Serialize) -> Refusal {
        Refusal {
            decision,
            stage,
            code: code.to_owned(),
            reason: serde_json::to_value(reason).unwrap_or(Value::Null),
        }
    }

    pub fn decision(&self) -> Decision {
        self.decision
    }
}

/// What a `refusals_summarized` line counts: the refusals of one key (the
/// line's `source`, `action` in `of`, `stage`, `code`, and for a verified
/// caller its `subject`, `jti` and `environment`) that were counted instead
/// of written, between `first` and `last`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Summary {
    /// The requests' action (`exchange` or `revoke`).
    pub of: Action,
    /// How many refusals were counted (not written one by one).
    pub count: u64,
    /// When the first and the last of them arrived.
    pub first: String,
    pub last: String,
    /// Their request ids (in the response and jobkey's own log).
    pub first_request_id: String,
    pub last_request_id: String,
    /// The window's length, in seconds.
    pub window_s: u64,
    /// A verified caller: the issuer's configured name and `sub`, and the
    /// token's `jti`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// `true`: refusals from sources the table had no room for, counted
    /// together (the line has no `source`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overflow: bool,
}

/// What a `log_recovered` line says: the torn last line found at start-up
/// and where it was put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Recovery {
    /// The file beside the log that now holds the torn bytes.
    pub set_aside: String,
    /// Its line number in the log, its size and its SHA-256.
    pub line: u64,
    pub bytes: u64,
    pub sha256: String,
    /// What was wrong with it.
    pub why: String,
}

/// What a `log_resumed` line says: appends failed from `since` until the
/// line's `time`; `refused` requests were answered `audit_unavailable`
/// meanwhile; `error` is the first failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Outage {
    pub since: String,
    pub refused: u64,
    pub error: String,
}

/// One line of the audit log (without `seq`, `prev` and `hash`, which
/// [`AuditLog::append`](super::AuditLog::append) adds). Field order does
/// not matter: the line's keys are written sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Event {
    /// The record format's version ([`VERSION`]); records written before
    /// it existed are version 1.
    #[serde(default = "version_1")]
    version: u32,
    time: String,
    /// A request's id (the log's own lines have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
    #[serde(default)]
    action: Action,
    /// A request's outcome; a summary's refusals' outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    /// For `deny`/`error`: the error code the caller got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stage: Option<Stage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<Value>,
    /// The caller's address (without the port); on a summary, the
    /// source counted (an IPv6 caller's /64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    /// The environment asked for (exchange), or the revoked exchange's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    environment: Option<String>,
    /// Exchange: the credential names asked for (empty: all granted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested: Option<Vec<String>>,
    /// Exchange: how many more names were asked for than kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested_omitted: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<Identity>,
    /// Exchange `allow`: what was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials: Option<Vec<IssuedCredential>>,
    /// Exchange `allow`: how many items were recorded for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revocable: Option<usize>,
    /// Revoke: the exchange's request id, as the caller named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exchange: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<Auth>,
    /// Revoke: how many items were revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<usize>,
    /// Revoke: whose exchange it was, when it was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<OwnerRecord>")]
    exchange_owner: Option<Owner>,
    /// `refusals_summarized`: what was counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
    /// `log_recovered`: the torn line set aside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recovery: Option<Recovery>,
    /// `log_resumed`: the failed appends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outage: Option<Outage>,
    /// The replica that wrote the line (`[audit] replica_id`), set by the
    /// log when it writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    replica: Option<String>,
    /// `checkpoint`: the signed chain head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    checkpoint: Option<Checkpoint>,
}

/// The version of the record format jobkey writes. 1: records without a
/// `version` field; 2: adds `version` and the `checkpoint` record; 3: a
/// verified identity carries every claim of the token (arrays and objects
/// included), not only its provider's audited ones.
pub(crate) const VERSION: u32 = 3;

fn version_1() -> u32 {
    1
}

/// How an exchange's owner is written (the schema's view of
/// [`Owner`]): the issuer's configured name, `sub`, and the run.
#[derive(schemars::JsonSchema)]
#[allow(dead_code)]
struct OwnerRecord {
    issuer: String,
    sub: String,
    run: String,
}

/// An [`Event`] being filled; it becomes one through one of its endings.
#[derive(Debug)]
#[must_use = "an audit record is written only once it is finished"]
pub struct EventBuilder {
    /// `decision` and the fields of an ending are set by the ending.
    event: Event,
}

impl Event {
    /// An exchange asking for `environment` and `requested`, now.
    pub fn exchange(request_id: &str, environment: &str, requested: &[String]) -> EventBuilder {
        let kept: Vec<String> = requested
            .iter()
            .take(MAX_REQUESTED)
            .map(|n| bounded(n))
            .collect();
        let omitted = requested.len() - kept.len();
        let mut event = Event::new(Some(request_id), Action::Exchange);
        event.environment = Some(bounded(environment));
        event.requested = Some(kept);
        event.requested_omitted = (omitted > 0).then_some(omitted);
        EventBuilder { event }
    }

    /// A revocation of the exchange the caller names, now.
    pub fn revoke(request_id: &str, exchange: &str) -> EventBuilder {
        let mut event = Event::new(Some(request_id), Action::Revoke);
        event.exchange = Some(bounded(exchange));
        EventBuilder { event }
    }

    /// The log's own line: refusals counted instead of written. `like` is
    /// the first refusal of the key (its decision, stage, code and, for a
    /// verified caller, environment are the summary's); `source` is the
    /// key's source (`None`: the overflow bucket).
    pub(super) fn refusals_summarized(
        like: &Event,
        source: Option<String>,
        summary: Summary,
    ) -> Event {
        let mut event = Event::new(None, Action::RefusalsSummarized);
        event.decision = like.decision;
        event.stage = like.stage;
        event.code = like.code.clone();
        event.source = source;
        event.environment = if summary.subject.is_some() {
            like.environment.clone()
        } else {
            None
        };
        event.summary = Some(summary);
        event
    }

    /// The log's own line: a torn last line was set aside at start-up.
    pub(super) fn log_recovered(recovery: Recovery) -> Event {
        let mut event = Event::new(None, Action::LogRecovered);
        event.recovery = Some(recovery);
        event
    }

    /// The log's own line: appends work again after an outage.
    pub(super) fn log_resumed(outage: Outage) -> Event {
        let mut event = Event::new(None, Action::LogResumed);
        event.outage = Some(outage);
        event
    }

    /// The log's own line: the chain's head, signed.
    pub(super) fn checkpoint_record(checkpoint: Checkpoint) -> Event {
        let mut event = Event::new(None, Action::Checkpoint);
        event.checkpoint = Some(checkpoint);
        event
    }

    fn new(request_id: Option<&str>, action: Action) -> Event {
        Event {
            version: VERSION,
            time: super::timestamp(),
            request_id: request_id.map(bounded),
            action,
            // Set by every ending of a request.
            decision: None,
            code: None,
            stage: None,
            reason: None,
            source: None,
            environment: None,
            requested: None,
            requested_omitted: None,
            identity: None,
            credentials: None,
            revocable: None,
            exchange: None,
            auth: None,
            revoked: None,
            exchange_owner: None,
            summary: None,
            recovery: None,
            outage: None,
            replica: None,
            checkpoint: None,
        }
    }

    /// The replica that wrote the line, when the log names one.
    pub fn replica(&self) -> Option<&str> {
        self.replica.as_deref()
    }

    pub fn time(&self) -> &str {
        &self.time
    }

    /// The request's id; empty on the log's own lines.
    pub fn request_id(&self) -> &str {
        self.request_id.as_deref().unwrap_or_default()
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// `None` on the log's own lines (`log_recovered`, `log_resumed`).
    pub fn decision(&self) -> Option<Decision> {
        self.decision
    }

    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    pub fn stage(&self) -> Option<Stage> {
        self.stage
    }

    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    pub fn environment(&self) -> Option<&str> {
        self.environment.as_deref()
    }

    pub fn requested(&self) -> &[String] {
        self.requested.as_deref().unwrap_or_default()
    }

    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    pub fn credentials(&self) -> &[IssuedCredential] {
        self.credentials.as_deref().unwrap_or_default()
    }

    pub fn exchange_owner(&self) -> Option<&Owner> {
        self.exchange_owner.as_ref()
    }

    pub fn summary(&self) -> Option<&Summary> {
        self.summary.as_ref()
    }

    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    pub fn outage(&self) -> Option<&Outage> {
        self.outage.as_ref()
    }

    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The record format's version (1 for records written before it was
    /// recorded).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether this is a request that was not allowed (`deny` or `error`):
    /// such lines go through the refusal table and are not synced on
    /// their own.
    pub(super) fn is_refusal(&self) -> bool {
        matches!(self.action, Action::Exchange | Action::Revoke)
            && matches!(self.decision, Some(Decision::Deny | Decision::Error))
    }

    /// The line's JSON object (before `seq`, `prev` and `hash`). A struct
    /// with string keys serializes to an object; should that ever fail,
    /// the append fails rather than write a line without its content.
    pub(super) fn to_map(&self) -> Result<Map<String, Value>, String> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("the event is not a JSON object".into()),
            Err(e) => Err(format!("the event could not be serialized: {e}")),
        }
    }
}

impl EventBuilder {
    /// The caller's address (the peer of the connection; behind a proxy,
    /// the proxy's).
    pub fn source(&mut self, addr: std::net::IpAddr) {
        self.event.source = Some(canonical_ip(addr).to_string());
    }

    /// Who made the request.
    pub fn identity(&mut self, identity: Identity) {
        self.event.identity = Some(identity);
    }

    /// Revoke: how the caller authenticated.
    pub fn auth(&mut self, auth: Auth) {
        self.event.auth = Some(auth);
    }

    /// Revoke: the exchange was found; its environment and owner.
    pub fn exchange_found(&mut self, environment: &str, owner: Option<&Owner>) {
        self.event.environment = Some(bounded(environment));
        self.event.exchange_owner = owner.cloned();
    }

    /// Revoke: how many items were revoked (also on a partial failure).
    pub fn revoked(&mut self, count: usize) {
        self.event.revoked = Some(count);
    }

    /// Exchange: allowed, and these credentials were issued.
    pub fn allow(mut self, credentials: Vec<IssuedCredential>, revocable: usize) -> Event {
        self.event.decision = Some(Decision::Allow);
        self.event.credentials = Some(credentials);
        self.event.revocable = Some(revocable);
        self.event
    }

    /// Revoke: the exchange's credentials were revoked, `count` items.
    pub fn revocation_done(mut self, count: usize) -> Event {
        self.event.decision = Some(Decision::Allow);
        self.event.revoked = Some(count);
        self.event
    }

    /// Not allowed: denied or failed, as `refusal` says.
    pub fn refused(mut self, refusal: Refusal) -> Event {
        self.event.decision = Some(refusal.decision);
        self.event.stage = Some(refusal.stage);
        self.event.code = Some(refusal.code);
        self.event.reason = Some(refusal.reason);
        self.event
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
pub(super) fn canonical_ip(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => addr,
        },
        v4 => v4,
    }
}

/// `s` if it is at most [`MAX_STRING_BYTES`] long; otherwise a marker with
/// its length and the first 64 bits of its SHA-256 (so two lines can still
/// be matched), e.g. `<300 bytes, sha256:1f2e3d4c5b6a7980>`.
pub(crate) fn bounded(s: &str) -> String {
    if s.len() <= MAX_STRING_BYTES {
        return s.to_owned();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    format!(
        "<{} bytes, sha256:{}>",
        s.len(),
        crate::random::hex(&digest.as_ref()[..8])
    )
}

/// Read access for the review tools (`query.rs`, `export.rs`, the review
/// page, the policy backtest): the fields the accessors above do not cover.
impl Event {
    /// For `deny`/`error`: the detail for the auditor (a policy denial's
    /// `DenyReason`, a token's error, …).
    pub fn reason(&self) -> Option<&Value> {
        self.reason.as_ref()
    }

    /// Revoke: the exchange's request id, as the caller named it.
    pub fn exchange_id(&self) -> Option<&str> {
        self.exchange.as_deref()
    }

    /// Revoke: how the caller authenticated.
    pub fn auth(&self) -> Option<Auth> {
        self.auth
    }

    /// Revoke: how many items were revoked.
    pub fn revoked(&self) -> Option<usize> {
        self.revoked
    }

    /// Exchange `allow`: how many items were recorded for revocation.
    pub fn revocable(&self) -> Option<usize> {
        self.revocable
    }

    /// Exchange: how many more names were asked for than kept.
    pub fn requested_omitted(&self) -> Option<usize> {
        self.requested_omitted
    }
}

impl Identity {
    /// The audited claims, by name.
    pub fn claims(&self) -> &BTreeMap<String, ClaimValue> {
        &self.claims
    }
}
