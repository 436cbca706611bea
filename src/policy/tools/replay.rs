//! `jobkey policy replay`: the backtest. Every recorded exchange that
//! reached the policy (a verified identity, its environment and the
//! credentials it asked for) is decided again under a proposed policy set,
//! and the decisions that would change are listed: newly allowed, newly
//! denied, granted by another rule, with another TTL, or other credentials.
//!
//! What is replayed is what the log recorded: the identity's audited
//! claims (a rule on a claim the log does not keep sees it missing), and
//! the requested names (a request whose list was cut short on its line is
//! skipped). A recorded TTL is the one Vault issued, which Vault may have
//! shortened below what the policy granted. Exchanges refused before the
//! policy (their token) are skipped; those the policy allowed but a later
//! stage failed (Vault, the store) count as allowed, without their grants.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::audit::query::{Entry, Record, Records, denied_by_rule, who};
use crate::audit::{Action, AuditError, Decision as Recorded, Event, Stage};
use crate::policy::{Decision, DenyReason, PolicySet, Request};

/// What the log says the policy decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Before {
    /// Allowed, with (rule, TTL in seconds) per issued credential.
    Allowed(BTreeMap<String, (String, u64)>),
    /// Allowed by the policy; a later stage failed, so nothing was issued.
    AllowedNotIssued,
    /// Denied by the policy: the code, and the deny rule if one decided.
    Denied { code: String, rule: Option<String> },
}

/// How a decision would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    NewlyAllowed,
    NewlyDenied,
    /// Another set of credentials would be granted.
    Credentials,
    /// A credential would be granted by another rule.
    Rule,
    /// A credential would get another TTL.
    Ttl,
    /// Still denied, now by another deny rule (or none).
    DenyRule,
}

/// One decision that would change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub time: String,
    pub request_id: String,
    pub environment: String,
    /// `issuer:repository`.
    pub who: String,
    pub kind: ChangeKind,
    pub before: String,
    pub after: String,
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Exchanges decided again.
    pub replayed: u64,
    /// Lines not replayed: other actions, refusals before the policy,
    /// unverified identities, cut-short requests, the log's own lines.
    pub skipped: u64,
    pub changes: Vec<Change>,
}

/// What the log recorded for an exchange the policy decided, and the
/// request to decide again; `None` for a line that cannot be replayed.
pub(crate) fn recorded(e: &Event) -> Option<(Before, Map<String, Value>, &str)> {
    if e.action() != Action::Exchange || e.requested_omitted().is_some() {
        return None;
    }
    let identity = e.identity()?;
    if !identity.is_verified() {
        return None;
    }
    let issuer = identity.issuer()?;
    let before = match (e.decision()?, e.stage()) {
        (Recorded::Allow, _) => Before::Allowed(
            e.credentials()
                .iter()
                .map(|c| (c.name.clone(), (c.rule.clone(), c.ttl_s)))
                .collect(),
        ),
        (_, Some(Stage::Policy)) => Before::Denied {
            code: e.code().unwrap_or_default().to_owned(),
            rule: denied_by_rule(e).map(str::to_owned),
        },
        (_, Some(Stage::Credential | Stage::Vault | Stage::Store | Stage::Internal)) => {
            Before::AllowedNotIssued
        }
        _ => return None,
    };
    let claims = identity
        .claims()
        .iter()
        .map(|(k, v)| (k.clone(), v.to_json()))
        .collect();
    Some((before, claims, issuer))
}

/// Decides `e` again under `set`: `None` when it cannot be replayed,
/// `Some(None)` when the decision is the same, `Some(Some(change))` when
/// it changes.
pub(crate) fn replay_event(set: &PolicySet, e: &Event) -> Option<Option<Change>> {
    let (before, claims, issuer) = recorded(e)?;
    let environment = e.environment()?;
    let after = set.decide(&Request {
        environment,
        issuer,
        claims: &claims,
        credentials: e.requested(),
    });
    let Some(kind) = compare(&before, &after) else {
        return Some(None);
    };
    Some(Some(Change {
        time: e.time().to_owned(),
        request_id: e.request_id().to_owned(),
        environment: environment.to_owned(),
        who: who(e),
        kind,
        before: describe_before(&before),
        after: super::explain::describe_decision(&after),
    }))
}

fn compare(before: &Before, after: &Decision) -> Option<ChangeKind> {
    match (before, after) {
        (Before::Denied { .. }, Decision::Allow(_)) => Some(ChangeKind::NewlyAllowed),
        (Before::Allowed(_) | Before::AllowedNotIssued, Decision::Deny(_)) => {
            Some(ChangeKind::NewlyDenied)
        }
        (Before::AllowedNotIssued, Decision::Allow(_)) => None,
        (Before::Denied { rule, .. }, Decision::Deny(reason)) => {
            let now = match reason {
                DenyReason::DeniedByRule { rule } => Some(rule.as_str()),
                _ => None,
            };
            (rule.as_deref() != now).then_some(ChangeKind::DenyRule)
        }
        (Before::Allowed(was), Decision::Allow(grants)) => {
            if grants.len() != was.len() || grants.iter().any(|g| !was.contains_key(&g.credential))
            {
                return Some(ChangeKind::Credentials);
            }
            if grants.iter().any(|g| was[&g.credential].0 != g.rule) {
                return Some(ChangeKind::Rule);
            }
            grants
                .iter()
                .any(|g| was[&g.credential].1 != g.ttl.as_secs())
                .then_some(ChangeKind::Ttl)
        }
    }
}

fn describe_before(b: &Before) -> String {
    match b {
        Before::Allowed(grants) => {
            let g: Vec<String> = grants
                .iter()
                .map(|(c, (rule, ttl))| format!("{c} by {rule}, {ttl}s"))
                .collect();
            format!("allow ({})", g.join(", "))
        }
        Before::AllowedNotIssued => "allow (not issued: a later stage failed)".into(),
        Before::Denied {
            rule: Some(rule), ..
        } => format!("deny (denied_by_rule: {rule})"),
        Before::Denied { code, .. } => format!("deny ({code})"),
    }
}

/// Replays every record of `records` at or after `since_ms`. `progress`
/// is called with the bytes read so far, every few thousand records.
pub fn replay(
    set: &PolicySet,
    records: &mut Records,
    since_ms: Option<u64>,
    mut progress: impl FnMut(u64),
) -> Result<Report, AuditError> {
    let mut report = Report::default();
    let mut n: u64 = 0;
    while let Some(r) = records.next_record()? {
        n += 1;
        if n.is_multiple_of(4096) {
            progress(records.bytes_read());
        }
        if since_ms.is_some_and(|s| r.time_ms < s) {
            report.skipped += 1;
            continue;
        }
        match replay_record(set, &r) {
            None => report.skipped += 1,
            Some(change) => {
                report.replayed += 1;
                report.changes.extend(change);
            }
        }
    }
    Ok(report)
}

fn replay_record(set: &PolicySet, r: &Record) -> Option<Option<Change>> {
    match &r.entry {
        Entry::Event(e) => replay_event(set, e),
        Entry::Other { .. } => None,
    }
}

/// The report as text: one line per change, then the totals.
pub(crate) fn render(report: &Report) -> String {
    let mut out = String::new();
    for c in &report.changes {
        out.push_str(&format!(
            "{} {} env `{}` {} — {:?}: {} → {}\n",
            c.time, c.request_id, c.environment, c.who, c.kind, c.before, c.after
        ));
    }
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for c in &report.changes {
        *by_kind.entry(format!("{:?}", c.kind)).or_default() += 1;
    }
    let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    out.push_str(&format!(
        "{} exchange(s) replayed, {} line(s) skipped, {} decision(s) would change{}\n",
        report.replayed,
        report.skipped,
        report.changes.len(),
        if kinds.is_empty() {
            String::new()
        } else {
            format!(" ({})", kinds.join(", "))
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::query::parse_line;
    use crate::policy::PolicyIssuer;

    const POLICY: &str = "max_ttl: 15m\ncredentials:\n  db:\n    kv: {mount: secret, path: prod/db}\n    ttl: 10m\nrules:\n  - name: deploy\n    issuer: github\n    claims: {repository: acme/api, ref: refs/heads/main}\n    grant: [db]\n    ttl: 5m\n";

    fn set(src: &str) -> PolicySet {
        crate::policy::test_support::compile(
            &[("production.yaml", src)],
            &[PolicyIssuer::named("github")],
        )
        .unwrap()
    }

    fn event(line: &str) -> Event {
        match parse_line(line).unwrap().2 {
            Entry::Event(e) => *e,
            Entry::Other { .. } => panic!("not an event: {line}"),
        }
    }

    fn exchange(decision: &str, git_ref: &str, extra: &str) -> Event {
        event(&format!(
            r#"{{"time":"2025-01-01T10:00:00Z","request_id":"r","action":"exchange","decision":"{decision}","environment":"production","requested":[],"identity":{{"issuer":"github","repository":"acme/api","ref":"{git_ref}"}}{extra}}}"#
        ))
    }

    #[test]
    fn changes_are_classified() {
        let allowed = exchange(
            "allow",
            "refs/heads/main",
            r#","credentials":[{"name":"db","rule":"deploy","kind":"kv","ttl_s":300,"wrapped":false,"fingerprints":{}}]"#,
        );
        let denied = exchange(
            "deny",
            "refs/heads/dev",
            r#","stage":"policy","code":"no_rule_matched","reason":{"kind":"no_rule_matched","failures":[]}"#,
        );
        let vault_failed = exchange(
            "error",
            "refs/heads/main",
            r#","stage":"vault","code":"vault_unavailable""#,
        );
        let token_refused = event(
            r#"{"time":"2025-01-01T10:00:00Z","request_id":"t","decision":"deny","stage":"token","code":"bad_signature","identity":{"verified":false,"repository":"acme/api"}}"#,
        );
        let any_ref = POLICY.replace("ref: refs/heads/main", "ref: {glob: \"refs/heads/*\"}");
        let longer = POLICY.replace("ttl: 5m", "ttl: 7m");
        let renamed = POLICY.replace("name: deploy", "name: deploy-main");
        let other_repo = POLICY.replace("acme/api", "acme/other");
        // (policy, event, expected outcome)
        let cases: Vec<(&str, &Event, Option<Option<ChangeKind>>)> = vec![
            (POLICY, &allowed, Some(None)),
            (POLICY, &denied, Some(None)),
            (POLICY, &vault_failed, Some(None)),
            (POLICY, &token_refused, None),
            (&any_ref, &denied, Some(Some(ChangeKind::NewlyAllowed))),
            (&longer, &allowed, Some(Some(ChangeKind::Ttl))),
            (&renamed, &allowed, Some(Some(ChangeKind::Rule))),
            (&other_repo, &allowed, Some(Some(ChangeKind::NewlyDenied))),
            (
                &other_repo,
                &vault_failed,
                Some(Some(ChangeKind::NewlyDenied)),
            ),
        ];
        for (policy, e, want) in cases {
            let got = replay_event(&set(policy), e).map(|c| c.map(|c| c.kind));
            assert_eq!(got, want, "{policy}\n{e:?}");
        }
    }
}
