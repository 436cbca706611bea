//! The checked form of a policy file: every name resolved, every pattern
//! compiled, every rule shaped as its effect requires. A [`CompiledEnv`]
//! that exists is one `eval.rs` can use without further checks.

use std::collections::HashMap;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::CredentialSource;
use super::credential;
use super::error::PolicyError;
use super::index::Index;
use super::issuers::PolicyIssuer;
use super::matcher::{ClaimPath, Matcher};
use super::parse::{Effect, RawCredential, RawFile, RawMatcher, RawRule, position};

/// One environment, ready for decisions.
#[derive(Debug)]
pub(crate) struct CompiledEnv {
    pub file: String,
    pub max_ttl: Option<Duration>,
    pub credentials: HashMap<String, Credential>,
    /// Credential names in file order.
    pub credential_order: Vec<String>,
    /// In file order: "first rule that grants" means the first here.
    pub rules: Vec<Rule>,
    /// Which rules can apply to a request, without scanning them all.
    pub index: Index,
    /// `report_failed_claims` (default true).
    pub report_failed_claims: bool,
}

#[derive(Debug)]
pub(crate) struct Credential {
    pub ttl: Duration,
    pub source: CredentialSource,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub name: String,
    /// `name`, shared by every failure report of this rule (no copy).
    pub shared_name: std::sync::Arc<str>,
    pub description: Option<String>,
    pub effect: Effect,
    pub issuer: String,
    /// All must hold. For allow rules the file's `require` conditions come
    /// first (marked `inherited`), then the rule's own, in file order.
    pub conditions: Vec<Condition>,
    /// Empty for deny rules; non-empty for allow rules.
    pub grant: Vec<String>,
    pub ttl: Option<Duration>,
    /// Where the rule starts (its `name:`), for lint and explain.
    pub line: Option<usize>,
    pub column: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub claim: ClaimPath,
    pub matcher: Matcher,
    /// The claim as written and `matcher.describe()`, rendered once here
    /// so a denial shares them instead of formatting them again.
    pub shown_claim: std::sync::Arc<str>,
    pub expected: std::sync::Arc<str>,
    /// From the file's `require:` rather than the rule itself.
    pub inherited: bool,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// Checks the environment name taken from a file stem.
pub(crate) fn valid_environment_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Compiles one parsed file against the configured issuers.
pub(crate) fn compile(
    file: &str,
    raw: RawFile,
    issuers: &[PolicyIssuer],
) -> Result<CompiledEnv, PolicyError> {
    let env_err = |location: Option<Location>, message: String| {
        let (line, column) = location.map(position).unwrap_or((None, None));
        PolicyError::InvalidEnvironment {
            file: file.to_owned(),
            line,
            column,
            message,
        }
    };

    let max_ttl = match raw.max_ttl {
        Some(Spanned {
            value, referenced, ..
        }) if value.0.is_zero() => {
            return Err(env_err(
                Some(referenced),
                "max_ttl is zero; no credential could be issued (omit it for no ceiling)".into(),
            ));
        }
        Some(ttl) => Some(ttl.value.0),
        None => None,
    };

    let raw_credentials = raw.credentials.map(|m| m.0).unwrap_or_default();
    if raw_credentials.is_empty() {
        return Err(env_err(
            None,
            "this environment offers no credentials; add a `credentials:` section (or delete the file)"
                .into(),
        ));
    }
    let mut order = Vec::with_capacity(raw_credentials.len());
    let mut credentials = HashMap::with_capacity(raw_credentials.len());
    for (name, credential) in raw_credentials {
        let compiled = compile_credential(file, &name, credential)?;
        order.push(name.value.clone());
        credentials.insert(name.value, compiled);
    }

    let requirements = compile_requirements(file, raw.require)?;

    let raw_rules = raw.rules.unwrap_or_default();
    if raw_rules.is_empty() {
        return Err(env_err(
            None,
            "this environment has no rules, so it admits no job; add a `rules:` section".into(),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::with_capacity(raw_rules.len());
    for rule in raw_rules {
        let (line, column) = position(rule.value.name.referenced);
        let name = rule.value.name.value.clone();
        if let Some(first_line) = seen.get(&name) {
            return Err(PolicyError::DuplicateRule {
                file: file.to_owned(),
                line,
                column,
                rule: name,
                first_line: *first_line,
            });
        }
        seen.insert(name, line.unwrap_or(0));
        rules.push(compile_rule(file, rule, issuers, &order, &requirements)?);
    }

    let index = Index::build(&rules);
    Ok(CompiledEnv {
        file: file.to_owned(),
        max_ttl,
        credentials,
        credential_order: order,
        rules,
        index,
        report_failed_claims: raw.report_failed_claims.unwrap_or(true),
    })
}

fn compile_credential(
    file: &str,
    name: &Spanned<String>,
    credential: Spanned<RawCredential>,
) -> Result<Credential, PolicyError> {
    let err = |location: Location, message: &str| {
        let (line, column) = position(location);
        PolicyError::InvalidCredential {
            file: file.to_owned(),
            line,
            column,
            credential: name.value.clone(),
            message: message.to_owned(),
        }
    };
    if name.value.trim().is_empty() {
        return Err(err(name.referenced, "the credential name is empty"));
    }
    let RawCredential {
        kv,
        database,
        certificate,
        kubeconfig,
        vault_token,
        ssh_certificate,
        rabbitmq,
        wrap,
        wrap_ttl,
        ttl,
        ..
    } = credential.value;
    if ttl.value.0.is_zero() {
        return Err(err(
            ttl.referenced,
            "ttl is zero; give a positive duration such as `10m`",
        ));
    }
    let kinds = credential::RawKinds {
        kv,
        database,
        certificate,
        kubeconfig,
        vault_token,
        ssh_certificate,
        rabbitmq,
    };
    let mut source = credential::compile_kind(kinds).map_err(|m| err(credential.referenced, &m))?;
    let wrap_ttl = match (wrap, wrap_ttl) {
        (Some(false), Some(t)) => {
            return Err(err(
                t.referenced,
                "`wrap: false` with `wrap_ttl`; remove one of them",
            ));
        }
        (_, Some(t)) if t.value.0.is_zero() => {
            return Err(err(
                t.referenced,
                "wrap_ttl is zero; give a positive duration",
            ));
        }
        (_, Some(t)) => Some(t.value.0),
        (Some(true), None) => Some(credential::DEFAULT_WRAP_TTL),
        _ => None,
    };
    if let Some(wrap_ttl) = wrap_ttl {
        source = CredentialSource::Wrapped {
            wrap_ttl,
            source: Box::new(source),
        };
    }
    Ok(Credential {
        ttl: ttl.value.0,
        source,
    })
}

/// Compiles one `claim: condition` entry.
fn compile_condition(
    claim: Spanned<String>,
    matcher: Spanned<RawMatcher>,
    inherited: bool,
) -> Result<Condition, (Location, String)> {
    let path = ClaimPath::parse(&claim.value).map_err(|m| (claim.referenced, m))?;
    let compiled = Matcher::compile(matcher.value)
        .map_err(|m| (matcher.referenced, format!("claim `{}`: {m}", claim.value)))?;
    let (line, column) = position(matcher.referenced);
    Ok(Condition {
        shown_claim: path.written.as_str().into(),
        claim: path,
        expected: compiled.describe().into(),
        matcher: compiled,
        inherited,
        line,
        column,
    })
}

/// The file's `require:` section.
fn compile_requirements(
    file: &str,
    raw: Option<super::parse::OrderedMap<Spanned<RawMatcher>>>,
) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (claim, matcher) in raw.map(|m| m.0).unwrap_or_default() {
        let condition =
            compile_condition(claim, matcher, true).map_err(|(location, message)| {
                let (line, column) = position(location);
                PolicyError::InvalidEnvironment {
                    file: file.to_owned(),
                    line,
                    column,
                    message: format!("require: {message}"),
                }
            })?;
        out.push(condition);
    }
    if let Some((a, b)) = contradiction(&out) {
        return Err(PolicyError::InvalidEnvironment {
            file: file.to_owned(),
            line: b.line,
            column: b.column,
            message: format!(
                "require: claim `{}` can never match: {} (line {}) and {} admit no common value",
                b.claim.written,
                a.matcher.describe(),
                a.line.unwrap_or(0),
                b.matcher.describe()
            ),
        });
    }
    Ok(out)
}

/// Two conditions on the same claim that no value satisfies together, when
/// that is decidable: `absent` with anything else, or a finite set of exact
/// values none of which the other conditions accept.
fn contradiction(conditions: &[Condition]) -> Option<(&Condition, &Condition)> {
    for (i, a) in conditions.iter().enumerate() {
        for b in conditions.iter().skip(i + 1) {
            if a.claim.segments != b.claim.segments {
                continue;
            }
            let absent = |m: &Matcher| matches!(m, Matcher::Present(false));
            if absent(&a.matcher) != absent(&b.matcher) {
                return Some((a, b));
            }
        }
        if let Some(values) = a.matcher.exact_values() {
            let others: Vec<&Condition> = conditions
                .iter()
                .enumerate()
                .filter(|(j, c)| *j != i && c.claim.segments == a.claim.segments)
                .map(|(_, c)| c)
                .collect();
            if others.is_empty() {
                continue;
            }
            let survives = values
                .iter()
                .any(|v| others.iter().all(|c| c.matcher.matches_text(v)));
            if !survives {
                // Report at the later of the two, naming the earlier.
                let other = others.first().copied()?;
                let later_other = other.line.unwrap_or(0) > a.line.unwrap_or(0)
                    || (other.line == a.line && other.column > a.column);
                return Some(if later_other { (a, other) } else { (other, a) });
            }
        }
    }
    None
}

fn compile_rule(
    file: &str,
    rule: Spanned<RawRule>,
    issuers: &[PolicyIssuer],
    credentials: &[String],
    requirements: &[Condition],
) -> Result<Rule, PolicyError> {
    let RawRule {
        name,
        description,
        effect,
        issuer,
        claims,
        grant,
        ttl,
    } = rule.value;
    let err = |location: Location, message: String| {
        let (line, column) = position(location);
        PolicyError::InvalidRule {
            file: file.to_owned(),
            line,
            column,
            rule: name.value.clone(),
            message,
        }
    };
    if name.value.trim().is_empty() {
        return Err(err(name.referenced, "the rule name is empty".into()));
    }
    let effect = effect.unwrap_or(Effect::Allow);

    let Some(issuer_info) = issuers.iter().find(|i| i.name == issuer.value) else {
        let (line, column) = position(issuer.referenced);
        return Err(PolicyError::UnknownIssuer {
            file: file.to_owned(),
            line,
            column,
            rule: name.value.clone(),
            issuer: issuer.value,
            configured: issuers.iter().map(|i| i.name.clone()).collect(),
        });
    };

    let claims = claims.map(|m| m.0).unwrap_or_default();
    if claims.is_empty() {
        return Err(err(
            rule.referenced,
            "no claim conditions; a rule must bind at least one claim (bind repository_id / project_id and ref, not only the audience)".into(),
        ));
    }
    let mut own = Vec::with_capacity(claims.len());
    for (claim, matcher) in claims {
        own.push(
            compile_condition(claim, matcher, false)
                .map_err(|(location, message)| err(location, message))?,
        );
    }
    if let Some(dup) = own.iter().enumerate().find_map(|(i, a)| {
        own.iter()
            .skip(i + 1)
            .find(|b| b.claim.segments == a.claim.segments)
            .map(|b| (a, b))
    }) {
        let (a, b) = dup;
        let (line, column) = (b.line, b.column);
        return Err(PolicyError::InvalidRule {
            file: file.to_owned(),
            line,
            column,
            rule: name.value.clone(),
            message: format!(
                "claim `{}` is the same claim as `{}` (line {}); write one condition (a list is any-of)",
                b.claim.written,
                a.claim.written,
                a.line.unwrap_or(0)
            ),
        });
    }
    // Allow rules inherit the file's requirements; deny rules are never
    // narrowed by them (narrowing a deny rule would only weaken it).
    let conditions: Vec<Condition> = match effect {
        Effect::Allow => requirements.iter().cloned().chain(own).collect(),
        Effect::Deny => own,
    };
    if let Some((a, b)) = contradiction(&conditions) {
        let origin = |c: &Condition| {
            if c.inherited {
                format!("require, line {}", c.line.unwrap_or(0))
            } else {
                format!("line {}", c.line.unwrap_or(0))
            }
        };
        return Err(PolicyError::InvalidRule {
            file: file.to_owned(),
            line: b.line,
            column: b.column,
            rule: name.value.clone(),
            message: format!(
                "can never match: claim `{}` must be {} ({}) and {} ({}); no value is both",
                b.claim.written,
                a.matcher.describe(),
                origin(a),
                b.matcher.describe(),
                origin(b)
            ),
        });
    }

    // A shared issuer (Buildkite, CircleCI) signs tokens for every
    // organisation: an allow rule that does not pin the tenant admits them all.
    if effect == Effect::Allow && !issuer_info.tenant_claims.is_empty() {
        let binds_tenant = conditions.iter().any(|c| {
            c.claim
                .top_level()
                .is_some_and(|n| issuer_info.tenant_claims.iter().any(|t| t == n))
                && c.matcher.exact_values().is_some()
        });
        if !binds_tenant {
            return Err(err(
                issuer.referenced,
                format!(
                    "issuer `{}` is shared by every organisation on it; bind {} to your organisation's exact value (for example `{}: \"acme\"`), in the rule or in the file's `require:`",
                    issuer_info.name,
                    issuer_info
                        .tenant_claims
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    issuer_info
                        .tenant_claims
                        .first()
                        .map(String::as_str)
                        .unwrap_or("tenant"),
                ),
            ));
        }
    }

    let grant = match (effect, grant) {
        (Effect::Allow, None) => {
            return Err(err(
                rule.referenced,
                "an allow rule needs `grant:` naming the credentials it gives".into(),
            ));
        }
        (Effect::Allow, Some(list)) if list.is_empty() => {
            return Err(err(
                rule.referenced,
                "`grant: []` gives nothing; name at least one credential".into(),
            ));
        }
        (Effect::Allow, Some(list)) => {
            let mut names: Vec<String> = Vec::with_capacity(list.len());
            for item in list {
                if !credentials.contains(&item.value) {
                    let (line, column) = position(item.referenced);
                    return Err(PolicyError::UnknownCredential {
                        file: file.to_owned(),
                        line,
                        column,
                        rule: name.value.clone(),
                        credential: item.value,
                        available: credentials.into(),
                    });
                }
                if names.contains(&item.value) {
                    return Err(err(
                        item.referenced,
                        format!("grants `{}` twice", item.value),
                    ));
                }
                names.push(item.value);
            }
            names
        }
        (Effect::Deny, Some(_)) => {
            return Err(err(
                rule.referenced,
                "a deny rule grants nothing; remove `grant:` (or make it an allow rule)".into(),
            ));
        }
        (Effect::Deny, None) => Vec::new(),
    };

    let ttl = match ttl {
        Some(ttl) if ttl.value.0.is_zero() => {
            return Err(err(
                ttl.referenced,
                "ttl is zero; give a positive duration or omit it".into(),
            ));
        }
        Some(ttl) if effect == Effect::Deny => {
            return Err(err(
                ttl.referenced,
                "a deny rule has no ttl; remove it".into(),
            ));
        }
        Some(ttl) => Some(ttl.value.0),
        None => None,
    };

    let (line, column) = position(name.referenced);
    Ok(Rule {
        shared_name: name.value.as_str().into(),
        name: name.value,
        description,
        effect,
        issuer: issuer.value,
        conditions,
        grant,
        ttl,
        line,
        column,
    })
}

#[cfg(test)]
mod tests {
    use super::super::PolicySet;
    use super::*;

    const CREDS: &str = "credentials:\n  db:\n    kv: {mount: secret, path: p}\n    ttl: 10m\n  cfg:\n    kv: {mount: secret, path: q}\n    ttl: 5m\n";

    fn issuers() -> Vec<PolicyIssuer> {
        vec!["github".into(), "gitlab".into()]
    }

    fn load(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
        let sources: Vec<(String, String)> = files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect();
        PolicySet::from_sources(&sources, &issuers())
    }

    fn rules(body: &str) -> String {
        format!("{CREDS}rules:\n{body}")
    }

    #[test]
    fn valid_file_compiles() {
        let set = load(&[(
            "prod.yaml",
            &rules("  - name: r\n    issuer: github\n    claims: {repository: acme/api}\n    grant: [db]\n"),
        )])
        .expect("valid");
        assert_eq!(set.environments().collect::<Vec<_>>(), vec!["prod"]);
    }

    /// Each compile error: the Display starts with the expected
    /// `file:line:column:` (or `file:`) and says what is wrong.
    #[test]
    fn compile_errors_name_file_line_and_fix() {
        let r = "  - name: r\n    issuer: github\n    claims: {repository: acme/api}\n";
        // Lines: credentials take 1..=7, `rules:` is 8, the first rule starts at 9.
        let table: Vec<(String, &str, &str)> = vec![
            (
                rules("  - name: r\n    issuer: githubb\n    claims: {a: b}\n    grant: [db]\n"),
                "e.yaml:10:13: ",
                "issuer `githubb`, which is not configured (configured: github, gitlab)",
            ),
            (
                rules(&format!("{r}    grant: [db, deploy-dbb]\n")),
                "e.yaml:12:17: ",
                "grants `deploy-dbb`, which is not among this file's credentials (db, cfg)",
            ),
            (
                rules(&format!("{r}    grant: [db]\n{r}    grant: [cfg]\n")),
                "e.yaml:13:11: ",
                "rule name `r` is already used at line 9",
            ),
            (
                rules("  - name: r\n    issuer: github\n    claims: {}\n    grant: [db]\n"),
                "e.yaml:9:5: ",
                "no claim conditions",
            ),
            (
                rules("  - name: r\n    issuer: github\n    grant: [db]\n"),
                "e.yaml:9:5: ",
                "no claim conditions",
            ),
            (
                rules("  - name: r\n    issuer: github\n    claims: {ref: {glob: \"\"}}\n    grant: [db]\n"),
                "e.yaml:11:19: ",
                "claim `ref`: the glob pattern is empty",
            ),
            (
                rules("  - name: r\n    issuer: github\n    claims: {ref: [a, {glob: \"\"}]}\n    grant: [db]\n"),
                "e.yaml:11:19: ",
                "claim `ref`: the glob pattern is empty",
            ),
            (
                rules("  - name: r\n    issuer: github\n    claims: {ref: []}\n    grant: [db]\n"),
                "e.yaml:11:19: ",
                "claim `ref`: the list is empty",
            ),
            (
                rules(r),
                "e.yaml:9:5: ",
                "an allow rule needs `grant:`",
            ),
            (
                rules(&format!("{r}    grant: []\n")),
                "e.yaml:9:5: ",
                "`grant: []` gives nothing",
            ),
            (
                rules(&format!("{r}    grant: [db, db]\n")),
                "e.yaml:12:17: ",
                "grants `db` twice",
            ),
            (
                rules(&format!("{r}    effect: deny\n    grant: [db]\n")),
                "e.yaml:9:5: ",
                "a deny rule grants nothing",
            ),
            (
                rules(&format!("{r}    grant: [db]\n    ttl: 0s\n")),
                "e.yaml:13:10: ",
                "ttl is zero",
            ),
            (
                "credentials:\n  db:\n    kv: {mount: secret, path: p}\n    ttl: 0s\nrules: []\n".into(),
                "e.yaml:4:10: ",
                "credential `db`: ttl is zero",
            ),
            (
                "credentials:\n  db:\n    ttl: 1m\nrules: []\n".into(),
                "e.yaml:3:5: ",
                "credential `db`: no credential kind",
            ),
            (
                "credentials:\n  db:\n    kv: {mount: \"\", path: p}\n    ttl: 1m\nrules: []\n".into(),
                "e.yaml:3:5: ",
                "must not be empty",
            ),
            (
                "credentials:\n  db:\n    kv: {mount: s, path: p, fields: []}\n    ttl: 1m\nrules: []\n".into(),
                "e.yaml:3:5: ",
                "omit `fields`",
            ),
            (
                format!("max_ttl: 0s\n{}", rules(&format!("{r}    grant: [db]\n"))),
                "e.yaml:1:10: ",
                "max_ttl is zero",
            ),
            (String::new(), "e.yaml: ", "offers no credentials"),
            ("# only a comment\n".into(), "e.yaml: ", "offers no credentials"),
            (CREDS.into(), "e.yaml: ", "has no rules"),
            (rules("  []\n"), "e.yaml: ", "has no rules"),
        ];
        for (src, position, fragment) in &table {
            let err = match load(&[("e.yaml", src)]) {
                Err(err) => err,
                Ok(_) => panic!("expected an error for:\n{src}"),
            };
            let text = err.to_string();
            assert!(
                text.starts_with(position),
                "want {position:?}, got {text:?}\n{src}"
            );
            assert!(text.contains(fragment), "want {fragment:?} in {text:?}");
            assert_eq!(err.file(), "e.yaml");
        }
    }

    #[test]
    fn environment_names_and_duplicates() {
        let ok = rules("  - name: r\n    issuer: github\n    claims: {a: b}\n    grant: [db]\n");
        for bad in [
            "Prod.yaml",
            "-x.yaml",
            "_x.yaml",
            "pr od.yaml",
            "prød.yaml",
            ".hidden.yaml",
        ] {
            let err = load(&[(bad, &ok)]).err();
            assert!(
                matches!(err, Some(PolicyError::InvalidEnvironmentName { .. })),
                "{bad}: {err:?}"
            );
        }
        // `.yaml` alone has no extension (it is a dotfile named ".yaml"): ignored.
        let set = load(&[(".yaml", &ok)]).expect("ignored");
        assert_eq!(set.environments().count(), 0);
        for good in ["prod.yaml", "prod-eu_1.yml", "0.yaml", "dir/staging.yaml"] {
            assert!(load(&[(good, &ok)]).is_ok(), "{good}");
        }
        let err = load(&[("x.yaml", &ok), ("x.yml", &ok)])
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("x.yml: environment `x` is already defined by x.yaml; keep one file")
        );
        // Not a policy file: ignored, even if it is not YAML.
        let set = load(&[
            ("x.yaml", &ok),
            ("README.md", "# hi: ["),
            ("x.yaml.bak", "["),
        ])
        .expect("others ignored");
        assert_eq!(set.environments().count(), 1);
    }

    #[test]
    fn environment_name_rules() {
        assert!(valid_environment_name("a"));
        assert!(!valid_environment_name(""));
    }

    /// The new language's compile errors, with their positions.
    #[test]
    fn language_compile_errors() {
        let shared = vec![
            PolicyIssuer::from_url("buildkite", "https://agent.buildkite.com"),
            PolicyIssuer::from_url("circleci", "https://oidc.circleci.com/org/1f4e"),
            PolicyIssuer::named("github"),
        ];
        let load =
            |src: &str| PolicySet::from_sources(&[("e.yaml".to_owned(), src.to_owned())], &shared);
        // Lines: credentials 1..=7, `rules:` is 8, the rule's name is 9.
        let r = |claims: &str| {
            rules(&format!(
                "  - name: r\n    issuer: github\n    claims:\n      {claims}\n    grant: [db]\n"
            ))
        };
        let table: Vec<(String, &str, &str)> = vec![
            (
                r("ref: {regex: \"(\"}"),
                "e.yaml:12:12: ",
                "claim `ref`: invalid regex",
            ),
            (
                r("ref: {not: {glob: \"*\"}}"),
                "e.yaml:12:12: ",
                "can never match",
            ),
            (r("\"/a~x\": b"), "e.yaml:12:7: ", "JSON pointer"),
            (
                r("ref: main\n      /ref: dev"),
                "e.yaml:13:13: ",
                "is the same claim as `ref`",
            ),
            (
                r("ref: {present: false}\n      /a/ref: {present: false}\n      x: [a, b]"),
                "",
                "",
            ),
            (
                format!(
                    "require: {{ref_protected: \"true\"}}\n{}",
                    r("ref_protected: \"false\"")
                ),
                "e.yaml:13:22: ",
                "can never match: claim `ref_protected` must be \"true\" (require, line 1) and \"false\" (line 13)",
            ),
            (
                format!(
                    "require: {{environment: {{present: false}}}}\n{}",
                    r("environment: production")
                ),
                "e.yaml:13:20: ",
                "must be absent (require, line 1) and \"production\"",
            ),
            (
                format!(
                    "require: {{ref: [main, dev]}}\n{}",
                    r("ref: {glob: \"release/*\"}")
                ),
                "e.yaml:13:12: ",
                "any of [\"main\", \"dev\"] (require, line 1) and glob \"release/*\"",
            ),
            (
                "require: {a: x, /a: {not: x}}\n".to_owned() + &r("b: c"),
                "e.yaml:1:21: ",
                "require: claim `/a` can never match",
            ),
            (
                "require: {a: {glob: \"\"}}\n".to_owned() + &r("b: c"),
                "e.yaml:1:14: ",
                "require: claim `a`: the glob pattern is empty",
            ),
            (
                rules(
                    "  - name: r\n    issuer: buildkite\n    claims: {pipeline_slug: deploy}\n    grant: [db]\n",
                ),
                "e.yaml:10:13: ",
                "issuer `buildkite` is shared by every organisation on it; bind `organization_slug` or `organization_id`",
            ),
            (
                rules(
                    "  - name: r\n    issuer: buildkite\n    claims: {organization_slug: {glob: \"acme*\"}}\n    grant: [db]\n",
                ),
                "e.yaml:10:13: ",
                "is shared by every organisation",
            ),
            (
                rules(
                    "  - name: r\n    issuer: circleci\n    claims: {oidc.circleci.com/project-id: p}\n    grant: [db]\n",
                ),
                "e.yaml:10:13: ",
                "bind `oidc.circleci.com/org-id`",
            ),
        ];
        for (src, position, fragment) in &table {
            match load(src) {
                Ok(_) if position.is_empty() => {}
                Ok(_) => panic!("expected an error for:\n{src}"),
                Err(err) => {
                    let text = err.to_string();
                    assert!(!position.is_empty(), "unexpected error {text}\n{src}");
                    assert!(
                        text.starts_with(position),
                        "want {position:?}, got {text:?}\n{src}"
                    );
                    assert!(text.contains(fragment), "want {fragment:?} in {text:?}");
                }
            }
        }
        // Tenant bound exactly (in the rule or by require:) compiles; deny
        // rules on a shared issuer need no tenant.
        for ok in [
            rules(
                "  - name: r\n    issuer: buildkite\n    claims: {organization_slug: acme}\n    grant: [db]\n",
            ),
            format!(
                "require: {{organization_id: [\"1\", \"2\"]}}\n{}",
                rules(
                    "  - name: r\n    issuer: buildkite\n    claims: {pipeline_slug: x}\n    grant: [db]\n"
                )
            ),
            rules(
                "  - name: r\n    issuer: circleci\n    claims: {oidc.circleci.com/org-id: o1}\n    grant: [db]\n  - name: d\n    effect: deny\n    issuer: circleci\n    claims: {x: y}\n",
            ),
        ] {
            if let Err(e) = load(&ok) {
                panic!("{e}\n{ok}");
            }
        }
    }
}
