//! The outcome of a decision: [`Decision`], its [`Grant`]s or its
//! [`DenyReason`], and the per-rule [`Explanation`] given to people.

use std::sync::Arc;
use std::time::Duration;

use super::CredentialSource;
use super::parse::Effect;

/// The outcome of [`PolicySet::decide`](super::PolicySet::decide).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Allow(Vec<Grant>),
    Deny(DenyReason),
}

/// One credential the job may have, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub credential: String,
    /// The rule that granted it.
    pub rule: String,
    /// min(credential ttl, rule ttl, environment max_ttl).
    pub ttl: Duration,
    pub source: CredentialSource,
}

/// Why a request was denied. The detail (expected values) is for logs and
/// the audit trail; the job gets [`code`](Self::code) and
/// [`failed_claims`](Self::failed_claims).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DenyReason {
    UnknownEnvironment {
        environment: String,
    },
    UnknownCredential {
        credential: String,
    },
    DeniedByRule {
        rule: String,
    },
    NoRuleMatched {
        failures: Vec<RuleFailure>,
    },
    CredentialNotGranted {
        credential: String,
        failures: Vec<RuleFailure>,
    },
}

impl DenyReason {
    /// The claim names that failed, for the job's 403 (never expected
    /// values). Sorted, deduplicated.
    pub fn failed_claims(&self) -> Vec<String> {
        let failures = match self {
            DenyReason::NoRuleMatched { failures }
            | DenyReason::CredentialNotGranted { failures, .. } => failures,
            _ => return Vec::new(),
        };
        let mut claims: Vec<String> = failures
            .iter()
            .filter_map(|f| match &f.failed {
                FailedCondition::Claim { claim, .. } => Some(claim.to_string()),
                FailedCondition::Issuer { .. } => None,
            })
            .collect();
        claims.sort();
        claims.dedup();
        claims
    }

    /// A stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::UnknownEnvironment { .. } => "unknown_environment",
            DenyReason::UnknownCredential { .. } => "unknown_credential",
            DenyReason::DeniedByRule { .. } => "denied_by_rule",
            DenyReason::NoRuleMatched { .. } => "no_rule_matched",
            DenyReason::CredentialNotGranted { .. } => "credential_not_granted",
        }
    }
}

/// Why one rule did not apply.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleFailure {
    pub rule: Arc<str>,
    pub failed: FailedCondition,
}

/// The first condition of a rule that did not hold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailedCondition {
    Issuer {
        expected: String,
        actual: String,
    },
    /// `expected` is readable: `"refs/heads/main"`, `glob "acme/*"`,
    /// `any of ["push", "workflow_dispatch"]`. `actual` is `None` when the
    /// token lacks the claim.
    Claim {
        claim: Arc<str>,
        expected: Arc<str>,
        actual: Option<String>,
    },
}

/// One rule of an environment, as `explain` reports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleExplanation {
    pub rule: String,
    pub effect: Effect,
    pub description: Option<String>,
    /// Line of the rule in its file.
    pub line: Option<usize>,
    pub applies: bool,
    /// The first condition that failed (issuer, then claims in order).
    pub failed: Option<FailedCondition>,
    pub grant: Vec<String>,
}

/// The decision for a request, with every rule's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The policy file (empty for an unknown environment).
    pub file: String,
    pub decision: Decision,
    pub rules: Vec<RuleExplanation>,
}
