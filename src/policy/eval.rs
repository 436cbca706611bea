//! Decisions: pure functions of a compiled environment and a request.

use serde_json::{Map, Value};

use super::compile::{CompiledEnv, Condition, Rule};
use super::matcher::claim_text;
use super::parse::Effect;
use super::{Decision, DenyReason, FailedCondition, Grant, Request, RuleExplanation, RuleFailure};

/// Longest rendering of an actual claim value kept in a [`FailedCondition`].
const MAX_ACTUAL_CHARS: usize = 200;

/// How an actual claim value is shown in a denial: its text, or its JSON
/// for values without one, cut to [`MAX_ACTUAL_CHARS`].
fn render_actual(value: &Value) -> String {
    let text = match claim_text(value) {
        Some(text) => text.into_owned(),
        None => value.to_string(),
    };
    // Bytes bound chars from above: most values skip the count.
    if text.len() > MAX_ACTUAL_CHARS && text.chars().count() > MAX_ACTUAL_CHARS {
        let mut cut: String = text.chars().take(MAX_ACTUAL_CHARS).collect();
        cut.push('…');
        cut
    } else {
        text
    }
}

impl Condition {
    fn check(&self, claims: &Map<String, Value>) -> Result<(), FailedCondition> {
        let actual = self.claim.lookup(claims);
        if self.matcher.holds(actual) {
            Ok(())
        } else {
            Err(FailedCondition::Claim {
                claim: self.shown_claim.clone(),
                expected: self.expected.clone(),
                actual: actual.map(render_actual),
            })
        }
    }
}

impl Rule {
    /// Whether the rule applies, without building any failure (the hot
    /// path of an allowed request).
    fn applies(&self, req: &Request<'_>) -> bool {
        self.issuer == req.issuer
            && self
                .conditions
                .iter()
                .all(|c| c.matcher.holds(c.claim.lookup(req.claims)))
    }

    /// `Ok` when the rule applies to the request; otherwise the first
    /// condition (issuer first, then the file's requirements for allow
    /// rules, then the rule's claims in file order) that failed.
    fn check(&self, req: &Request<'_>) -> Result<(), FailedCondition> {
        if self.issuer != req.issuer {
            return Err(FailedCondition::Issuer {
                expected: self.issuer.clone(),
                actual: req.issuer.to_owned(),
            });
        }
        self.conditions.iter().try_for_each(|c| c.check(req.claims))
    }
}

/// Why each allow rule (for which `keep` holds) does not apply; only
/// computed on the way to a denial.
fn failures_of(
    env: &CompiledEnv,
    req: &Request<'_>,
    keep: impl Fn(&Rule) -> bool,
) -> Vec<RuleFailure> {
    env.rules
        .iter()
        .filter(|r| r.effect == Effect::Allow && keep(r))
        .filter_map(|rule| {
            rule.check(req).err().map(|failed| RuleFailure {
                rule: rule.shared_name.clone(),
                failed,
            })
        })
        .collect()
}

/// The decision for one environment. See the module docs of `policy` for
/// the semantics. Only the rules the index names as candidates are checked
/// on the way to an allow; every other rule certainly does not apply.
pub(crate) fn decide(env: &CompiledEnv, req: &Request<'_>) -> Decision {
    let mut matched: Vec<&Rule> = Vec::new();
    for i in env.index.candidates(req.issuer, req.claims) {
        let Some(rule) = env.rules.get(i) else {
            continue;
        };
        if rule.applies(req) {
            if rule.effect == Effect::Deny {
                return Decision::Deny(DenyReason::DeniedByRule {
                    rule: rule.name.clone(),
                });
            }
            matched.push(rule);
        }
    }

    if matched.is_empty() {
        // A deny rule that does not apply is the good outcome, not a
        // reason for a denial: only allow rules are reported.
        return Decision::Deny(DenyReason::NoRuleMatched {
            failures: failures_of(env, req, |_| true),
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
                        failures: failures_of(env, req, |r| r.grant.contains(wanted)),
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

/// Every rule of the environment, in file order, with whether it applies
/// and, if not, the first condition that failed. Scans every rule (this is
/// for humans, not the request path).
pub(crate) fn explain_rules(env: &CompiledEnv, req: &Request<'_>) -> Vec<RuleExplanation> {
    env.rules
        .iter()
        .map(|rule| {
            let failed = rule.check(req).err();
            RuleExplanation {
                rule: rule.name.clone(),
                effect: rule.effect,
                description: rule.description.clone(),
                line: rule.line,
                applies: failed.is_none(),
                failed,
                grant: rule.grant.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Map, Value, json};

    use super::*;
    use crate::policy::test_support::{claims, compile, denied, granted};
    use crate::policy::{CredentialSource, PolicyIssuer, PolicySet};

    fn set(src: &str) -> PolicySet {
        let issuers: Vec<PolicyIssuer> = vec!["github".into(), "gitlab".into()];
        match compile(&[("env.yaml", src)], &issuers) {
            Ok(set) => set,
            Err(err) => panic!("{err}"),
        }
    }

    fn decide_with(
        set: &PolicySet,
        issuer: &str,
        c: &Map<String, Value>,
        want: &[&str],
    ) -> Decision {
        let credentials: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        set.decide(&Request {
            environment: "env",
            issuer,
            claims: c,
            credentials: &credentials,
        })
    }

    const CREDS: &str = "credentials:\n  db:\n    kv: {mount: secret, path: p/db, fields: [password]}\n    ttl: 10m\n  cfg:\n    kv: {mount: secret, path: p/cfg}\n    ttl: 20m\n  other:\n    kv: {mount: secret, path: p/other}\n    ttl: 1h\n";

    fn one_condition(condition: &str) -> PolicySet {
        set(&format!(
            "{CREDS}rules:\n  - name: r\n    issuer: github\n    claims:\n      {condition}\n    grant: [db]\n"
        ))
    }

    /// Scalar conditions compare the claim's textual form.
    #[test]
    fn textual_comparison_table() {
        // (condition as YAML, claim value, matches)
        let table: &[(&str, Value, bool)] = &[
            ("c: \"true\"", json!("true"), true),
            ("c: \"true\"", json!(true), true),
            ("c: true", json!("true"), true),
            ("c: true", json!(true), true),
            ("c: true", json!(false), false),
            ("c: true", json!("True"), false),
            ("c: false", json!(false), true),
            ("c: \"892347\"", json!(892347), true),
            ("c: 892347", json!("892347"), true),
            ("c: 892347", json!(892347), true),
            ("c: 892347", json!(8923470), false),
            ("c: 892347", json!("0892347"), false),
            ("c: -5", json!(-5), true),
            ("c: \"1.5\"", json!(1.5), true),
            ("c: main", json!("main"), true),
            ("c: main", json!("Main"), false),
            ("c: main", json!(" main"), false),
            ("c: \"\"", json!(""), true),
            ("c: main", json!(null), false),
            ("c: \"null\"", json!(null), false),
            // objects and arrays never match a scalar or glob (list claims unsupported)
            ("c: main", json!(["main"]), false),
            ("c: {glob: \"*\"}", json!(["main"]), false),
            ("c: {glob: \"*\"}", json!({"a": "main"}), false),
            ("c: {glob: \"*\"}", json!(null), false),
            ("c: {glob: \"*\"}", json!(""), true),
            ("c: {glob: \"*\"}", json!(7), true),
            ("c: {glob: \"89*\"}", json!(892347), true),
            ("c: {glob: \"tr*\"}", json!(true), true),
            ("c: {glob: \"acme/*\"}", json!("acme/api"), true),
            ("c: {glob: \"acme/*\"}", json!("acmeco/api"), false),
            ("c: {glob: main}", json!("main"), true),
            ("c: {glob: main}", json!("main2"), false),
            // any of
            ("c: [push, workflow_dispatch]", json!("push"), true),
            (
                "c: [push, workflow_dispatch]",
                json!("workflow_dispatch"),
                true,
            ),
            (
                "c: [push, workflow_dispatch]",
                json!("pull_request_target"),
                false,
            ),
            ("c: [1, 2, {glob: \"9*\"}]", json!(2), true),
            ("c: [1, 2, {glob: \"9*\"}]", json!("93"), true),
            ("c: [1, 2, {glob: \"9*\"}]", json!(3), false),
        ];
        for (condition, value, want) in table {
            let s = one_condition(condition);
            let c = claims(json!({ "c": value }));
            let d = decide_with(&s, "github", &c, &[]);
            assert_eq!(
                matches!(d, Decision::Allow(_)),
                *want,
                "{condition} vs {value}: {d:?}"
            );
        }
    }

    /// A claim the rule names but the token lacks never matches, whatever
    /// the condition; the denial says `actual: None`.
    #[test]
    fn missing_claim_never_matches() {
        for condition in [
            "c: x",
            "c: {glob: \"*\"}",
            "c: [\"\", {glob: \"*\"}]",
            "c: \"\"",
        ] {
            let s = one_condition(condition);
            let d = decide_with(&s, "github", &claims(json!({ "other": "x" })), &[]);
            match denied(&d) {
                DenyReason::NoRuleMatched { failures } => {
                    assert_eq!(failures.len(), 1);
                    assert!(
                        matches!(&failures[0].failed, FailedCondition::Claim { claim, actual: None, .. } if &**claim == "c"),
                        "{failures:?}"
                    );
                }
                other => panic!("{condition}: {other:?}"),
            }
        }
    }

    const AND_RULES: &str = "rules:\n  - name: main-deploy\n    issuer: github\n    claims:\n      repository: acme/api\n      ref: refs/heads/main\n      event_name: [push, workflow_dispatch]\n    grant: [db, cfg]\n    ttl: 5m\n";

    #[test]
    fn all_conditions_must_hold_and_first_failure_is_reported() {
        let s = set(&format!("{CREDS}{AND_RULES}"));
        let good =
            json!({"repository": "acme/api", "ref": "refs/heads/main", "event_name": "push"});
        assert!(matches!(
            decide_with(&s, "github", &claims(good.clone()), &[]),
            Decision::Allow(_)
        ));

        // (claim to change, new value, expected failure)
        let table: &[(&str, Value, FailedCondition)] = &[
            (
                "repository",
                json!("acme/web"),
                FailedCondition::Claim {
                    claim: "repository".into(),
                    expected: "\"acme/api\"".into(),
                    actual: Some("acme/web".into()),
                },
            ),
            (
                "ref",
                json!("refs/heads/feature"),
                FailedCondition::Claim {
                    claim: "ref".into(),
                    expected: "\"refs/heads/main\"".into(),
                    actual: Some("refs/heads/feature".into()),
                },
            ),
            (
                "event_name",
                json!("pull_request_target"),
                FailedCondition::Claim {
                    claim: "event_name".into(),
                    expected: "any of [\"push\", \"workflow_dispatch\"]".into(),
                    actual: Some("pull_request_target".into()),
                },
            ),
            (
                "event_name",
                json!(["push"]),
                FailedCondition::Claim {
                    claim: "event_name".into(),
                    expected: "any of [\"push\", \"workflow_dispatch\"]".into(),
                    actual: Some("[\"push\"]".into()),
                },
            ),
        ];
        for (claim, value, want) in table {
            let mut c = claims(good.clone());
            c.insert((*claim).to_owned(), value.clone());
            let d = decide_with(&s, "github", &c, &[]);
            let reason = denied(&d);
            assert_eq!(reason.code(), "no_rule_matched");
            assert_eq!(
                reason,
                &DenyReason::NoRuleMatched {
                    failures: vec![RuleFailure {
                        rule: "main-deploy".into(),
                        failed: want.clone()
                    }]
                }
            );
            assert_eq!(reason.failed_claims(), vec![(*claim).to_owned()]);
        }

        // Wrong issuer: reported as such, no claim named.
        let d = decide_with(&s, "gitlab", &claims(good), &[]);
        let reason = denied(&d);
        assert_eq!(
            reason,
            &DenyReason::NoRuleMatched {
                failures: vec![RuleFailure {
                    rule: "main-deploy".into(),
                    failed: FailedCondition::Issuer {
                        expected: "github".into(),
                        actual: "gitlab".into()
                    }
                }]
            }
        );
        assert!(reason.failed_claims().is_empty());
    }

    #[test]
    fn deny_rules_win_and_nothing_is_granted_by_default() {
        let src = format!(
            "{CREDS}{AND_RULES}  - name: no-self-hosted\n    effect: deny\n    issuer: github\n    claims:\n      runner_environment: self-hosted\n"
        );
        let s = set(&src);
        let mut c = claims(
            json!({"repository": "acme/api", "ref": "refs/heads/main", "event_name": "push"}),
        );
        assert!(matches!(
            decide_with(&s, "github", &c, &[]),
            Decision::Allow(_)
        ));
        c.insert("runner_environment".into(), json!("github-hosted"));
        assert!(matches!(
            decide_with(&s, "github", &c, &["db"]),
            Decision::Allow(_)
        ));
        c.insert("runner_environment".into(), json!("self-hosted"));
        for want in [&[][..], &["db"][..], &["nope"][..]] {
            let d = decide_with(&s, "github", &c, want);
            assert_eq!(
                denied(&d),
                &DenyReason::DeniedByRule {
                    rule: "no-self-hosted".into()
                },
                "{want:?}"
            );
            assert_eq!(denied(&d).code(), "denied_by_rule");
            assert!(denied(&d).failed_claims().is_empty());
        }

        // Default deny: no rule applies, empty claims, wrong environment.
        let d = decide_with(&s, "github", &Map::new(), &[]);
        let reason = denied(&d);
        assert_eq!(reason.code(), "no_rule_matched");
        // Only the allow rule is reported; the deny rule not applying is no failure.
        assert_eq!(reason.failed_claims(), vec!["repository".to_owned()]);
        let d = s.decide(&Request {
            environment: "production",
            issuer: "github",
            claims: &c,
            credentials: &[],
        });
        assert_eq!(
            denied(&d),
            &DenyReason::UnknownEnvironment {
                environment: "production".into()
            }
        );
        assert_eq!(denied(&d).code(), "unknown_environment");
    }

    const TWO_RULES: &str = "rules:\n  - name: main\n    issuer: github\n    claims:\n      ref: refs/heads/main\n    grant: [db, cfg]\n    ttl: 5m\n  - name: any-branch\n    issuer: github\n    claims:\n      ref: {glob: \"refs/heads/*\"}\n    grant: [cfg, other]\n  - name: tags\n    issuer: github\n    claims:\n      ref: {glob: \"refs/tags/*\"}\n    grant: [other]\n";

    #[test]
    fn requested_credentials() {
        let s = set(&format!("max_ttl: 30m\n{CREDS}{TWO_RULES}"));
        let main = claims(json!({"ref": "refs/heads/main"}));
        let feature = claims(json!({"ref": "refs/heads/feature"}));
        let m = |n: u64| Duration::from_secs(60 * n);

        // Nothing requested: everything the applicable rules grant, each
        // once, against the first rule (file order); TTL = min(cred, rule, env).
        assert_eq!(
            granted(&decide_with(&s, "github", &main, &[])),
            vec![
                ("db".into(), "main".into(), m(5)),
                ("cfg".into(), "main".into(), m(5)),
                ("other".into(), "any-branch".into(), m(30)),
            ]
        );
        assert_eq!(
            granted(&decide_with(&s, "github", &feature, &[])),
            vec![
                ("cfg".into(), "any-branch".into(), m(20)),
                ("other".into(), "any-branch".into(), m(30)),
            ]
        );

        // Requested: exactly those, in request order, duplicates once.
        assert_eq!(
            granted(&decide_with(&s, "github", &main, &["other", "db", "other"])),
            vec![
                ("other".into(), "any-branch".into(), m(30)),
                ("db".into(), "main".into(), m(5)),
            ]
        );

        // The source travels with the grant.
        match decide_with(&s, "github", &main, &["db"]) {
            Decision::Allow(grants) => assert_eq!(
                grants.first().map(|g| g.source.clone()),
                Some(CredentialSource::Kv {
                    mount: "secret".into(),
                    path: "p/db".into(),
                    fields: Some(vec!["password".into()]),
                })
            ),
            other => panic!("{other:?}"),
        }

        // Requested but not granted to this job: names the credential and
        // why the rules that grant it did not apply.
        let d = decide_with(&s, "github", &feature, &["cfg", "db"]);
        let reason = denied(&d);
        assert_eq!(
            reason,
            &DenyReason::CredentialNotGranted {
                credential: "db".into(),
                failures: vec![RuleFailure {
                    rule: "main".into(),
                    failed: FailedCondition::Claim {
                        claim: "ref".into(),
                        expected: "\"refs/heads/main\"".into(),
                        actual: Some("refs/heads/feature".into()),
                    }
                }]
            }
        );
        assert_eq!(reason.code(), "credential_not_granted");
        assert_eq!(reason.failed_claims(), vec!["ref".to_owned()]);

        // Unknown credential (for a job some rule admits).
        let d = decide_with(&s, "github", &main, &["db", "dbb"]);
        assert_eq!(
            denied(&d),
            &DenyReason::UnknownCredential {
                credential: "dbb".into()
            }
        );
        assert_eq!(denied(&d).code(), "unknown_credential");

        // A job no rule admits learns nothing about credential names.
        let d = decide_with(&s, "github", &claims(json!({"ref": "x"})), &["dbb"]);
        assert_eq!(denied(&d).code(), "no_rule_matched");
        assert_eq!(denied(&d).failed_claims(), vec!["ref".to_owned()]);
    }

    #[test]
    fn ttl_is_the_smallest_ceiling() {
        // (credential ttl, rule ttl, env max_ttl, expected)
        let table: &[(&str, Option<&str>, Option<&str>, u64)] = &[
            ("10m", None, None, 600),
            ("10m", Some("5m"), None, 300),
            ("10m", Some("20m"), None, 600),
            ("10m", None, Some("2m"), 120),
            ("10m", Some("5m"), Some("7m"), 300),
            ("10m", Some("5m"), Some("1m"), 60),
            ("30s", Some("5m"), Some("1h"), 30),
        ];
        for (cred, rule, env, want) in table {
            let max = env.map(|t| format!("max_ttl: {t}\n")).unwrap_or_default();
            let rule_ttl = rule.map(|t| format!("    ttl: {t}\n")).unwrap_or_default();
            let src = format!(
                "{max}credentials:\n  db:\n    kv: {{mount: s, path: p}}\n    ttl: {cred}\nrules:\n  - name: r\n    issuer: github\n    claims: {{a: b}}\n    grant: [db]\n{rule_ttl}"
            );
            let s = set(&src);
            let g = granted(&decide_with(&s, "github", &claims(json!({"a": "b"})), &[]));
            assert_eq!(
                g.first().map(|g| g.2),
                Some(Duration::from_secs(*want)),
                "{src}"
            );
        }
    }

    #[test]
    fn long_actual_values_are_cut() {
        let long = "x".repeat(1000);
        assert_eq!(
            render_actual(&json!(long)).chars().count(),
            MAX_ACTUAL_CHARS + 1
        );
        assert_eq!(render_actual(&json!({"a": 1})), "{\"a\":1}");
        assert_eq!(render_actual(&json!(true)), "true");
    }

    #[test]
    fn deny_reason_serializes_with_kind() {
        let reason = DenyReason::NoRuleMatched {
            failures: vec![RuleFailure {
                rule: "r".into(),
                failed: FailedCondition::Claim {
                    claim: "ref".into(),
                    expected: "\"main\"".into(),
                    actual: None,
                },
            }],
        };
        assert_eq!(
            serde_json::to_value(&reason).ok(),
            Some(json!({"kind": "no_rule_matched", "failures": [
                {"rule": "r", "failed": {"kind": "claim", "claim": "ref", "expected": "\"main\"", "actual": null}}
            ]}))
        );
    }

    /// `require:` is inherited by allow rules (checked first and reported
    /// as the first failure), not by deny rules.
    #[test]
    fn inherited_requirements() {
        let s = set(&format!(
            "{CREDS}require:\n  ref_protected: \"true\"\n  repository_id: {{present: true}}\nrules:\n  - name: a\n    issuer: github\n    claims: {{ref: main}}\n    grant: [db]\n  - name: d\n    effect: deny\n    issuer: github\n    claims: {{actor: mallory}}\n"
        ));
        // Ok(granting rule) or Err((failed claim, expected, actual)).
        type Want<'a> = Result<&'a str, (&'a str, &'a str, Option<&'a str>)>;
        let table: Vec<(Value, Want)> = vec![
            (
                json!({"ref": "main", "ref_protected": "true", "repository_id": "1"}),
                Ok("a"),
            ),
            (
                json!({"ref": "main", "ref_protected": true, "repository_id": 1}),
                Ok("a"),
            ),
            (
                json!({"ref": "main", "ref_protected": "false", "repository_id": "1"}),
                Err(("ref_protected", "\"true\"", Some("false"))),
            ),
            (
                json!({"ref": "main", "repository_id": "1"}),
                Err(("ref_protected", "\"true\"", None)),
            ),
            (
                json!({"ref": "main", "ref_protected": "true"}),
                Err(("repository_id", "present", None)),
            ),
            (
                json!({"ref": "main", "ref_protected": "true", "repository_id": null}),
                Err(("repository_id", "present", Some("null"))),
            ),
            (
                json!({"ref": "dev", "ref_protected": "true", "repository_id": "1"}),
                Err(("ref", "\"main\"", Some("dev"))),
            ),
        ];
        for (c, want) in &table {
            let d = decide_with(&s, "github", &claims(c.clone()), &[]);
            match want {
                Ok(rule) => assert_eq!(
                    granted(&d).first().map(|g| g.1.as_str()),
                    Some(*rule),
                    "{c}"
                ),
                Err((claim, expected, actual)) => assert_eq!(
                    denied(&d),
                    &DenyReason::NoRuleMatched {
                        failures: vec![RuleFailure {
                            rule: "a".into(),
                            failed: FailedCondition::Claim {
                                claim: (*claim).into(),
                                expected: (*expected).into(),
                                actual: actual.map(str::to_owned),
                            }
                        }]
                    },
                    "{c}"
                ),
            }
        }
        // The deny rule applies without the requirements.
        let d = decide_with(&s, "github", &claims(json!({"actor": "mallory"})), &[]);
        assert_eq!(denied(&d).code(), "denied_by_rule");
    }

    /// The index never changes a decision: many rules on the indexed claim,
    /// rules without it, deny rules, lists, pointers; every request is
    /// decided as a full scan would.
    #[test]
    fn index_agrees_with_a_full_scan() {
        let mut src = format!("{CREDS}rules:\n");
        for i in 0..30 {
            src.push_str(&format!("  - name: r{i}\n    issuer: github\n    claims: {{repository_id: \"{i}\", ref: refs/heads/main}}\n    grant: [db]\n"));
        }
        src.push_str("  - name: list\n    issuer: github\n    claims: {repository_id: [\"40\", \"41\"]}\n    grant: [cfg]\n");
        src.push_str("  - name: glob\n    issuer: github\n    claims: {repository_id: {glob: \"5*\"}}\n    grant: [other]\n");
        src.push_str("  - name: deny7\n    effect: deny\n    issuer: github\n    claims: {repository_id: \"7\"}\n");
        src.push_str("  - name: deny-actor\n    effect: deny\n    issuer: github\n    claims: {/actor: mallory}\n");
        // A deny rule that also holds for a missing claim is never left out.
        src.push_str("  - name: deny-no-ref\n    effect: deny\n    issuer: github\n    claims: {ref: {missing_or: refs/heads/dev}}\n");
        src.push_str(
            "  - name: gl\n    issuer: gitlab\n    claims: {project_id: \"3\"}\n    grant: [db]\n",
        );
        let s = set(&src);
        let env = s.env("env").expect("env");
        for issuer in ["github", "gitlab", "other"] {
            for id in [
                json!("3"),
                json!(3),
                json!("7"),
                json!("41"),
                json!("55"),
                json!("99"),
                json!(null),
                json!(true),
            ] {
                for actor in ["alice", "mallory"] {
                    for r in [
                        json!("refs/heads/main"),
                        json!("refs/heads/dev"),
                        json!(null),
                    ] {
                        let mut c = claims(
                            json!({"repository_id": id, "project_id": id, "actor": actor, "ref": r}),
                        );
                        if r.is_null() {
                            c.remove("ref");
                        }
                        let req = Request {
                            environment: "env",
                            issuer,
                            claims: &c,
                            credentials: &[],
                        };
                        let fast = decide(env, &req);
                        let explained = s.explain(&req);
                        let applies: Vec<&str> = explained
                            .rules
                            .iter()
                            .filter(|r| r.applies)
                            .map(|r| r.rule.as_str())
                            .collect();
                        let candidates: Vec<&str> = env
                            .index
                            .candidates(issuer, &c)
                            .iter()
                            .map(|i| env.rules[*i].name.as_str())
                            .collect();
                        for a in &applies {
                            assert!(
                                candidates.contains(a),
                                "{a} applies but is no candidate: {c:?}"
                            );
                        }
                        // The decision is the one the rule outcomes imply.
                        let deny = explained
                            .rules
                            .iter()
                            .find(|r| r.applies && r.effect == Effect::Deny);
                        match (&fast, deny) {
                            (Decision::Deny(DenyReason::DeniedByRule { rule }), Some(d)) => {
                                assert_eq!(rule, &d.rule)
                            }
                            (Decision::Deny(DenyReason::DeniedByRule { .. }), None) => {
                                panic!("{c:?}")
                            }
                            (_, Some(_)) => panic!("deny rule ignored {c:?}"),
                            (Decision::Allow(g), None) => assert_eq!(
                                g.first().map(|g| g.rule.as_str()),
                                applies.first().copied()
                            ),
                            (Decision::Deny(reason), None) => {
                                assert!(applies.is_empty(), "{c:?}");
                                assert_eq!(reason.code(), "no_rule_matched");
                            }
                        }
                    }
                }
            }
        }
    }
}
