//! Helpers shared by the policy engine's unit tests.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{Decision, DenyReason, PolicyError, PolicyIssuer, PolicySet};

/// A JSON object as claims.
pub(crate) fn claims(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => panic!("claims must be an object"),
    }
}

/// Compiles in-memory (file name, text) pairs.
pub(crate) fn compile(
    files: &[(&str, &str)],
    issuers: &[PolicyIssuer],
) -> Result<PolicySet, PolicyError> {
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    PolicySet::from_sources(&sources, issuers)
}

/// (credential, rule, ttl) of every grant; panics on a denial.
pub(crate) fn granted(decision: &Decision) -> Vec<(String, String, Duration)> {
    match decision {
        Decision::Allow(grants) => grants
            .iter()
            .map(|g| (g.credential.clone(), g.rule.clone(), g.ttl))
            .collect(),
        Decision::Deny(reason) => panic!("denied: {reason:?}"),
    }
}

/// The reason of a denial; panics on an allow.
pub(crate) fn denied(decision: &Decision) -> &DenyReason {
    match decision {
        Decision::Deny(reason) => reason,
        Decision::Allow(grants) => panic!("allowed: {grants:?}"),
    }
}
