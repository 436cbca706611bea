//! The checked form of a policy file: every name resolved, every pattern
//! compiled, every rule shaped as its effect requires. A [`CompiledEnv`]
//! that exists is one `eval.rs` can use without further checks.
//!
//! [`compile`] runs the file's steps in order (the environment's `max_ttl`,
//! its credentials, its `require:`, its rules, the index); [`compile_rule`]
//! the rule's (name, issuer, conditions, inherited requirements,
//! satisfiability, shared issuer's ids, grant, ttl). Each step checks one thing and says
//! where it went wrong.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::PolicyIssuer;
use super::credential::{self, CredentialSource};
use super::error::PolicyError;
use super::index::Index;
use super::matcher::{ClaimPath, Matcher};
use super::parse::{
    Effect, OrderedMap, RawCredential, RawFile, RawMatcher, RawRule, Ttl, position,
};
use crate::provider::Provider;

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
    /// The file says self-hosted runners are fine here (lint only).
    pub self_hosted_runners_ok: bool,
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
    pub shared_name: Arc<str>,
    pub description: Option<String>,
    pub effect: Effect,
    pub issuer: String,
    /// The issuer's provider, for the tools.
    pub provider: Provider,
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
    pub shown_claim: Arc<str>,
    pub expected: Arc<str>,
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

/// What the rules of one file are compiled against.
struct FileScope<'a> {
    file: &'a str,
    issuers: &'a [PolicyIssuer],
    /// The file's credential names, in file order.
    credentials: &'a [String],
    /// The file's compiled `require:`.
    requirements: &'a [Condition],
}

/// Compiles one parsed file against the configured issuers.
pub(crate) fn compile(
    file: &str,
    raw: RawFile,
    issuers: &[PolicyIssuer],
) -> Result<CompiledEnv, PolicyError> {
    let max_ttl = compile_max_ttl(file, raw.max_ttl)?;
    let (credentials, credential_order) = compile_credentials(file, raw.credentials)?;
    let requirements = compile_requirements(file, raw.require)?;
    let scope = FileScope {
        file,
        issuers,
        credentials: &credential_order,
        requirements: &requirements,
    };
    let rules = compile_rules(&scope, raw.rules)?;
    let index = Index::build(&rules);
    Ok(CompiledEnv {
        file: file.to_owned(),
        max_ttl,
        credentials,
        credential_order,
        rules,
        index,
        report_failed_claims: raw.report_failed_claims.unwrap_or(true),
        self_hosted_runners_ok: raw.self_hosted_runners_ok.unwrap_or(false),
    })
}

/// An error about the whole environment (at `location` when known).
fn env_error(file: &str, location: Option<Location>, message: impl Into<String>) -> PolicyError {
    let (line, column) = location.map(position).unwrap_or((None, None));
    PolicyError::InvalidEnvironment {
        file: file.to_owned(),
        line,
        column,
        message: message.into(),
    }
}

/// The environment's `max_ttl`: positive when given.
fn compile_max_ttl(file: &str, raw: Option<Spanned<Ttl>>) -> Result<Option<Duration>, PolicyError> {
    match raw {
        Some(ttl) if ttl.value.0.is_zero() => Err(env_error(
            file,
            Some(ttl.referenced),
            "max_ttl is zero; no credential could be issued (omit it for no ceiling)",
        )),
        Some(ttl) => Ok(Some(ttl.value.0)),
        None => Ok(None),
    }
}

/// The `credentials:` section: at least one, each compiled; with the names
/// in file order.
fn compile_credentials(
    file: &str,
    raw: Option<OrderedMap<Spanned<RawCredential>>>,
) -> Result<(HashMap<String, Credential>, Vec<String>), PolicyError> {
    let raw = raw.map(|m| m.0).unwrap_or_default();
    if raw.is_empty() {
        return Err(env_error(
            file,
            None,
            "this environment offers no credentials; add a `credentials:` section (or delete the file)",
        ));
    }
    let mut order = Vec::with_capacity(raw.len());
    let mut credentials = HashMap::with_capacity(raw.len());
    for (name, credential) in raw {
        let compiled = compile_credential(file, &name, credential)?;
        order.push(name.value.clone());
        credentials.insert(name.value, compiled);
    }
    Ok((credentials, order))
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
    let mut raw = credential.value;
    if raw.ttl.value.0.is_zero() {
        return Err(err(
            raw.ttl.referenced,
            "ttl is zero; give a positive duration such as `10m`",
        ));
    }
    let mut source =
        credential::compile_kind(&mut raw).map_err(|m| err(credential.referenced, &m))?;
    let RawCredential {
        wrap,
        wrap_ttl,
        ttl,
        ..
    } = raw;
    let wrap_ttl = match (wrap, wrap_ttl) {
        (Some(false), Some(t)) => Err((
            t.referenced,
            "`wrap: false` with `wrap_ttl`; remove one of them",
        )),
        (_, Some(t)) if t.value.0.is_zero() => {
            Err((t.referenced, "wrap_ttl is zero; give a positive duration"))
        }
        (_, Some(t)) => Ok(Some(t.value.0)),
        (Some(true), None) => Ok(Some(credential::DEFAULT_WRAP_TTL)),
        _ => Ok(None),
    }
    .map_err(|(location, message)| err(location, message))?;
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
    raw: Option<OrderedMap<Spanned<RawMatcher>>>,
) -> Result<Vec<Condition>, PolicyError> {
    let mut out = Vec::new();
    for (claim, matcher) in raw.map(|m| m.0).unwrap_or_default() {
        let condition =
            compile_condition(claim, matcher, true).map_err(|(location, message)| {
                env_error(file, Some(location), format!("require: {message}"))
            })?;
        if matches!(condition.matcher, Matcher::MissingOr(_)) {
            return Err(PolicyError::InvalidEnvironment {
                file: file.to_owned(),
                line: condition.line,
                column: condition.column,
                message: format!(
                    "require: claim `{}`: `missing_or` would admit tokens without the claim; it is for deny rules only",
                    condition.claim.written
                ),
            });
        }
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
            let admits_absent = |m: &Matcher| absent(m) || matches!(m, Matcher::MissingOr(_));
            if absent(&a.matcher) != absent(&b.matcher)
                && !(admits_absent(&a.matcher) && admits_absent(&b.matcher))
            {
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

/// The `rules:` section: at least one, names unique, each compiled.
fn compile_rules(
    scope: &FileScope<'_>,
    raw: Option<Vec<Spanned<RawRule>>>,
) -> Result<Vec<Rule>, PolicyError> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(env_error(
            scope.file,
            None,
            "this environment has no rules, so it admits no job; add a `rules:` section",
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut rules = Vec::with_capacity(raw.len());
    for rule in raw {
        let (line, column) = position(rule.value.name.referenced);
        let name = rule.value.name.value.clone();
        if let Some(first_line) = seen.get(&name) {
            return Err(PolicyError::DuplicateRule {
                file: scope.file.to_owned(),
                line,
                column,
                rule: name,
                first_line: *first_line,
            });
        }
        seen.insert(name, line.unwrap_or(0));
        rules.push(compile_rule(scope, rule)?);
    }
    Ok(rules)
}

/// Where a rule's errors go: its file and name.
struct RuleErrors<'a> {
    file: &'a str,
    rule: &'a str,
}

impl RuleErrors<'_> {
    fn at(&self, location: Location, message: impl Into<String>) -> PolicyError {
        let (line, column) = position(location);
        self.at_position(line, column, message)
    }

    fn at_position(
        &self,
        line: Option<usize>,
        column: Option<usize>,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError::InvalidRule {
            file: self.file.to_owned(),
            line,
            column,
            rule: self.rule.to_owned(),
            message: message.into(),
            hint: None,
        }
    }
}

/// One rule, step by step.
fn compile_rule(scope: &FileScope<'_>, rule: Spanned<RawRule>) -> Result<Rule, PolicyError> {
    let whole = rule.referenced;
    let RawRule {
        name,
        description,
        effect,
        issuer,
        claims,
        grant,
        ttl,
    } = rule.value;
    let errors = RuleErrors {
        file: scope.file,
        rule: &name.value,
    };
    if name.value.trim().is_empty() {
        return Err(errors.at(name.referenced, "the rule name is empty"));
    }
    let absent_fields = [
        ("grant", grant.is_none()),
        ("ttl", ttl.is_none()),
        ("effect", effect.is_none()),
        ("description", description.is_none()),
    ];
    check_no_field_under_claims(&errors, whole, &absent_fields, claims.as_ref())?;
    let effect = effect.unwrap_or(Effect::Allow);
    let issuer_info = resolve_issuer(scope, &name.value, &issuer)?;
    let own = own_conditions(&errors, issuer_info.provider, whole, claims)?;
    check_missing_or(&errors, effect, &own)?;
    check_deny_claims_sent(&errors, effect, issuer_info.provider, &own)?;
    let conditions = with_requirements(effect, scope.requirements, own);
    check_satisfiable(&errors, &conditions)?;
    check_ids_bound(&errors, effect, issuer_info, issuer.referenced, &conditions)?;
    let grant = compile_grant(scope, &errors, effect, whole, grant)?;
    let ttl = compile_rule_ttl(&errors, effect, ttl)?;
    let (line, column) = position(name.referenced);
    Ok(Rule {
        shared_name: name.value.as_str().into(),
        name: name.value,
        description,
        effect,
        issuer: issuer.value,
        provider: issuer_info.provider,
        conditions,
        grant,
        ttl,
        line,
        column,
    })
}

/// A rule field (`grant:`, `ttl:`, ...) indented one step too far lands in
/// `claims:` as a claim condition, and the rule then lacks it: an allow
/// rule "needs `grant:`" although the author wrote one. Said where the
/// field really is.
fn check_no_field_under_claims(
    errors: &RuleErrors<'_>,
    whole: Location,
    absent_fields: &[(&str, bool)],
    claims: Option<&OrderedMap<Spanned<RawMatcher>>>,
) -> Result<(), PolicyError> {
    let Some(claims) = claims else {
        return Ok(());
    };
    for (key, _) in &claims.0 {
        let misplaced = absent_fields
            .iter()
            .any(|(field, absent)| *absent && *field == key.value);
        if !misplaced {
            continue;
        }
        let (line, column) = position(key.referenced);
        let (_, rule_column) = position(whole);
        let mut err = errors.at_position(
            line,
            column,
            format!(
                "`{}` on line {} is indented under `claims:`, so it is read as a condition on a claim named `{}`, and the rule itself has no `{}:`",
                key.value,
                line.unwrap_or(0),
                key.value,
                key.value
            ),
        );
        if let PolicyError::InvalidRule { hint, .. } = &mut err {
            let text = match rule_column {
                Some(c) => format!(
                    "indent `{}:` like the rule's other fields (`name:`, `claims:`), at column {c}",
                    key.value
                ),
                None => format!(
                    "indent `{}:` like the rule's other fields (`name:`, `claims:`)",
                    key.value
                ),
            };
            *hint = Some(text.into());
        }
        return Err(err);
    }
    Ok(())
}

/// The rule's issuer among the configured ones: a policy cannot add one.
fn resolve_issuer<'s>(
    scope: &FileScope<'s>,
    rule: &str,
    issuer: &Spanned<String>,
) -> Result<&'s PolicyIssuer, PolicyError> {
    scope
        .issuers
        .iter()
        .find(|i| i.name == issuer.value)
        .ok_or_else(|| {
            let (line, column) = position(issuer.referenced);
            PolicyError::UnknownIssuer {
                file: scope.file.to_owned(),
                line,
                column,
                rule: rule.to_owned(),
                issuer: issuer.value.clone(),
                configured: scope.issuers.iter().map(|i| i.name.clone()).collect(),
            }
        })
}

/// The rule's own `claims:`: at least one, each claim once.
fn own_conditions(
    errors: &RuleErrors<'_>,
    provider: Provider,
    whole: Location,
    claims: Option<OrderedMap<Spanned<RawMatcher>>>,
) -> Result<Vec<Condition>, PolicyError> {
    let claims = claims.map(|m| m.0).unwrap_or_default();
    if claims.is_empty() {
        let repository = match provider.project_claims() {
            [] => "the repository".to_owned(),
            ids => format!("the repository by its id (`{}`)", ids.join("`, `")),
        };
        return Err(errors.at(
            whole,
            format!(
                "no claim conditions; a rule must bind at least one claim (bind {repository} and the ref, not only the audience)"
            ),
        ));
    }
    let own = claims
        .into_iter()
        .map(|(claim, matcher)| {
            compile_condition(claim, matcher, false)
                .map_err(|(location, message)| errors.at(location, message))
        })
        .collect::<Result<Vec<Condition>, PolicyError>>()?;
    let duplicate = own.iter().enumerate().find_map(|(i, a)| {
        own.iter()
            .skip(i + 1)
            .find(|b| b.claim.segments == a.claim.segments)
            .map(|b| (a, b))
    });
    if let Some((a, b)) = duplicate {
        return Err(errors.at_position(
            b.line,
            b.column,
            format!(
                "claim `{}` is the same claim as `{}` (line {}); write one condition (a list is any-of)",
                b.claim.written,
                a.claim.written,
                a.line.unwrap_or(0)
            ),
        ));
    }
    Ok(own)
}

/// `missing_or` makes a deny rule refuse tokens without the claim; in an
/// allow rule it would admit them, so it is for deny rules only.
fn check_missing_or(
    errors: &RuleErrors<'_>,
    effect: Effect,
    own: &[Condition],
) -> Result<(), PolicyError> {
    match own.iter().find(|c| matches!(c.matcher, Matcher::MissingOr(_))) {
        Some(c) if effect == Effect::Allow => Err(errors.at_position(
            c.line,
            c.column,
            format!(
                "claim `{}`: `missing_or` would admit tokens without the claim; it is for deny rules only (an allow rule's conditions already refuse a token that lacks the claim)",
                c.claim.written
            ),
        )),
        _ => Ok(()),
    }
}

/// A deny rule on a claim its issuer's provider never sends never holds (or,
/// with `missing_or`, holds for every token): most likely a misspelling
/// that silently disables the rule. For providers whose claims are known,
/// it is an error (allow rules get a lint warning instead: they fail
/// closed).
fn check_deny_claims_sent(
    errors: &RuleErrors<'_>,
    effect: Effect,
    provider: Provider,
    own: &[Condition],
) -> Result<(), PolicyError> {
    if effect != Effect::Deny {
        return Ok(());
    }
    for c in own {
        let Some(name) = c.claim.segments.first() else {
            continue;
        };
        if provider.sends(name) {
            continue;
        }
        let hint = match provider.closest_claim(name) {
            Some(known) => format!("; did you mean `{known}`?"),
            None => format!(
                " (the claims it sends: {})",
                provider.known_claims().join(", ")
            ),
        };
        return Err(errors.at_position(
            c.line,
            c.column,
            format!(
                "claim `{}`: {} never sends a `{name}` claim, so {}{hint}",
                c.claim.written,
                provider.title(),
                if matches!(c.matcher, Matcher::MissingOr(_)) {
                    "with `missing_or` this deny rule refuses every token"
                } else {
                    "this deny rule never refuses anything"
                },
            ),
        ));
    }
    Ok(())
}

/// Allow rules inherit the file's requirements, checked first; deny rules
/// are never narrowed by them (narrowing a deny rule would only weaken it).
fn with_requirements(
    effect: Effect,
    requirements: &[Condition],
    own: Vec<Condition>,
) -> Vec<Condition> {
    match effect {
        Effect::Allow => requirements.iter().cloned().chain(own).collect(),
        Effect::Deny => own,
    }
}

/// No two conditions on one claim contradict each other.
fn check_satisfiable(errors: &RuleErrors<'_>, conditions: &[Condition]) -> Result<(), PolicyError> {
    let Some((a, b)) = contradiction(conditions) else {
        return Ok(());
    };
    let origin = |c: &Condition| {
        if c.inherited {
            format!("require, line {}", c.line.unwrap_or(0))
        } else {
            format!("line {}", c.line.unwrap_or(0))
        }
    };
    Err(errors.at_position(
        b.line,
        b.column,
        format!(
            "can never match: claim `{}` must be {} ({}) and {} ({}); no value is both",
            b.claim.written,
            a.matcher.describe(),
            origin(a),
            b.matcher.describe(),
            origin(b)
        ),
    ))
}

/// A shared issuer signs tokens for every tenant on it: an allow rule must
/// bind the tenant and the project by their immutable ids (each of the
/// provider's tenant and project claims) to exact values, in the rule or
/// through `require:`, or else an exact `sub` that carries both ids. Names
/// are not enough: a renamed repository's or organisation's name can be
/// registered by someone else.
fn check_ids_bound(
    errors: &RuleErrors<'_>,
    effect: Effect,
    issuer: &PolicyIssuer,
    at: Location,
    conditions: &[Condition],
) -> Result<(), PolicyError> {
    if effect == Effect::Deny || !issuer.is_shared() {
        return Ok(());
    }
    let provider = issuer.provider;
    fn on<'c>(conditions: &'c [Condition], claim: &'c str) -> impl Iterator<Item = &'c Condition> {
        conditions
            .iter()
            .filter(move |c| c.claim.top_level() == Some(claim))
    }
    let sub_has_ids = on(conditions, "sub").any(|c| {
        c.matcher
            .exact_values()
            .is_some_and(|values| values.iter().all(|v| provider.sub_has_ids(v)))
    });
    let missing: Vec<&str> = provider
        .tenant_claims()
        .iter()
        .chain(provider.project_claims())
        .copied()
        .filter(|claim| !on(conditions, claim).any(|c| c.matcher.exact_values().is_some()))
        .collect();
    if sub_has_ids || missing.is_empty() {
        return Ok(());
    }
    let add: Vec<String> = missing
        .iter()
        .map(|claim| format!("`{claim}: \"<id>\"`"))
        .collect();
    let mut message = format!(
        "issuer `{}` ({}{}) signs tokens for every {} on it: an allow rule must bind {} by immutable id to exact values; add {}, in the rule or in the file's `require:`",
        issuer.name,
        provider.title(),
        issuer
            .url
            .as_deref()
            .map(|u| format!(" at {u}"))
            .unwrap_or_default(),
        tenant_word(provider),
        and_list(
            &provider
                .tenant_claims()
                .iter()
                .chain(provider.project_claims())
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
        ),
        and_list(&add),
    );
    if provider.info().ids_in_sub.is_some() {
        message.push_str(
            " (or bind `sub` exactly in the immutable form `repo:OWNER-OWNERID/REPO-REPOID:…`)",
        );
    }
    for claim in &missing {
        if let Some(c) = on(conditions, claim).next() {
            message.push_str(&format!(
                "; `{claim}` is bound to {}, which is not a list of exact values",
                c.matcher.describe()
            ));
        }
    }
    message.push_str(
        "; names alone are not enough: a renamed repository's or organisation's name can be registered by someone else",
    );
    Err(errors.at(at, message))
}

/// What a shared issuer's tenants are called, for messages.
fn tenant_word(provider: Provider) -> &'static str {
    match provider {
        Provider::Github | Provider::Forgejo => "repository owner",
        Provider::Gitlab => "group and user",
        Provider::Bitbucket => "workspace",
        _ => "organisation",
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// `grant:`: an allow rule names the file's credentials, each once; a deny
/// rule grants nothing.
fn compile_grant(
    scope: &FileScope<'_>,
    errors: &RuleErrors<'_>,
    effect: Effect,
    whole: Location,
    grant: Option<Vec<Spanned<String>>>,
) -> Result<Vec<String>, PolicyError> {
    let list = match (effect, grant) {
        (Effect::Deny, None) => return Ok(Vec::new()),
        (Effect::Deny, Some(_)) => {
            return Err(errors.at(
                whole,
                "a deny rule grants nothing; remove `grant:` (or make it an allow rule)",
            ));
        }
        (Effect::Allow, None) => {
            return Err(errors.at(
                whole,
                "an allow rule needs `grant:` naming the credentials it gives",
            ));
        }
        (Effect::Allow, Some(list)) if list.is_empty() => {
            return Err(errors.at(
                whole,
                "`grant: []` gives nothing; name at least one credential",
            ));
        }
        (Effect::Allow, Some(list)) => list,
    };
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        if !scope.credentials.contains(&item.value) {
            let (line, column) = position(item.referenced);
            return Err(PolicyError::UnknownCredential {
                file: scope.file.to_owned(),
                line,
                column,
                rule: errors.rule.to_owned(),
                credential: item.value,
                available: scope.credentials.into(),
            });
        }
        if names.contains(&item.value) {
            return Err(errors.at(item.referenced, format!("grants `{}` twice", item.value)));
        }
        names.push(item.value);
    }
    Ok(names)
}

/// The rule's `ttl`: positive, and allow rules only.
fn compile_rule_ttl(
    errors: &RuleErrors<'_>,
    effect: Effect,
    ttl: Option<Spanned<Ttl>>,
) -> Result<Option<Duration>, PolicyError> {
    match ttl {
        Some(ttl) if ttl.value.0.is_zero() => Err(errors.at(
            ttl.referenced,
            "ttl is zero; give a positive duration or omit it",
        )),
        Some(ttl) if effect == Effect::Deny => {
            Err(errors.at(ttl.referenced, "a deny rule has no ttl; remove it"))
        }
        Some(ttl) => Ok(Some(ttl.value.0)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;
    use crate::policy::test_support::compile as compile_sources;

    const CREDS: &str = "credentials:\n  db:\n    kv: {mount: secret, path: p}\n    ttl: 10m\n  cfg:\n    kv: {mount: secret, path: q}\n    ttl: 5m\n";

    fn issuers() -> Vec<PolicyIssuer> {
        vec!["github".into(), "gitlab".into()]
    }

    fn load(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
        compile_sources(files, &issuers())
    }

    fn rules(body: &str) -> String {
        format!("{CREDS}rules:\n{body}")
    }

    /// A file with one rule `r` for `issuer`, with these claims (a flow
    /// mapping's inside) and `grant: [db]`: its `issuer:` is on line 10
    /// and its claims on line 11.
    fn rule_for(issuer: &str, claims: &str) -> String {
        rules(&format!(
            "  - name: r\n    issuer: {issuer}\n    claims: {{{claims}}}\n    grant: [db]\n"
        ))
    }

    #[test]
    fn valid_file_compiles() {
        let set =
            load(&[("prod.yaml", &rule_for("github", "repository: acme/api"))]).expect("valid");
        assert_eq!(set.environments().collect::<Vec<_>>(), vec!["prod"]);
    }

    /// Each compile error: the Display starts with the expected
    /// `file:line:column:` (or `file:`) and says what is wrong.
    #[test]
    fn compile_errors_name_file_line_and_fix() {
        // Lines: credentials take 1..=7, `rules:` is 8, the first rule starts at 9.
        let r = "  - name: r\n    issuer: github\n    claims: {repository: acme/api}\n";
        let r_with = |rest: &str| rules(&format!("{r}{rest}"));
        let credential = |body: &str| format!("credentials:\n  db:\n{body}rules: []\n");
        // (file, the error's `line:column`, or "" for the whole file, what it says)
        let table: Vec<(String, &str, &str)> = vec![
            (
                rule_for("githubb", "a: b"),
                "10:13",
                "issuer `githubb`, which is not configured (configured: github, gitlab)",
            ),
            (
                r_with("    grant: [db, deploy-dbb]\n"),
                "12:17",
                "grants `deploy-dbb`, which is not among this file's credentials (db, cfg)",
            ),
            (
                r_with(&format!("    grant: [db]\n{r}    grant: [cfg]\n")),
                "13:11",
                "rule name `r` is already used at line 9",
            ),
            (rule_for("github", ""), "9:5", "no claim conditions"),
            (
                rules("  - name: r\n    issuer: github\n    grant: [db]\n"),
                "9:5",
                "no claim conditions",
            ),
            (
                rule_for("github", "ref: {glob: \"\"}"),
                "11:19",
                "claim `ref`: the glob pattern is empty",
            ),
            (
                rule_for("github", "ref: [a, {glob: \"\"}]"),
                "11:19",
                "claim `ref`: the glob pattern is empty",
            ),
            (
                rule_for("github", "ref: []"),
                "11:19",
                "claim `ref`: the list is empty",
            ),
            (rules(r), "9:5", "an allow rule needs `grant:`"),
            (
                r_with("    grant: []\n"),
                "9:5",
                "`grant: []` gives nothing",
            ),
            (
                r_with("    grant: [db, db]\n"),
                "12:17",
                "grants `db` twice",
            ),
            (
                r_with("    effect: deny\n    grant: [db]\n"),
                "9:5",
                "a deny rule grants nothing",
            ),
            (
                r_with("    grant: [db]\n    ttl: 0s\n"),
                "13:10",
                "ttl is zero",
            ),
            (
                credential("    kv: {mount: secret, path: p}\n    ttl: 0s\n"),
                "4:10",
                "credential `db`: ttl is zero",
            ),
            (
                credential("    ttl: 1m\n"),
                "3:5",
                "credential `db`: no credential kind",
            ),
            (
                credential("    kv: {mount: \"\", path: p}\n    ttl: 1m\n"),
                "3:5",
                "must not be empty",
            ),
            (
                credential("    kv: {mount: s, path: p, fields: []}\n    ttl: 1m\n"),
                "3:5",
                "omit `fields`",
            ),
            (
                format!("max_ttl: 0s\n{}", r_with("    grant: [db]\n")),
                "1:10",
                "max_ttl is zero",
            ),
            (String::new(), "", "offers no credentials"),
            ("# only a comment\n".into(), "", "offers no credentials"),
            (CREDS.into(), "", "has no rules"),
            (rules("  []\n"), "", "has no rules"),
        ];
        for (src, at, fragment) in &table {
            let err = match load(&[("e.yaml", src)]) {
                Err(err) => err,
                Ok(_) => panic!("expected an error for:\n{src}"),
            };
            let position = if at.is_empty() {
                "e.yaml: ".to_owned()
            } else {
                format!("e.yaml:{at}: ")
            };
            let text = err.to_string();
            assert!(
                text.starts_with(&position),
                "want {position:?}, got {text:?}\n{src}"
            );
            assert!(text.contains(fragment), "want {fragment:?} in {text:?}");
            assert_eq!(err.file(), "e.yaml");
        }
    }

    #[test]
    fn environment_names_and_duplicates() {
        let ok = rule_for("github", "a: b");
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
            PolicyIssuer::new("circleci", Provider::Circleci, None),
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
                r("runner_environment: {missing_or: self-hosted}"),
                "e.yaml:12:27: ",
                "rule `r`: claim `runner_environment`: `missing_or` would admit tokens without the claim; it is for deny rules only",
            ),
            (
                "require: {a: {missing_or: x}}\n".to_owned() + &r("b: c"),
                "e.yaml:1:14: ",
                "require: claim `a`: `missing_or` would admit tokens without the claim",
            ),
            (
                rules(
                    "  - name: d\n    effect: deny\n    issuer: github\n    claims:\n      runner_environment: {missing_or: self-hosted}\n",
                ) + "  - name: r\n    issuer: github\n    claims: {a: b}\n    grant: [db]\n",
                "",
                "",
            ),
            (
                "require: {a: {glob: \"\"}}\n".to_owned() + &r("b: c"),
                "e.yaml:1:14: ",
                "require: claim `a`: the glob pattern is empty",
            ),
            (
                rule_for("buildkite", "pipeline_slug: deploy"),
                "e.yaml:10:13: ",
                "issuer `buildkite` (Buildkite at https://agent.buildkite.com) signs tokens for every organisation on it: an allow rule must bind `organization_id` and `pipeline_id` by immutable id to exact values; add `organization_id: \"<id>\"` and `pipeline_id: \"<id>\"`",
            ),
            (
                rule_for("buildkite", "organization_slug: acme, pipeline_id: p"),
                "e.yaml:10:13: ",
                "add `organization_id: \"<id>\"`, in the rule",
            ),
            (
                rule_for(
                    "buildkite",
                    "organization_id: {glob: \"acme*\"}, pipeline_id: p",
                ),
                "e.yaml:10:13: ",
                "`organization_id` is bound to glob \"acme*\", which is not a list of exact values",
            ),
            (
                rule_for("circleci", "oidc.circleci.com/project-id: p"),
                "e.yaml:10:13: ",
                "add `oidc.circleci.com/org-id: \"<id>\"`",
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
        // Ids bound exactly (in the rule or by require:) compile; deny
        // rules on a shared issuer need no ids.
        for ok in [
            rule_for("buildkite", "organization_id: o, pipeline_id: p"),
            format!(
                "require: {{organization_id: [\"1\", \"2\"]}}\n{}",
                rule_for("buildkite", "pipeline_id: [p1, p2]")
            ),
            rules(
                "  - name: r\n    issuer: circleci\n    claims: {oidc.circleci.com/org-id: o1, oidc.circleci.com/project-id: p1}\n    grant: [db]\n  - name: d\n    effect: deny\n    issuer: circleci\n    claims: {oidc.circleci.com/org-id: o2}\n",
            ),
        ] {
            if let Err(e) = load(&ok) {
                panic!("{e}\n{ok}");
            }
        }
    }

    /// Regression: a misspelt claim silently disabled a deny rule
    /// (`runner_enviroment: self-hosted` never holds, so it refused
    /// nothing). For a provider whose claims are known, a deny rule on a
    /// claim it never sends is a compile error with the closest claim it
    /// does send; for a generic issuer it compiles.
    #[test]
    fn a_deny_rule_on_a_claim_the_provider_never_sends_is_an_error() {
        let issuers = [
            PolicyIssuer::new("gh", Provider::Github, Some("http://127.0.0.1:8401".into())),
            PolicyIssuer::named("generic"),
        ];
        let load =
            |src: &str| PolicySet::from_sources(&[("e.yaml".to_owned(), src.to_owned())], &issuers);
        let table: Vec<(String, &str, &str)> = vec![
            (
                rules(
                    "  - name: d\n    effect: deny\n    issuer: gh\n    claims:\n      runner_enviroment: self-hosted\n",
                ),
                "e.yaml:13:26: ",
                "rule `d`: claim `runner_enviroment`: GitHub Actions never sends a `runner_enviroment` claim, so this deny rule never refuses anything; did you mean `runner_environment`?",
            ),
            (
                rules(
                    "  - name: d\n    effect: deny\n    issuer: gh\n    claims:\n      runner_enviroment: {missing_or: self-hosted}\n",
                ),
                "e.yaml:13:26: ",
                "with `missing_or` this deny rule refuses every token; did you mean `runner_environment`?",
            ),
            (
                rules(
                    "  - name: d\n    effect: deny\n    issuer: gh\n    claims:\n      /runner/kind: self-hosted\n",
                ),
                "e.yaml:13:21: ",
                "claim `/runner/kind`: GitHub Actions never sends a `runner` claim, so this deny rule never refuses anything (the claims it sends: iss, sub, aud",
            ),
        ];
        for (src, position, fragment) in &table {
            let text = match load(src) {
                Err(err) => err.to_string(),
                Ok(_) => panic!("expected an error for:\n{src}"),
            };
            assert!(
                text.starts_with(position),
                "want {position:?}, got {text:?}"
            );
            assert!(text.contains(fragment), "want {fragment:?} in {text:?}");
        }
        let generic = rules(
            "  - name: d\n    effect: deny\n    issuer: generic\n    claims:\n      runner_enviroment: self-hosted\n",
        ) + "  - name: r\n    issuer: gh\n    claims: {repository_id: \"1\"}\n    grant: [db]\n";
        if let Err(e) = load(&generic) {
            panic!("{e}");
        }
    }

    /// Regression: a rule for github.com binding only `ref` and
    /// `event_name` compiled (lint warned, exit 0), admitting every
    /// repository on github.com. Every allow rule for a shared issuer must
    /// bind the tenant's and the project's immutable ids to exact values
    /// (in the rule or `require:`), or an exact `sub` carrying both; a
    /// single-tenant issuer's rule compiles (lint warns). (provider, URL,
    /// shared?)
    #[test]
    fn shared_issuers_need_the_tenant_and_project_ids() {
        let table: &[(Provider, Option<&str>, bool)] = &[
            (
                Provider::Github,
                Some("https://token.actions.githubusercontent.com"),
                true,
            ),
            (
                Provider::Github,
                Some("https://token.actions.githubusercontent.com/acme"),
                true,
            ),
            // An unknown URL is taken as shared.
            (Provider::Github, None, true),
            (
                Provider::Github,
                Some("https://ghe.example.com/_services/token"),
                false,
            ),
            (Provider::Github, Some("http://127.0.0.1:8401"), false),
            (Provider::Gitlab, Some("https://gitlab.com"), true),
            (
                Provider::Gitlab,
                Some("https://gitlab.acme.internal"),
                false,
            ),
            (
                Provider::Buildkite,
                Some("https://agent.buildkite.com"),
                true,
            ),
            // A stand-in named as Buildkite's gets the check.
            (Provider::Buildkite, Some("http://127.0.0.1:8403"), true),
            (
                Provider::Circleci,
                Some("https://oidc.circleci.com/org/c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e"),
                true,
            ),
            (Provider::Bitbucket, Some("http://127.0.0.1:8404"), true),
            (
                Provider::AzureDevops,
                Some("https://vstoken.dev.azure.com/c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e"),
                false,
            ),
            (
                Provider::Forgejo,
                Some("https://codeberg.org/api/actions"),
                false,
            ),
            (Provider::Generic, Some("https://ci.example.com"), false),
        ];
        for (provider, url, shared) in table {
            let issuer = PolicyIssuer::new("ci", *provider, url.map(str::to_owned));
            assert_eq!(issuer.is_shared(), *shared, "{provider:?} {url:?}");
            let issuers = [issuer];
            let load = |body: &str| {
                compile_sources(&[("e.yaml", &rules(body))], &issuers)
                    .err()
                    .map(|e| e.to_string())
            };
            let rule = |claims: &str| {
                format!("  - name: r\n    issuer: ci\n    claims: {{{claims}}}\n    grant: [db]\n")
            };
            let open = load(&rule("ref: refs/heads/main, event_name: push"));
            let ids: Vec<&str> = provider
                .tenant_claims()
                .iter()
                .chain(provider.project_claims())
                .copied()
                .collect();
            if !*shared {
                assert_eq!(open, None, "{provider:?} {url:?}");
                continue;
            }
            let err = open.unwrap_or_default();
            let at = format!(
                "e.yaml:10:13: rule `r`: issuer `ci` ({}{}) signs tokens for every ",
                provider.title(),
                url.map(|u| format!(" at {u}")).unwrap_or_default()
            );
            assert!(err.starts_with(&at), "{provider:?}: {err}");
            assert_eq!(ids.len(), 2, "{provider:?}");
            for id in &ids {
                assert!(
                    err.contains(&format!("add `{}", ids[0])),
                    "{provider:?}: {err}"
                );
                assert!(
                    err.contains(&format!("`{id}: \"<id>\"`")),
                    "{provider:?}: {err}"
                );
            }
            let (tenant, project) = (ids[0], ids[1]);
            // (claims, compiles?, what the error names)
            let cases: Vec<(String, bool, String)> = vec![
                (
                    format!("\"{tenant}\": t1, \"{project}\": p1"),
                    true,
                    String::new(),
                ),
                (
                    format!("\"{tenant}\": [t1, t2], \"{project}\": [p1, \"2\"]"),
                    true,
                    String::new(),
                ),
                (
                    format!("\"{tenant}\": t1"),
                    false,
                    format!("add `{project}: \"<id>\"`, in the rule"),
                ),
                (
                    format!("\"{project}\": p1"),
                    false,
                    format!("add `{tenant}: \"<id>\"`, in the rule"),
                ),
                (
                    format!("\"{tenant}\": t1, \"{project}\": {{glob: \"p*\"}}"),
                    false,
                    format!("`{project}` is bound to glob \"p*\", which is not"),
                ),
                (
                    format!("\"{tenant}\": t1, \"{project}\": {{regex: \"p[0-9]\"}}"),
                    false,
                    format!("`{project}` is bound to regex"),
                ),
                (
                    format!("\"{tenant}\": {{not: t2}}, \"{project}\": p1"),
                    false,
                    format!("`{tenant}` is bound to not \"t2\""),
                ),
                (
                    format!("\"{tenant}\": {{present: true}}, \"{project}\": p1"),
                    false,
                    format!("`{tenant}` is bound to present"),
                ),
                (
                    format!("\"{tenant}\": [t1, {{glob: \"t*\"}}], \"{project}\": p1"),
                    false,
                    format!("`{tenant}` is bound to any of"),
                ),
            ];
            for (claims, compiles, names) in &cases {
                match load(&rule(claims)) {
                    None => assert!(compiles, "{provider:?} {claims}: compiled"),
                    Some(e) => {
                        assert!(!compiles, "{provider:?} {claims}: {e}");
                        assert!(e.contains(names), "{provider:?} {claims}: {e}");
                    }
                }
            }
            // `require:` counts; deny rules need no ids.
            let required = format!(
                "require: {{\"{tenant}\": t1, \"{project}\": p1}}\n{}",
                rules(&rule("ref: main"))
            );
            assert_eq!(
                compile_sources(&[("e.yaml", &required)], &issuers)
                    .err()
                    .map(|e| e.to_string()),
                None,
                "{provider:?}"
            );
            let deny = "  - name: d\n    effect: deny\n    issuer: ci\n    claims: {sub: x}\n";
            assert_eq!(
                load(&format!(
                    "{deny}{}",
                    rule(&format!("\"{tenant}\": t, \"{project}\": p"))
                )),
                None,
                "{provider:?}"
            );
        }

        // GitHub's immutable `sub`, bound exactly, binds both ids.
        let github = [PolicyIssuer::from_url(
            "ci",
            "https://token.actions.githubusercontent.com",
        )];
        let sub = |condition: &str| {
            let body = format!(
                "  - name: r\n    issuer: ci\n    claims:\n      sub: {condition}\n    grant: [db]\n"
            );
            compile_sources(&[("e.yaml", &rules(&body))], &github)
                .err()
                .map(|e| e.to_string())
        };
        let immutable = "\"repo:acme-10001/api-892347:ref:refs/heads/main\"";
        assert_eq!(sub(immutable), None);
        assert_eq!(
            sub(&format!(
                "[{immutable}, \"repo:acme-10001/api-892347:environment:production\"]"
            )),
            None
        );
        for refused in [
            "\"repo:acme/api:ref:refs/heads/main\"".to_owned(),
            format!("[{immutable}, \"repo:acme/api:ref:refs/heads/main\"]"),
            "{glob: \"repo:acme-10001/api-892347:*\"}".to_owned(),
            "\"repo:acme-x/api-892347:ref:refs/heads/main\"".to_owned(),
        ] {
            let e = sub(&refused).unwrap_or_default();
            assert!(
                e.contains(
                    "or bind `sub` exactly in the immutable form `repo:OWNER-OWNERID/REPO-REPOID:…`"
                ),
                "{refused}: {e}"
            );
        }

        // The demo's Buildkite stand-in, named by the shipped config: the
        // staging policy binds the organisation's and the pipeline's ids.
        let demo = crate::config::Config::load(std::path::Path::new("examples/jobkey.toml"))
            .expect("the example config loads");
        let issuers = PolicyIssuer::from_settings(&demo.issuers);
        let buildkite = issuers
            .iter()
            .find(|i| i.name == "buildkite")
            .expect("buildkite");
        assert_eq!(buildkite.provider, Provider::Buildkite);
        assert!(buildkite.is_shared());
        let staging = std::fs::read_to_string("policies/staging.yaml").expect("staging");
        assert!(compile_sources(&[("staging.yaml", &staging)], &issuers).is_ok());
        let unbound = staging.replace(
            "      pipeline_id: 0189a3c2-8e62-4f4c-a01b-6c7d8e9f0a12\n",
            "",
        );
        assert_ne!(unbound, staging);
        let err = compile_sources(&[("staging.yaml", &unbound)], &issuers)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("rule `buildkite-api-deploy`: issuer `buildkite` (Buildkite at http://127.0.0.1:8403) signs tokens for every organisation on it")
                && err.contains("add `pipeline_id: \"<id>\"`"),
            "{err}"
        );
    }
}
