//! `jobkey policy test`: policy fixtures run like unit tests.
//!
//! A fixture file (`policies/tests/*.yaml` by default) holds named claim
//! `templates` and `cases`:
//!
//! ```yaml
//! templates:
//!   deploy: {repository_id: "892347", ref: refs/heads/main, ...}
//! cases:
//!   - name: a feature branch is refused
//!     environment: production
//!     issuer: github                  # a configured issuer name
//!     base: deploy                    # start from a template (optional)
//!     claims: {ref: refs/heads/feature}   # merged over it; null removes a claim
//!     # or: token: tokens/x.jwt      # a JWT file (relative to this file); its
//!     #                               # payload is used, the signature is NOT checked
//!     credentials: [deploy-db]        # optional; default: everything granted
//!     expect: deny                    # allow | deny
//!     code: no_rule_matched           # deny: the expected DenyReason code (optional)
//!     rule: github-api-deploy         # allow: the rule of every grant;
//!                                     # deny: the deny rule that matched (optional)
//! ```
//!
//! A case that names an issuer the configuration lacks, an environment
//! without a policy file, or a credential or template that does not exist
//! is an error ([`FixtureError`], printed like a policy file's errors), not
//! a result: `issuer: githb` would otherwise pass every `expect: deny`. A
//! case about the refusal of an unknown environment or credential says so
//! (`expect: deny`, `code: unknown_environment` / `unknown_credential`).
//! `jobkey policy test --help` shows this format (and a test runs it).
//!
//! Signatures are not the point of a policy test; `jobkey policy explain
//! --token FILE --jwks FILE` verifies a real token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use super::explain::{describe_decision, explain_lines};
use crate::policy::error::{at, hint_line};
use crate::policy::parse::{diagnose, position};
use crate::policy::{Decision, DenyReason, PolicyIssuer, PolicySet, Request};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFixtures {
    #[serde(default)]
    templates: BTreeMap<String, Map<String, Value>>,
    cases: Vec<RawCase>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    environment: Spanned<String>,
    issuer: Spanned<String>,
    #[serde(default)]
    base: Option<Spanned<String>>,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    token: Option<Spanned<PathBuf>>,
    #[serde(default)]
    credentials: Vec<Spanned<String>>,
    expect: Expect,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    rule: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Expect {
    Allow,
    Deny,
}

/// A fixture file that cannot be run as written. Printed like a policy
/// file's errors: `FILE:LINE:COLUMN: message`, then `  hint: ...`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FixtureError {
    /// The directory or a file in it could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The directory holds no fixture file.
    #[error("{dir}: no fixture files (*.yaml, *.yml) in this directory")]
    NoFixtures { dir: String },
    /// Malformed YAML, an unknown field, or a case naming something the
    /// configuration or the policies do not have.
    #[error("{}{message}{}", at(file, line, column), hint_line(hint))]
    Invalid {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
        hint: Option<Box<str>>,
    },
}

/// The outcome of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct CaseResult {
    pub file: String,
    pub name: String,
    pub passed: bool,
    /// What the fixture expected, readably.
    pub expected: String,
    /// What the policy decided, readably.
    pub got: String,
    /// For a failure: every rule's outcome.
    pub explanation: Vec<String>,
}

/// All cases of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Report {
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub(crate) fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// The readable report: PASS/FAIL per case, and for a failure the
    /// expectation, the decision and the explanation.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut file = "";
        for c in &self.cases {
            if c.file != file {
                file = &c.file;
                out.push_str(&format!("{file}\n"));
            }
            if c.passed {
                out.push_str(&format!("  PASS  {}\n", c.name));
            } else {
                out.push_str(&format!("  FAIL  {}\n", c.name));
                out.push_str(&format!("        expected: {}\n", c.expected));
                out.push_str(&format!("        got:      {}\n", c.got));
                if !c.explanation.is_empty() {
                    out.push_str("        why:\n");
                    for line in &c.explanation {
                        out.push_str(&format!("          {line}\n"));
                    }
                }
            }
        }
        let failed = self.failed();
        out.push_str(&format!(
            "{} passed, {} failed\n",
            self.cases.len() - failed,
            failed
        ));
        out
    }
}

/// Decodes a JWT's payload without verifying it (fixtures only).
pub(crate) fn unverified_claims(token: &str) -> Result<Map<String, Value>, String> {
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or("not a JWT (three base64url parts)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "the payload is not base64url")?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err("the payload is not a JSON object".into()),
    }
}

/// Runs every `*.yaml` / `*.yml` fixture file in `dir` (sorted), against
/// `set` compiled for `issuers`.
pub(crate) fn run_dir(
    set: &PolicySet,
    issuers: &[PolicyIssuer],
    dir: &Path,
) -> Result<Report, FixtureError> {
    let io = |source| FixtureError::Io {
        file: dir.display().to_string(),
        source,
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            paths.push(path);
        }
    }
    paths.sort();
    if paths.is_empty() {
        return Err(FixtureError::NoFixtures {
            dir: dir.display().to_string(),
        });
    }
    let mut report = Report::default();
    for path in paths {
        run_file(set, issuers, &path, &mut report)?;
    }
    Ok(report)
}

/// Runs one fixture file. A malformed fixture, or a case naming an issuer,
/// environment or credential that does not exist, is an error, not a
/// failure: a case about `issuer: githb` would pass every `expect: deny`.
pub(crate) fn run_file(
    set: &PolicySet,
    issuers: &[PolicyIssuer],
    path: &Path,
    report: &mut Report,
) -> Result<(), FixtureError> {
    let file = path.display().to_string();
    let text =
        crate::files::read_to_string(path, crate::files::MIB).map_err(|e| FixtureError::Io {
            file: file.clone(),
            source: e.into_io(),
        })?;
    let raw: RawFixtures = serde_saphyr::from_str(&text).map_err(|err| {
        let d = diagnose(&text, &err);
        FixtureError::Invalid {
            file: file.clone(),
            line: d.line,
            column: d.column,
            message: d.message,
            hint: d.hint.map(Into::into),
        }
    })?;
    for case in &raw.cases {
        check_names(set, issuers, &file, case)?;
    }
    for case in raw.cases {
        let claims = case_claims(path, &file, &raw.templates, &case)?;
        let req = Request {
            environment: &case.environment.value,
            issuer: &case.issuer.value,
            claims: &claims,
            credentials: &case
                .credentials
                .iter()
                .map(|c| c.value.clone())
                .collect::<Vec<_>>(),
        };
        let explanation = set.explain(&req);
        let got = describe_decision(&explanation.decision);
        let (passed, expected) = check(&case, &explanation.decision);
        report.cases.push(CaseResult {
            file: file.clone(),
            name: case.name.value,
            passed,
            expected,
            got,
            explanation: if passed {
                Vec::new()
            } else {
                explain_lines(&explanation)
            },
        });
    }
    Ok(())
}

/// An error about a case, at `at` in its file.
fn case_error(
    file: &str,
    case: &RawCase,
    location: serde_saphyr::Location,
    message: String,
    hint: Option<String>,
) -> FixtureError {
    let (line, column) = position(location);
    FixtureError::Invalid {
        file: file.to_owned(),
        line,
        column,
        message: format!("case `{}`: {message}", case.name.value),
        hint: hint.map(Into::into),
    }
}

/// ` (did you mean `x`?)` for the closest of `names`, when one is close.
fn closest<'n>(name: &str, names: impl Iterator<Item = &'n str>) -> String {
    let limit = (name.chars().count() / 4).max(2);
    names
        .map(|n| (strsim::damerau_levenshtein(name, n), n))
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, n)| format!("; did you mean `{n}`?"))
        .unwrap_or_default()
}

/// The case's issuer is configured, and its environment and credentials
/// exist, unless it expects exactly that refusal (`code:
/// unknown_environment` or `unknown_credential`).
fn check_names(
    set: &PolicySet,
    issuers: &[PolicyIssuer],
    file: &str,
    case: &RawCase,
) -> Result<(), FixtureError> {
    let expects = |code: &str| case.expect == Expect::Deny && case.code.as_deref() == Some(code);
    let issuer = &case.issuer;
    if !issuers.iter().any(|i| i.name == issuer.value) {
        let names: Vec<&str> = issuers.iter().map(|i| i.name.as_str()).collect();
        return Err(case_error(
            file,
            case,
            issuer.referenced,
            format!(
                "issuer `{}` is not configured (configured: {}){}",
                issuer.value,
                names.join(", "),
                closest(&issuer.value, names.iter().copied())
            ),
            Some("a case names an issuer of the configuration (--config, --issuer): a token of any other issuer is refused before any policy is read".into()),
        ));
    }
    let environment = &case.environment;
    let Some(env) = set.env(&environment.value) else {
        if expects("unknown_environment") {
            return Ok(());
        }
        return Err(case_error(
            file,
            case,
            environment.referenced,
            format!(
                "environment `{}` has no policy file (environments: {}){}",
                environment.value,
                set.environments().collect::<Vec<_>>().join(", "),
                closest(&environment.value, set.environments())
            ),
            Some("to test the refusal of an unknown environment, write `expect: deny` and `code: unknown_environment`".into()),
        ));
    };
    for credential in &case.credentials {
        if env.credentials.contains_key(&credential.value) || expects("unknown_credential") {
            continue;
        }
        return Err(case_error(
            file,
            case,
            credential.referenced,
            format!(
                "environment `{}` has no credential `{}` (it has: {}){}",
                environment.value,
                credential.value,
                env.credential_order.join(", "),
                closest(
                    &credential.value,
                    env.credential_order.iter().map(String::as_str)
                )
            ),
            Some("to test the refusal of an unknown credential, write `expect: deny` and `code: unknown_credential`".into()),
        ));
    }
    Ok(())
}

fn case_claims(
    path: &Path,
    file: &str,
    templates: &BTreeMap<String, Map<String, Value>>,
    case: &RawCase,
) -> Result<Map<String, Value>, FixtureError> {
    let mut claims = match (&case.base, &case.token) {
        (Some(base), Some(_)) => {
            return Err(case_error(
                file,
                case,
                base.referenced,
                "give `base` or `token`, not both".into(),
                None,
            ));
        }
        (Some(base), None) => match templates.get(&base.value) {
            Some(t) => t.clone(),
            None => {
                return Err(case_error(
                    file,
                    case,
                    base.referenced,
                    format!(
                        "no template `{}` (templates: {}){}",
                        base.value,
                        templates.keys().cloned().collect::<Vec<_>>().join(", "),
                        closest(&base.value, templates.keys().map(String::as_str))
                    ),
                    None,
                ));
            }
        },
        (None, Some(token)) => {
            let at = path.parent().unwrap_or(Path::new(".")).join(&token.value);
            let read = crate::files::read_to_string(&at, 64 * crate::files::KIB)
                .map_err(|e| e.reason())
                .and_then(|text| unverified_claims(&text).map_err(|e| e.to_string()));
            match read {
                Ok(claims) => claims,
                Err(e) => {
                    return Err(case_error(
                        file,
                        case,
                        token.referenced,
                        format!("token {}: {e}", at.display()),
                        None,
                    ));
                }
            }
        }
        (None, None) => Map::new(),
    };
    for (k, v) in case.claims.clone().unwrap_or_default() {
        if v.is_null() {
            claims.remove(&k);
        } else {
            claims.insert(k, v);
        }
    }
    Ok(claims)
}

/// Whether the decision is what the case expects, and the expectation
/// written out.
fn check(case: &RawCase, decision: &Decision) -> (bool, String) {
    match case.expect {
        Expect::Allow => {
            let expected = match &case.rule {
                Some(rule) => format!("allow (every grant by rule `{rule}`)"),
                None => "allow".into(),
            };
            let ok = match decision {
                Decision::Allow(grants) => case
                    .rule
                    .as_ref()
                    .is_none_or(|rule| grants.iter().all(|g| &g.rule == rule)),
                Decision::Deny(_) => false,
            };
            (ok, expected)
        }
        Expect::Deny => {
            let mut expected = "deny".to_owned();
            if let Some(code) = &case.code {
                expected.push_str(&format!(" ({code})"));
            }
            if let Some(rule) = &case.rule {
                expected.push_str(&format!(" by deny rule `{rule}`"));
            }
            let ok =
                match decision {
                    Decision::Allow(_) => false,
                    Decision::Deny(reason) => case.code.as_ref().is_none_or(|c| c == reason.code())
                        && case.rule.as_ref().is_none_or(
                            |r| matches!(reason, DenyReason::DeniedByRule { rule } if rule == r),
                        ),
                };
            (ok, expected)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> (PolicySet, Vec<PolicyIssuer>) {
        let issuers: Vec<PolicyIssuer> = vec!["github".into(), "gitlab".into(), "buildkite".into()];
        let set = PolicySet::load_dir(Path::new("policies"), &issuers).expect("shipped policies");
        (set, issuers)
    }

    /// Runs one fixture file holding `text`: the report's lines, or the
    /// error as printed.
    fn run(text: &str) -> Result<String, String> {
        let (set, issuers) = shipped();
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("t.yaml");
        std::fs::write(&path, text).expect("write");
        let mut report = Report::default();
        run_file(&set, &issuers, &path, &mut report)
            .map(|()| report.render())
            .map_err(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
    }

    const TEMPLATE: &str = "templates:\n  deploy: {repository_id: \"892347\", repository_owner_id: \"10001\", repository: acme/api, ref: refs/heads/main, event_name: push, environment: production, runner_environment: github-hosted}\ncases:\n  - name: x\n";

    /// Regression: `issuer: githb` made every `expect: deny` case pass. A
    /// case naming an issuer, environment, credential or template that
    /// does not exist is an error at that name (unless it expects exactly
    /// that refusal); the file's YAML errors read like a policy file's.
    #[test]
    fn a_case_naming_what_does_not_exist_is_an_error() {
        // (the case after `- name: x` (line 4), the error, or "" when it runs)
        let table: &[(&str, &str)] = &[
            (
                "    environment: production\n    issuer: githb\n    base: deploy\n    expect: deny\n",
                "DIR/t.yaml:6:13: case `x`: issuer `githb` is not configured (configured: github, gitlab, buildkite); did you mean `github`?\n  hint: a case names an issuer of the configuration (--config, --issuer): a token of any other issuer is refused before any policy is read",
            ),
            (
                "    environment: prodution\n    issuer: github\n    base: deploy\n    expect: deny\n",
                "DIR/t.yaml:5:18: case `x`: environment `prodution` has no policy file (environments: production, staging); did you mean `production`?\n  hint: to test the refusal of an unknown environment, write `expect: deny` and `code: unknown_environment`",
            ),
            (
                "    environment: prodution\n    issuer: github\n    base: deploy\n    expect: deny\n    code: no_rule_matched\n",
                "DIR/t.yaml:5:18: case `x`: environment `prodution` has no policy file",
            ),
            (
                "    environment: nowhere\n    issuer: github\n    base: deploy\n    expect: deny\n    code: unknown_environment\n",
                "",
            ),
            (
                "    environment: production\n    issuer: github\n    base: deploy\n    credentials: [deploy-db, deploy-dbb]\n    expect: deny\n",
                "DIR/t.yaml:8:30: case `x`: environment `production` has no credential `deploy-dbb` (it has: deploy-db, app-db-user, prod-kubeconfig); did you mean `deploy-db`?\n  hint: to test the refusal of an unknown credential, write `expect: deny` and `code: unknown_credential`",
            ),
            (
                "    environment: production\n    issuer: github\n    base: deploy\n    credentials: [deploy-db-admin]\n    expect: deny\n    code: unknown_credential\n",
                "",
            ),
            (
                "    environment: production\n    issuer: github\n    base: deplyo\n    expect: allow\n",
                "DIR/t.yaml:7:11: case `x`: no template `deplyo` (templates: deploy); did you mean `deploy`?",
            ),
            (
                "    environment: production\n    issuer: github\n    expekt: allow\n",
                "DIR/t.yaml:7:5: unknown field `expekt`, expected one of name, environment, issuer, base, claims, token, credentials, expect, code, rule",
            ),
            (
                "    environment: production\n    issuer: github\n\texpect: allow\n",
                "DIR/t.yaml:7:1: a tab character; YAML indents with spaces only\n  hint: replace the tab with spaces (each nested level by two)",
            ),
        ];
        for (case, want) in table {
            let got = run(&format!("{TEMPLATE}{case}"));
            match got {
                Ok(report) => assert!(want.is_empty(), "{case}: ran:\n{report}"),
                Err(e) => {
                    assert!(
                        !want.is_empty() && e.starts_with(want),
                        "{case}:\nwant {want}\ngot  {e}"
                    );
                    assert!(!e.contains("error:"), "{e}");
                }
            }
        }
    }
}
