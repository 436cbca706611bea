//! The checked form of a policy file: every name resolved, every pattern
//! compiled, every rule shaped as its effect requires. A [`CompiledEnv`]
//! that exists is one `eval.rs` can use without further checks.

use std::collections::HashMap;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::CredentialSource;
use super::credential;
use super::error::PolicyError;
use super::glob::{Glob, GlobError};
use super::parse::{Effect, RawCredential, RawFile, RawMatcher, RawPattern, RawRule, position};

/// One environment, ready for decisions.
#[derive(Debug)]
pub(crate) struct CompiledEnv {
    pub file: String,
    pub max_ttl: Option<Duration>,
    pub credentials: HashMap<String, Credential>,
    /// In file order: "first rule that grants" means the first here.
    pub rules: Vec<Rule>,
}

#[derive(Debug)]
pub(crate) struct Credential {
    pub ttl: Duration,
    pub source: CredentialSource,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub name: String,
    pub effect: Effect,
    pub issuer: String,
    /// In file order; all must hold.
    pub conditions: Vec<Condition>,
    /// Empty for deny rules; non-empty for allow rules.
    pub grant: Vec<String>,
    pub ttl: Option<Duration>,
}

#[derive(Debug)]
pub(crate) struct Condition {
    pub claim: String,
    pub matcher: Matcher,
}

#[derive(Debug)]
pub(crate) enum Pattern {
    /// Compared with the claim's textual form.
    Exact(String),
    Glob(Glob),
}

#[derive(Debug)]
pub(crate) enum Matcher {
    One(Pattern),
    /// Non-empty.
    AnyOf(Vec<Pattern>),
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

/// Compiles one parsed file. `issuers` are the configured issuer names.
pub(crate) fn compile(
    file: &str,
    raw: RawFile,
    issuers: &[String],
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
        rules.push(compile_rule(file, rule, issuers, &order)?);
    }

    Ok(CompiledEnv {
        file: file.to_owned(),
        max_ttl,
        credentials,
        rules,
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

fn compile_rule(
    file: &str,
    rule: Spanned<RawRule>,
    issuers: &[String],
    credentials: &[String],
) -> Result<Rule, PolicyError> {
    let RawRule {
        name,
        effect,
        issuer,
        claims,
        grant,
        ttl,
        ..
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

    if !issuers.contains(&issuer.value) {
        let (line, column) = position(issuer.referenced);
        return Err(PolicyError::UnknownIssuer {
            file: file.to_owned(),
            line,
            column,
            rule: name.value.clone(),
            issuer: issuer.value,
            configured: issuers.into(),
        });
    }

    let claims = claims.map(|m| m.0).unwrap_or_default();
    if claims.is_empty() {
        return Err(err(
            rule.referenced,
            "no claim conditions; a rule must bind at least one claim (bind repository_id / project_id and ref, not only the audience)".into(),
        ));
    }
    let mut conditions = Vec::with_capacity(claims.len());
    for (claim, matcher) in claims {
        if claim.value.is_empty() {
            return Err(err(claim.referenced, "a claim name is empty".into()));
        }
        let compiled = compile_matcher(matcher.value).map_err(|message| {
            err(
                matcher.referenced,
                format!("claim `{}`: {message}", claim.value),
            )
        })?;
        conditions.push(Condition {
            claim: claim.value,
            matcher: compiled,
        });
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

    Ok(Rule {
        name: name.value,
        effect,
        issuer: issuer.value,
        conditions,
        grant,
        ttl,
    })
}

fn compile_pattern(pattern: RawPattern) -> Result<Pattern, String> {
    match pattern {
        RawPattern::Text(text) => Ok(Pattern::Exact(text)),
        RawPattern::Glob(glob) => Glob::new(&glob).map(Pattern::Glob).map_err(|e| match e {
            GlobError::Empty => {
                "the glob pattern is empty; write `{glob: \"*\"}` to accept any value, or a scalar for an exact match".to_owned()
            }
        }),
    }
}

fn compile_matcher(matcher: RawMatcher) -> Result<Matcher, String> {
    match matcher {
        RawMatcher::One(pattern) => compile_pattern(pattern).map(Matcher::One),
        RawMatcher::AnyOf(items) if items.is_empty() => {
            Err("the list is empty and would never match; list at least one value".to_owned())
        }
        RawMatcher::AnyOf(items) => items
            .into_iter()
            .map(compile_pattern)
            .collect::<Result<Vec<_>, _>>()
            .map(Matcher::AnyOf),
    }
}

#[cfg(test)]
mod tests {
    use super::super::PolicySet;
    use super::*;

    const CREDS: &str = "credentials:\n  db:\n    kv: {mount: secret, path: p}\n    ttl: 10m\n  cfg:\n    kv: {mount: secret, path: q}\n    ttl: 5m\n";

    fn issuers() -> Vec<String> {
        vec!["github".to_owned(), "gitlab".to_owned()]
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
    fn scalars_compile_to_their_text() {
        assert!(valid_environment_name("a"));
        assert!(!valid_environment_name(""));
        let m = compile_matcher(RawMatcher::AnyOf(vec![
            RawPattern::Text("push".into()),
            RawPattern::Glob("refs/tags/v*".into()),
        ]))
        .expect("compiles");
        assert_eq!(m.describe(), r#"any of ["push", glob "refs/tags/v*"]"#);
    }
}
