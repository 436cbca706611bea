//! Decisions: pure functions of a compiled environment and a request.

use std::borrow::Cow;

use serde_json::Value;

use super::compile::{CompiledEnv, Condition, Matcher, Pattern, Rule};
use super::parse::Effect;
use super::{Decision, DenyReason, FailedCondition, Grant, Request, RuleFailure};

/// Longest rendering of an actual claim value kept in a [`FailedCondition`].
const MAX_ACTUAL_CHARS: usize = 200;

/// The textual form a scalar pattern is compared with: strings as they
/// are, numbers and booleans as their JSON text. Objects, arrays and null
/// have none and never match.
fn claim_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// How an actual claim value is shown in a denial: its text, or its JSON
/// for values without one, cut to [`MAX_ACTUAL_CHARS`].
fn render_actual(value: &Value) -> String {
    let text = match claim_text(value) {
        Some(text) => text.into_owned(),
        None => value.to_string(),
    };
    if text.chars().count() > MAX_ACTUAL_CHARS {
        let mut cut: String = text.chars().take(MAX_ACTUAL_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Exact(expected) => expected == text,
            Pattern::Glob(glob) => glob.matches(text),
        }
    }

    fn describe(&self) -> String {
        match self {
            Pattern::Exact(expected) => format!("{expected:?}"),
            Pattern::Glob(glob) => format!("glob {:?}", glob.as_str()),
        }
    }
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        let Some(text) = claim_text(value) else {
            return false;
        };
        match self {
            Matcher::One(pattern) => pattern.matches(&text),
            Matcher::AnyOf(patterns) => patterns.iter().any(|p| p.matches(&text)),
        }
    }

    /// The expected value, readably: `"main"`, `glob "acme/*"`, `any of [...]`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Matcher::One(pattern) => pattern.describe(),
            Matcher::AnyOf(patterns) => {
                let items: Vec<String> = patterns.iter().map(Pattern::describe).collect();
                format!("any of [{}]", items.join(", "))
            }
        }
    }
}

impl Condition {
    fn check(&self, req: &Request<'_>) -> Result<(), FailedCondition> {
        let actual = req.claims.get(&self.claim);
        match actual {
            Some(value) if self.matcher.matches(value) => Ok(()),
            _ => Err(FailedCondition::Claim {
                claim: self.claim.clone(),
                expected: self.matcher.describe(),
                actual: actual.map(render_actual),
            }),
        }
    }
}

impl Rule {
    /// `Ok` when the rule applies to the request; otherwise the first
    /// condition (issuer first, then claims in file order) that failed.
    fn check(&self, req: &Request<'_>) -> Result<(), FailedCondition> {
        if self.issuer != req.issuer {
            return Err(FailedCondition::Issuer {
                expected: self.issuer.clone(),
                actual: req.issuer.to_owned(),
            });
        }
        self.conditions.iter().try_for_each(|c| c.check(req))
    }
}

/// The decision for one environment. See the module docs of `policy` for
/// the semantics.
pub(crate) fn decide(env: &CompiledEnv, req: &Request<'_>) -> Decision {
    // One pass: which rules apply, and why the others do not.
    let mut matched: Vec<&Rule> = Vec::new();
    let mut failures: Vec<(&Rule, FailedCondition)> = Vec::new();
    for rule in &env.rules {
        match rule.check(req) {
            Ok(()) if rule.effect == Effect::Deny => {
                return Decision::Deny(DenyReason::DeniedByRule {
                    rule: rule.name.clone(),
                });
            }
            Ok(()) => matched.push(rule),
            // A deny rule that does not apply is the good outcome, not a
            // reason for a denial: only allow rules are reported.
            Err(failed) if rule.effect == Effect::Allow => failures.push((rule, failed)),
            Err(_) => {}
        }
    }

    if matched.is_empty() {
        return Decision::Deny(DenyReason::NoRuleMatched {
            failures: failures
                .into_iter()
                .map(|(rule, failed)| RuleFailure {
                    rule: rule.name.clone(),
                    failed,
                })
                .collect(),
        });
    }

    // (credential, granting rule) in the order they will be returned.
    let mut chosen: Vec<(&str, &Rule)> = Vec::new();
    if req.credentials.is_empty() {
        for rule in &matched {
            for credential in &rule.grant {
                if !chosen.iter().any(|(c, _)| c == credential) {
                    chosen.push((credential, rule));
                }
            }
        }
    } else {
        for wanted in req.credentials {
            if !env.credentials.contains_key(wanted) {
                return Decision::Deny(DenyReason::UnknownCredential {
                    credential: wanted.clone(),
                });
            }
        }
        for wanted in req.credentials {
            if chosen.iter().any(|(c, _)| c == wanted) {
                continue; // asked twice
            }
            match matched.iter().find(|rule| rule.grant.contains(wanted)) {
                Some(rule) => chosen.push((wanted, rule)),
                None => {
                    return Decision::Deny(DenyReason::CredentialNotGranted {
                        credential: wanted.clone(),
                        failures: failures
                            .iter()
                            .filter(|(rule, _)| rule.grant.contains(wanted))
                            .map(|(rule, failed)| RuleFailure {
                                rule: rule.name.clone(),
                                failed: failed.clone(),
                            })
                            .collect(),
                    });
                }
            }
        }
    }

    let mut grants = Vec::with_capacity(chosen.len());
    for (name, rule) in chosen {
        // Compilation guarantees every granted name exists; stay total anyway.
        let Some(credential) = env.credentials.get(name) else {
            return Decision::Deny(DenyReason::UnknownCredential {
                credential: name.to_owned(),
            });
        };
        let ttl = [Some(credential.ttl), rule.ttl, env.max_ttl]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(credential.ttl);
        grants.push(Grant {
            credential: name.to_owned(),
            rule: rule.name.clone(),
            ttl,
            source: credential.source.clone(),
        });
    }
    Decision::Allow(grants)
}
