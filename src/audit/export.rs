//! `jobkey audit export --format ocsf`: audit records as OCSF events, one
//! JSON object per line, for a SIEM.
//!
//! An exchange is an Authentication event (class 3002, category 3,
//! Identity & Access Management; activity 1, logon: a CI token is
//! exchanged for credentials); a revocation is an API Activity event
//! (class 6003, category 6, Application Activity; activity 4, delete); a
//! `refusals_summarized` line is the Authentication or API Activity event
//! of the refusals it counts, with `count`. The log's other lines (its own
//! housekeeping, kinds this version does not know) have no OCSF
//! counterpart and are not exported. Like the log, an exported event holds
//! no secret: the credentials' names, rules and TTLs, never fingerprints.

use serde::Serialize;

use super::query::{Entry, Record, decision_name, repositories};
use super::{Action, Decision, Event};

/// The OCSF schema version the events follow.
pub(crate) const OCSF_VERSION: &str = "1.3.0";

const AUTHENTICATION: u32 = 3002;
const IAM: u32 = 3;
const API_ACTIVITY: u32 = 6003;
const APPLICATION: u32 = 6;
const LOGON: u32 = 1;
const DELETE: u32 = 4;

/// One OCSF event (the fields jobkey fills).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct OcsfEvent {
    pub class_uid: u32,
    pub class_name: &'static str,
    pub category_uid: u32,
    pub category_name: &'static str,
    pub activity_id: u32,
    pub activity_name: &'static str,
    pub type_uid: u32,
    /// Milliseconds since the epoch.
    pub time: u64,
    /// 1 informational, 3 medium (a denial), 4 high (jobkey failed).
    pub severity_id: u32,
    /// 1 success, 2 failure.
    pub status_id: u32,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// How many events this one stands for (a summary of refusals).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub metadata: Metadata,
    pub actor: Actor,
    /// Authentication: who authenticated (the same as `actor.user`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_endpoint: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_protocol: Option<&'static str>,
    /// What OCSF has no field for: environment, credentials, stage.
    pub unmapped: Unmapped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Metadata {
    pub version: &'static str,
    pub product: Product,
    /// The request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The audit line's `seq`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    pub original_time: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Product {
    pub name: &'static str,
    pub vendor_name: &'static str,
    pub version: &'static str,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Actor {
    pub user: User,
}

/// The CI identity: `name` is the repository (or subject), `uid` the
/// token's subject, `domain` the issuer's configured name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct User {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `false`: claims read from a token that did not verify.
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Endpoint {
    pub ip: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Api {
    pub operation: &'static str,
    pub request: ApiRequest,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ApiRequest {
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Unmapped {
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<ExportedCredential>,
    /// Revoke: the exchange's request id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
}

/// An issued credential, without its fingerprints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ExportedCredential {
    pub name: String,
    pub rule: String,
    pub kind: String,
    pub ttl_s: u64,
}

/// The OCSF event of a record; `None` for lines with no counterpart.
pub(crate) fn to_ocsf(r: &Record) -> Option<OcsfEvent> {
    let Entry::Event(e) = &r.entry else {
        return None;
    };
    let (of, count) = match e.action() {
        Action::Exchange | Action::Revoke => (e.action(), None),
        Action::RefusalsSummarized => {
            let s = e.summary()?;
            (s.of, Some(s.count))
        }
        Action::LogRecovered | Action::LogResumed | Action::Checkpoint => return None,
    };
    let decision = e.decision()?;
    let (class_uid, class_name, category_uid, category_name, activity_id, activity_name) = match of
    {
        Action::Revoke => (
            API_ACTIVITY,
            "API Activity",
            APPLICATION,
            "Application Activity",
            DELETE,
            "Delete",
        ),
        _ => (
            AUTHENTICATION,
            "Authentication",
            IAM,
            "Identity & Access Management",
            LOGON,
            "Logon",
        ),
    };
    let (status_id, status, severity_id) = match decision {
        Decision::Allow => (1, "Success", 1),
        Decision::Deny => (2, "Failure", 3),
        Decision::Error => (2, "Failure", 4),
    };
    let user = user_of(e);
    let request_id = match e.request_id() {
        "" => e.summary().map(|s| s.first_request_id.clone()),
        id => Some(id.to_owned()),
    };
    Some(OcsfEvent {
        class_uid,
        class_name,
        category_uid,
        category_name,
        activity_id,
        activity_name,
        type_uid: class_uid * 100 + activity_id,
        time: r.time_ms,
        severity_id,
        status_id,
        status,
        status_code: e.code().map(str::to_owned),
        status_detail: e
            .reason()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_owned)),
        count,
        metadata: Metadata {
            version: OCSF_VERSION,
            product: Product {
                name: "jobkey",
                vendor_name: "jobkey",
                version: env!("CARGO_PKG_VERSION"),
            },
            uid: request_id.clone(),
            sequence: r.seq,
            original_time: e.time().to_owned(),
        },
        actor: Actor { user: user.clone() },
        user: (class_uid == AUTHENTICATION).then_some(user),
        src_endpoint: e.source().map(|ip| Endpoint { ip: ip.to_owned() }),
        api: (class_uid == API_ACTIVITY).then(|| Api {
            operation: "revoke",
            request: ApiRequest {
                uid: request_id.unwrap_or_default(),
            },
        }),
        auth_protocol: (class_uid == AUTHENTICATION).then_some("OIDC"),
        unmapped: Unmapped {
            action: super::query::action_name(e.action()),
            decision: Some(decision_name(decision)),
            environment: e.environment().map(str::to_owned),
            stage: e
                .stage()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_owned)),
            credentials: e
                .credentials()
                .iter()
                .map(|c| ExportedCredential {
                    name: c.name.clone(),
                    rule: c.rule.clone(),
                    kind: c.kind.clone(),
                    ttl_s: c.ttl_s,
                })
                .collect(),
            exchange: e.exchange_id().map(str::to_owned),
        },
    })
}

fn user_of(e: &Event) -> User {
    let Some(i) = e.identity() else {
        // A revocation by handle: whose exchange it was, when found.
        return match e.exchange_owner() {
            Some(o) => User {
                name: o.sub.clone(),
                uid: Some(o.sub.clone()),
                domain: Some(o.issuer.clone()),
                verified: true,
            },
            None => User {
                name: "unknown".into(),
                uid: None,
                domain: None,
                verified: false,
            },
        };
    };
    let sub = i.claim("sub").map(|v| v.to_text());
    User {
        name: repositories(e)
            .next()
            .map(str::to_owned)
            .or_else(|| sub.clone())
            .unwrap_or_else(|| "unknown".into()),
        uid: sub,
        domain: i.issuer().map(str::to_owned),
        verified: i.is_verified(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::query::parse_line;
    use super::*;

    fn record(line: &str) -> Record {
        let (seq, time_ms, entry) = parse_line(line).unwrap();
        Record {
            file: 0,
            line: 1,
            seq,
            time_ms,
            entry,
        }
    }

    #[test]
    fn classes_and_statuses_follow_the_action_and_decision() {
        // (line, class_uid, activity_id, status_id, severity_id)
        let cases = [
            (
                r#"{"seq":1,"time":"2025-01-01T10:00:00.000Z","request_id":"r1","action":"exchange","decision":"allow","environment":"p","identity":{"issuer":"github","repository":"acme/api","sub":"repo:acme/api"},"credentials":[{"name":"db","rule":"r","kind":"kv","ttl_s":60,"wrapped":false,"fingerprints":{"password":"hmac-sha256:00"}}]}"#,
                3002,
                1,
                1,
                1,
            ),
            (
                r#"{"time":"2025-01-01T10:00:00.000Z","request_id":"r2","decision":"deny","stage":"policy","code":"no_rule_matched"}"#,
                3002,
                1,
                2,
                3,
            ),
            (
                r#"{"time":"2025-01-01T10:00:00.000Z","request_id":"r3","action":"revoke","decision":"error","stage":"vault","code":"vault_unavailable","exchange":"r1"}"#,
                6003,
                4,
                2,
                4,
            ),
        ];
        for (line, class, activity, status, severity) in cases {
            let o = to_ocsf(&record(line)).unwrap();
            assert_eq!(
                (o.class_uid, o.activity_id, o.status_id, o.severity_id),
                (class, activity, status, severity),
                "{line}"
            );
            assert_eq!(o.type_uid, class * 100 + activity);
            assert_eq!(o.time, 1_735_725_600_000);
            let text = serde_json::to_string(&o).unwrap();
            assert!(!text.contains("hmac-sha256"), "{text}");
        }
        assert!(
            to_ocsf(&record(
                r#"{"time":"2025-01-01T10:00:00Z","kind":"checkpoint"}"#
            ))
            .is_none()
        );
    }
}
