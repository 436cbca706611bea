//! The policy front end: a policy file (YAML text) through the parser and
//! the compiler, then decisions, explanations, lint and the access review
//! on what compiled.
//!
//! Input: the text of `production.yaml` (lossy UTF-8). Lines of the form
//! `#fuzz-request {"issuer": NAME, "claims": {...}}` (YAML comments, so the
//! file stays a policy file) add requests to decide, besides the dev
//! issuer's GitHub, GitLab and Buildkite deploys.
//!
//! Properties, besides "never panics":
//! - a refusal names the file, and a position inside the text when it has
//!   one (`production.yaml:LINE:`; YAML ends a line at `\r\n`, `\n` or
//!   `\r`);
//! - the indexed decision is the one a full scan of the rules implies
//!   (`explain` reports every rule's outcome in file order): a deny rule
//!   that applies wins; otherwise no applying rule is `no_rule_matched`;
//!   otherwise each credential comes from the first applying rule that
//!   grants it, for every credential at once and for each asked alone;
//! - an unknown environment is denied as such.
#![no_main]

use jobkey::fuzz_api::{self, CompiledPolicy, DecisionView, POLICY_ENVIRONMENT, POLICY_FILE};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const REQUEST_PREFIX: &str = "#fuzz-request ";
const MAX_EXTRA_REQUESTS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match fuzz_api::compile_policy(&text) {
        Err(f) => {
            assert_eq!(f.file, POLICY_FILE);
            assert!(
                f.message.starts_with(POLICY_FILE),
                "the message names the file: {:?}",
                f.message
            );
            if let Some(line) = f.line {
                let lines = yaml_lines(&text);
                assert!(
                    (1..=lines + 1).contains(&line),
                    "line {line} of a {lines}-line file: {}",
                    f.message
                );
                assert!(
                    f.message.starts_with(&format!("{POLICY_FILE}:{line}:")),
                    "the message shows the line: {:?}",
                    f.message
                );
            }
        }
        Ok(set) => {
            assert_eq!(set.environments(), vec![POLICY_ENVIRONMENT.to_owned()]);
            let _ = (&set.lint, &set.who_can);
            let mut requests: Vec<(String, Map<String, Value>)> = fuzz_api::sample_requests()
                .into_iter()
                .map(|(i, c)| (i.to_owned(), c))
                .collect();
            requests.extend(extra_requests(&text));
            for (issuer, claims) in &requests {
                check_request(&set, issuer, claims);
            }
        }
    }
});

/// The number of lines as YAML counts them: a line ends at `\r\n`, `\n` or
/// `\r`.
fn yaml_lines(text: &str) -> usize {
    text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count() + 1
}

fn extra_requests(text: &str) -> Vec<(String, Map<String, Value>)> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(REQUEST_PREFIX))
        .filter_map(|json| match serde_json::from_str::<Value>(json) {
            Ok(Value::Object(mut o)) => {
                let issuer = match o.remove("issuer") {
                    Some(Value::String(s)) => s,
                    _ => "github".to_owned(),
                };
                let claims = match o.remove("claims") {
                    Some(Value::Object(c)) => c,
                    _ => Map::new(),
                };
                Some((issuer, claims))
            }
            _ => None,
        })
        .take(MAX_EXTRA_REQUESTS)
        .collect()
}

fn check_request(set: &CompiledPolicy, issuer: &str, claims: &Map<String, Value>) {
    let unknown = set.decide("no-such-environment", issuer, claims, &[]);
    assert!(
        matches!(
            unknown,
            DecisionView::Deny {
                code: "unknown_environment",
                ..
            }
        ),
        "{unknown:?}"
    );

    let explained = set.explain(POLICY_ENVIRONMENT, issuer, claims, &[]);
    assert_eq!(explained.rules.len() + 1, explained.lines.len());
    let decided = set.decide(POLICY_ENVIRONMENT, issuer, claims, &[]);
    assert_eq!(
        decided, explained.decision,
        "explain decides as decide does"
    );

    let applying: Vec<_> = explained.rules.iter().filter(|r| r.applies).collect();
    let first_deny = applying.iter().find(|r| r.deny);
    let allows: Vec<_> = applying.iter().filter(|r| !r.deny).collect();

    let expected = |wanted: Option<&str>| -> DecisionView {
        if let Some(d) = first_deny {
            return deny("denied_by_rule", Some(&d.name));
        }
        if allows.is_empty() {
            return deny("no_rule_matched", None);
        }
        match wanted {
            None => {
                let mut grants: Vec<(String, String)> = Vec::new();
                for r in &allows {
                    for c in &r.grant {
                        if !grants.iter().any(|(g, _)| g == c) {
                            grants.push((c.clone(), r.name.clone()));
                        }
                    }
                }
                DecisionView::Allow(grants)
            }
            Some(c) if !set.credentials.iter().any(|k| k == c) => {
                deny("unknown_credential", Some(c))
            }
            Some(c) => match allows.iter().find(|r| r.grant.iter().any(|g| g == c)) {
                Some(r) => DecisionView::Allow(vec![(c.to_owned(), r.name.clone())]),
                None => deny("credential_not_granted", Some(c)),
            },
        }
    };

    assert_eq!(
        codes(&decided),
        codes(&expected(None)),
        "the index changed the decision for {issuer} {claims:?}"
    );
    let mut asked: Vec<&str> = set.credentials.iter().map(String::as_str).collect();
    asked.push("no-such-credential");
    for c in asked {
        let d = set.decide(POLICY_ENVIRONMENT, issuer, claims, &[c.to_owned()]);
        assert_eq!(
            codes(&d),
            codes(&expected(Some(c))),
            "the index changed the decision for {c} to {issuer} {claims:?}"
        );
    }
}

fn deny(code: &'static str, subject: Option<&str>) -> DecisionView {
    DecisionView::Deny {
        code,
        subject: subject.map(str::to_owned),
        failed_claims: Vec::new(),
    }
}

/// A decision without the failure details (the oracle does not compute
/// them; a full scan gives them in both).
fn codes(d: &DecisionView) -> DecisionView {
    match d {
        DecisionView::Allow(g) => DecisionView::Allow(g.clone()),
        DecisionView::Deny { code, subject, .. } => DecisionView::Deny {
            code,
            subject: subject.clone(),
            failed_claims: Vec::new(),
        },
    }
}
