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
//! Signatures are not the point of a policy test; `jobkey policy explain
//! --token FILE --jwks FILE` verifies a real token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::explain::{describe_decision, explain_lines};
use crate::policy::{Decision, DenyReason, PolicySet, Request};

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
    name: String,
    environment: String,
    issuer: String,
    #[serde(default)]
    base: Option<String>,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    token: Option<PathBuf>,
    #[serde(default)]
    credentials: Vec<String>,
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

/// The outcome of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
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
pub struct Report {
    pub cases: Vec<CaseResult>,
}

impl Report {
    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.passed).count()
    }

    /// The readable report: PASS/FAIL per case, and for a failure the
    /// expectation, the decision and the explanation.
    pub fn render(&self) -> String {
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
pub fn unverified_claims(token: &str) -> Result<Map<String, Value>, String> {
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

/// Runs every `*.yaml` / `*.yml` fixture file in `dir` (sorted).
pub fn run_dir(set: &PolicySet, dir: &Path) -> Result<Report, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{}: no fixture files (*.yaml)", dir.display()));
    }
    let mut report = Report::default();
    for path in paths {
        run_file(set, &path, &mut report)?;
    }
    Ok(report)
}

/// Runs one fixture file; a malformed fixture is an error, not a failure.
pub fn run_file(set: &PolicySet, path: &Path, report: &mut Report) -> Result<(), String> {
    let file = path.display().to_string();
    let text = crate::files::read_to_string(path, crate::files::MIB).map_err(|e| e.to_string())?;
    let raw: RawFixtures = serde_saphyr::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
    for case in raw.cases {
        let claims = case_claims(path, &raw.templates, &case)
            .map_err(|e| format!("{file}: case `{}`: {e}", case.name))?;
        let req = Request {
            environment: &case.environment,
            issuer: &case.issuer,
            claims: &claims,
            credentials: &case.credentials,
        };
        let explanation = set.explain(&req);
        let got = describe_decision(&explanation.decision);
        let (passed, expected) = check(&case, &explanation.decision);
        report.cases.push(CaseResult {
            file: file.clone(),
            name: case.name,
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

fn case_claims(
    path: &Path,
    templates: &BTreeMap<String, Map<String, Value>>,
    case: &RawCase,
) -> Result<Map<String, Value>, String> {
    let mut claims = match (&case.base, &case.token) {
        (Some(_), Some(_)) => return Err("give `base` or `token`, not both".into()),
        (Some(base), None) => templates
            .get(base)
            .cloned()
            .ok_or_else(|| format!("no template `{base}`"))?,
        (None, Some(token)) => {
            let at = path.parent().unwrap_or(Path::new(".")).join(token);
            let text = crate::files::read_to_string(&at, 64 * crate::files::KIB)
                .map_err(|e| e.to_string())?;
            unverified_claims(&text).map_err(|e| format!("{}: {e}", at.display()))?
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
