//! Decisions and explanations as text, for people: `jobkey policy
//! explain` and the failures of `jobkey policy test`.

use crate::policy::{Decision, DenyReason, Effect, Explanation, FailedCondition};

/// One line per rule: `rule NAME (effect, line N): applies` or the first
/// failing condition with expected and actual values.
pub(crate) fn explain_lines(explanation: &Explanation) -> Vec<String> {
    explanation
        .rules
        .iter()
        .map(|r| {
            let effect = match r.effect {
                Effect::Allow => "allow",
                Effect::Deny => "deny",
            };
            let at = r.line.map(|l| format!(", line {l}")).unwrap_or_default();
            let outcome = match &r.failed {
                None => "applies".to_owned(),
                Some(f) => describe_failure(f),
            };
            format!("rule `{}` ({effect}{at}): {outcome}", r.rule)
        })
        .collect()
}

/// `claim `ref`: expected "refs/heads/main", got "refs/heads/dev"`.
pub(crate) fn describe_failure(f: &FailedCondition) -> String {
    match f {
        FailedCondition::Issuer { expected, actual } => {
            format!("issuer: expected `{expected}`, got `{actual}`")
        }
        FailedCondition::Claim {
            claim,
            expected,
            actual,
        } => match actual {
            Some(a) => format!("claim `{claim}`: expected {expected}, got {a:?}"),
            None => {
                format!("claim `{claim}`: expected {expected}, but the token has no such claim")
            }
        },
    }
}

/// The decision, readably: `allow (deploy-db by github-api-deploy)`,
/// `deny (no_rule_matched)`, `deny (denied_by_rule: no-self-hosted)`.
pub(crate) fn describe_decision(d: &Decision) -> String {
    match d {
        Decision::Allow(grants) => {
            let g: Vec<String> = grants
                .iter()
                .map(|g| format!("{} by {}", g.credential, g.rule))
                .collect();
            format!("allow ({})", g.join(", "))
        }
        Decision::Deny(DenyReason::DeniedByRule { rule }) => {
            format!("deny (denied_by_rule: {rule})")
        }
        Decision::Deny(reason) => format!("deny ({})", reason.code()),
    }
}
