//! `jobkey policy lint`: warnings for policies that compile but admit more
//! than their author probably meant. Each warning has a stable
//! code, the rule, the position and the fix.
//!
//! | code | name | what |
//! |---|---|---|
//! | JK001 | `unbound-identity` | an allow rule binds no repository/project/owner/organisation claim |
//! | JK002 | `name-without-id` | a name (`repository`, `project_path`, `repository_owner`, `namespace_path`) is bound without its immutable id |
//! | JK003 | `wildcard-crosses-repositories` | a glob/regex on `sub` or a repository/project name can match other repositories, and no exact id pins the repository |
//! | JK004 | `branch-without-event` | a GitHub rule binds a branch `ref` but does not pin `event_name` to events that exclude `pull_request_target` |
//! | JK005 | `shared-issuer-without-tenant` | reserved: a compile *error* now (a rule for a shared issuer must bind the tenant's and the project's ids) |
//! | JK006 | `self-hosted-runners` | an allow rule is open to self-hosted runners, in a file that does not say `self_hosted_runners_ok: true`: no `runner_environment` condition excludes them, and no deny rule refuses both `self-hosted` and a token without the claim (`{missing_or: self-hosted}`) |
//! | JK007 | `ttl-above-limit` | a rule or credential TTL is above the environment's `max_ttl` (silently clamped) |
//! | JK008 | `unknown-claim` | an allow rule (or `require:`) names a claim its issuer's provider never sends (with the closest one it does: a misspelling); in a deny rule this is a compile error |
//! | JK009 | `pattern-on-id` | a glob or regex on an immutable id (`repository_id: {glob: "55*"}`): it admits whatever id fits, including new ones |
//! | JK010 | `ids-only-in-sub` | a GitHub rule binds the ids only through `sub` in the immutable form, which reads like the older name-only form for names ending in `-` and digits |
//!
//! Deny rules are only checked by JK007 (they have no TTL) — the others are
//! about what allow rules admit. Findings about one condition point at
//! the condition (JK008, JK009, JK010), the others at the rule's
//! `name:`. Which claims name a repository or an
//! owner, and which provider-specific checks apply (JK004, JK006), come
//! from the rule's issuer's provider (`crate::provider`); a generic issuer
//! gets every provider's claims, and GitHub's JK004 when its rule binds a
//! GitHub-shaped branch ref.

use crate::policy::PolicySet;
use crate::policy::compile::{CompiledEnv, Condition, Rule};
use crate::policy::matcher::Matcher;
use crate::policy::parse::Effect;
use crate::provider::{BranchEvent, Provider};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Warning {
    /// Stable code, e.g. `JK003`.
    pub code: &'static str,
    /// Stable name, e.g. `wildcard-crosses-repositories`.
    pub name: &'static str,
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub environment: String,
    /// `None` for findings about the file (a credential's TTL).
    pub rule: Option<String>,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "{}:{l}:{c}: ", self.file)?,
            (Some(l), None) => write!(f, "{}:{l}: ", self.file)?,
            _ => write!(f, "{}: ", self.file)?,
        }
        write!(f, "warning[{} {}] ", self.code, self.name)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule `{rule}`: ")?;
        }
        write!(f, "{}\n  fix: {}", self.message, self.fix)
    }
}

/// Lints every environment of `set`.
pub(crate) fn lint(set: &PolicySet) -> Vec<Warning> {
    let mut out = Vec::new();
    for name in set.environments() {
        if let Some(env) = set.env(name) {
            lint_env(name, env, &mut out);
        }
    }
    out
}

fn conditions_on<'r>(rule: &'r Rule, claim: &'r str) -> impl Iterator<Item = &'r Condition> {
    rule.conditions
        .iter()
        .filter(move |c| c.claim.top_level() == Some(claim))
}

fn binds_exactly(rule: &Rule, claim: &str) -> bool {
    conditions_on(rule, claim).any(|c| c.matcher.exact_values().is_some())
}

fn lint_env(environment: &str, env: &CompiledEnv, out: &mut Vec<Warning>) {
    let warn =
        |out: &mut Vec<Warning>, rule: Option<&Rule>, code, name, message: String, fix: String| {
            out.push(Warning {
                code,
                name,
                file: env.file.clone(),
                line: rule.and_then(|r| r.line),
                column: rule.and_then(|r| r.column),
                environment: environment.to_owned(),
                rule: rule.map(|r| r.name.clone()),
                message,
                fix,
            });
        };
    // A finding about one condition: at the condition, naming its rule
    // (`None` for the file's `require:`).
    let warn_at = |out: &mut Vec<Warning>,
                   rule: Option<&Rule>,
                   c: &Condition,
                   code,
                   name,
                   message: String,
                   fix: String| {
        out.push(Warning {
            code,
            name,
            file: env.file.clone(),
            line: c.line,
            column: c.column,
            environment: environment.to_owned(),
            rule: rule.map(|r| r.name.clone()),
            message,
            fix,
        });
    };
    // `require:` conditions already reported, per provider.
    let mut required_seen: Vec<(Option<usize>, Option<usize>, Provider)> = Vec::new();

    for rule in &env.rules {
        if let (Some(ttl), Some(max)) = (rule.ttl, env.max_ttl)
            && ttl > max
        {
            warn(
                out,
                Some(rule),
                "JK007",
                "ttl-above-limit",
                format!(
                    "ttl {} is above the environment's max_ttl {}; grants are clamped to {}",
                    human(ttl),
                    human(max),
                    human(max)
                ),
                format!(
                    "lower the rule's ttl to at most {} (or raise max_ttl if that is what you meant)",
                    human(max)
                ),
            );
        }
        if rule.effect == Effect::Deny {
            continue;
        }
        let provider = rule.provider;

        // JK008
        for c in &rule.conditions {
            let Some(claim) = c.claim.segments.first() else {
                continue;
            };
            if provider.sends(claim) {
                continue;
            }
            if c.inherited {
                let key = (c.line, c.column, provider);
                if required_seen.contains(&key) {
                    continue;
                }
                required_seen.push(key);
            }
            let fix = match provider.closest_claim(claim) {
                Some(known) => format!("did you mean `{known}`?"),
                None => format!(
                    "use a claim {} sends ({})",
                    provider.title(),
                    provider.known_claims().join(", ")
                ),
            };
            warn_at(
                out,
                (!c.inherited).then_some(rule),
                c,
                "JK008",
                "unknown-claim",
                format!(
                    "{}claim `{}`: {} never sends a `{claim}` claim, so {} never admits a job",
                    if c.inherited { "require: " } else { "" },
                    c.claim.written,
                    provider.title(),
                    if c.inherited {
                        format!("an allow rule for issuer `{}`", rule.issuer)
                    } else {
                        "this rule".to_owned()
                    }
                ),
                fix,
            );
        }

        // JK001
        let binds_identity = rule.conditions.iter().any(|c| {
            c.matcher.is_positive()
                && c.claim
                    .top_level()
                    .and_then(|n| provider.role_of(n))
                    .is_some_and(|r| r.is_identity())
        });
        if !binds_identity {
            warn(out, Some(rule), "JK001", "unbound-identity",
                "binds no repository, project, owner or organisation claim: any repository of the issuer whose other claims fit is admitted".into(),
                identity_fix(provider));
        }

        // JK009: a pattern on an id (reported at the condition; JK002
        // then says nothing more about that id).
        let ids = id_claims(provider);
        for c in &rule.conditions {
            let Some(claim) = c.claim.top_level() else {
                continue;
            };
            if !ids.contains(&claim) || !has_pattern(&c.matcher) {
                continue;
            }
            if c.inherited {
                let key = (c.line, c.column, provider);
                if required_seen.contains(&key) {
                    continue;
                }
                required_seen.push(key);
            }
            warn_at(
                out,
                (!c.inherited).then_some(rule),
                c,
                "JK009",
                "pattern-on-id",
                format!(
                    "{}`{claim}` is an immutable id, bound here to {}: that admits every {} whose id fits the pattern, including ones anyone creates later",
                    if c.inherited { "require: " } else { "" },
                    c.matcher.describe(),
                    id_noun(provider, claim),
                ),
                format!("bind `{claim}` to exact values (a list for several)"),
            );
        }

        // JK002
        for (name, id) in provider.renamed_claims() {
            if !binds_exactly(rule, name) || binds_exactly(rule, id) {
                continue;
            }
            let mut on_id = conditions_on(rule, id);
            let message = match on_id.next() {
                None => format!(
                    "binds `{name}` without `{id}`: names can be renamed and re-registered by someone else"
                ),
                Some(c) if has_pattern(&c.matcher) => continue,
                Some(c) => format!(
                    "binds `{name}` but `{id}` only to {}: names can be renamed and re-registered by someone else",
                    c.matcher.describe()
                ),
            };
            warn(
                out,
                Some(rule),
                "JK002",
                "name-without-id",
                message,
                format!("add `{id}: \"<the id>\"` next to `{name}`"),
            );
        }

        // JK010
        if provider.info().ids_in_sub.is_some()
            && let Some(sub) = conditions_on(rule, "sub").find(|c| {
                c.matcher
                    .exact_values()
                    .is_some_and(|vs| vs.iter().all(|v| provider.sub_has_ids(v)))
            })
        {
            let unbound: Vec<&str> = provider
                .tenant_claims()
                .iter()
                .chain(provider.project_claims())
                .copied()
                .filter(|id| !binds_exactly(rule, id))
                .collect();
            if !unbound.is_empty() {
                warn_at(
                    out,
                    (!sub.inherited).then_some(rule),
                    sub,
                    "JK010",
                    "ids-only-in-sub",
                    format!(
                        "the owner's and the repository's ids are bound only through `sub` ({}): the immutable form `repo:OWNER-OWNERID/REPO-REPOID:` reads the same as the older name-only form of an owner and a repository whose names end in `-` and digits",
                        sub.matcher.describe()
                    ),
                    format!(
                        "bind {} as well",
                        unbound
                            .iter()
                            .map(|c| format!("`{c}`"))
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                );
            }
        }

        // JK003
        let ids = provider.project_id_claims();
        if !ids.iter().any(|c| binds_exactly(rule, c)) {
            for claim in provider.project_name_claims() {
                for c in conditions_on(rule, claim) {
                    if let Some(pattern) = crossing_wildcard(provider, claim, &c.matcher) {
                        warn(
                            out,
                            Some(rule),
                            "JK003",
                            "wildcard-crosses-repositories",
                            format!(
                                "`{claim}` pattern {pattern} can match other repositories (and a repository anyone creates later under that name)"
                            ),
                            format!(
                                "bind {} to exact values, or make the pattern name the whole repository before any wildcard",
                                or_list(&ids)
                            ),
                        );
                    }
                }
            }
        }

        // JK004
        if let Some(check) = branch_event_check(provider, rule)
            && binds_branch(rule, &check)
            && !event_pinned(rule, &check)
        {
            warn(
                out,
                Some(rule),
                "JK004",
                "branch-without-event",
                format!(
                    "binds a branch `{}` but not `{}`: `{}` runs carry the default branch as `{}` while running a fork's code",
                    check.ref_claim, check.event_claim, check.unsafe_event, check.ref_claim
                ),
                format!(
                    "add `{}: {}` (the events that run trusted code only)",
                    check.event_claim, check.safe_events
                ),
            );
        }

        // JK006
        if let Some(runner) = provider.lint().runner
            && !env.self_hosted_runners_ok
        {
            let cover = self_hosted_cover(rule, env, runner.claim, runner.self_hosted);
            let message = match cover {
                Cover::Full => None,
                Cover::None => Some(format!(
                    "open to self-hosted runners (no `{}` condition excludes `{}`, and no deny rule for issuer `{}` refuses it)",
                    runner.claim, runner.self_hosted, rule.issuer
                )),
                Cover::PresentOnly(deny) => Some(format!(
                    "open to self-hosted runners: deny rule `{deny}` refuses `{}: {}` but not a token without `{}`, which it lets through (a deny rule's conditions hold only for claims the token carries)",
                    runner.claim, runner.self_hosted, runner.claim
                )),
            };
            if let Some(message) = message {
                warn(
                    out,
                    Some(rule),
                    "JK006",
                    "self-hosted-runners",
                    message,
                    format!(
                        "add `{}: {}` to the rule (or `require:`), or a deny rule for this issuer with `{}: {{missing_or: {}}}`, which also refuses tokens without the claim; if self-hosted runners are fine for this environment, write `self_hosted_runners_ok: true` at the top of the file",
                        runner.claim, runner.hosted, runner.claim, runner.self_hosted
                    ),
                );
            }
        }
    }

    if let Some(max) = env.max_ttl {
        for name in &env.credential_order {
            if let Some(credential) = env.credentials.get(name)
                && credential.ttl > max
            {
                warn(
                    out,
                    None,
                    "JK007",
                    "ttl-above-limit",
                    format!(
                        "credential `{name}` has ttl {} above the environment's max_ttl {}; it is clamped to {}",
                        human(credential.ttl),
                        human(max),
                        human(max)
                    ),
                    format!("lower `{name}`'s ttl to at most {}", human(max)),
                );
            }
        }
    }
}

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The immutable id claims of the provider (every provider's for a generic
/// issuer).
fn id_claims(provider: Provider) -> Vec<&'static str> {
    let entries: Vec<Provider> = match provider {
        Provider::Generic => Provider::ALL.to_vec(),
        p => vec![p],
    };
    let mut out: Vec<&'static str> = Vec::new();
    for p in entries {
        let renamed = p.renamed_claims();
        let ids = p
            .tenant_claims()
            .iter()
            .chain(p.project_claims())
            .copied()
            .chain(renamed.iter().map(|(_, id)| *id));
        for id in ids {
            if !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// What an id names, for messages.
fn id_noun(provider: Provider, claim: &str) -> &'static str {
    let tenant = Provider::ALL
        .iter()
        .filter(|p| provider == Provider::Generic || **p == provider)
        .any(|p| p.tenant_claims().contains(&claim));
    if tenant {
        "owner"
    } else {
        "repository or project"
    }
}

/// Whether `m` holds a glob or a regex (alone or in a list).
fn has_pattern(m: &Matcher) -> bool {
    match m {
        Matcher::Glob(_) | Matcher::Regex { .. } => true,
        Matcher::AnyOf(items) => items.iter().any(has_pattern),
        _ => false,
    }
}

/// Whether any exact value or pattern of `m` contains `needle`.
fn mentions(m: &Matcher, needle: &str) -> bool {
    match m {
        Matcher::Exact(v) => v.contains(needle),
        Matcher::Glob(g) => g.as_str().contains(needle),
        Matcher::Regex { source, .. } => source.contains(needle),
        Matcher::AnyOf(items) => items.iter().any(|i| mentions(i, needle)),
        Matcher::MissingOr(inner) => mentions(inner, needle),
        Matcher::Not(_) | Matcher::Present(_) => false,
    }
}

/// The fix of JK001: the provider's immutable ids, or every provider's.
fn identity_fix(provider: Provider) -> String {
    let ids: Vec<&str> = match provider {
        Provider::Generic => Provider::ALL
            .iter()
            .flat_map(|p| p.project_claims().iter().chain(p.tenant_claims()))
            .copied()
            .collect(),
        p => p
            .project_claims()
            .iter()
            .chain(p.tenant_claims())
            .copied()
            .collect(),
    };
    let ids = {
        let mut unique: Vec<&str> = Vec::new();
        for id in ids {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        unique
    };
    if ids.is_empty() {
        "bind the repository or project the rule is for (the provider's tokens name it in `sub`)"
            .into()
    } else {
        format!(
            "bind the repository or its owner by an immutable id ({})",
            or_list(&ids)
        )
    }
}

/// `a`, `b` or `c`, each in backticks.
fn or_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The branch-and-event check for the rule: its provider's, or for a
/// generic issuer the one whose branch prefix the rule's ref mentions.
fn branch_event_check(provider: Provider, rule: &Rule) -> Option<BranchEvent> {
    let checks = provider.branch_event_checks();
    if provider != Provider::Generic {
        return checks.first().copied();
    }
    checks.into_iter().find(|check| {
        conditions_on(rule, check.ref_claim).any(|c| mentions(&c.matcher, check.branch_prefix))
    })
}

/// The rule admits some branch ref: a positive ref condition that is not
/// only tags, or a `sub` naming a branch ref.
fn binds_branch(rule: &Rule, check: &BranchEvent) -> bool {
    let ref_branch = conditions_on(rule, check.ref_claim).any(|c| {
        c.matcher.is_positive()
            && !c
                .matcher
                .exact_values()
                .is_some_and(|vs| vs.iter().all(|v| v.starts_with(check.tag_prefix)))
    });
    ref_branch || conditions_on(rule, "sub").any(|c| mentions(&c.matcher, check.sub_branch))
}

/// The event claim is bound to exact values, none of them the unsafe event.
fn event_pinned(rule: &Rule, check: &BranchEvent) -> bool {
    conditions_on(rule, check.event_claim).any(|c| {
        c.matcher
            .exact_values()
            .is_some_and(|vs| !vs.contains(&check.unsafe_event))
    })
}

/// How far a rule is kept from self-hosted runners.
enum Cover<'e> {
    /// Its own condition, or the file's deny rules, refuse both a
    /// self-hosted runner and a token without the runner claim.
    Full,
    /// A deny rule (named) refuses a self-hosted runner, but a token
    /// without the claim passes every deny rule.
    PresentOnly(&'e str),
    None,
}

/// Whether the rule can admit a self-hosted runner. Its own condition on
/// the runner claim rejects it (and, like every value condition, a token
/// without the claim); or the file's deny rules for the same issuer whose
/// only condition is on the runner claim refuse both `self_hosted` and a
/// token without the claim (`{missing_or: self-hosted}`, or a `{present:
/// false}` rule beside a `self-hosted` one). A deny rule's condition on a
/// claim the token lacks does not hold, so `{runner_environment:
/// self-hosted}` alone lets such a token through.
fn self_hosted_cover<'e>(
    rule: &Rule,
    env: &'e CompiledEnv,
    claim: &str,
    self_hosted: &str,
) -> Cover<'e> {
    let own = conditions_on(rule, claim).any(|c| {
        !matches!(c.matcher, Matcher::Present(false)) && !c.matcher.matches_text(self_hosted)
    });
    if own {
        return Cover::Full;
    }
    let denies: Vec<&'e Rule> = env
        .rules
        .iter()
        .filter(|d| {
            d.effect == Effect::Deny
                && d.issuer == rule.issuer
                && d.conditions.len() == 1
                && d.conditions
                    .iter()
                    .all(|c| c.claim.top_level() == Some(claim))
        })
        .collect();
    let refuses_self_hosted = denies.iter().find(|d| {
        d.conditions
            .iter()
            .all(|c| c.matcher.matches_text(self_hosted))
    });
    let refuses_absent = denies
        .iter()
        .any(|d| d.conditions.iter().all(|c| c.matcher.holds(None)));
    match (refuses_self_hosted, refuses_absent) {
        (Some(_), true) => Cover::Full,
        (Some(deny), false) => Cover::PresentOnly(&deny.name),
        (None, _) => Cover::None,
    }
}

/// For a glob/regex (or a list holding one) on a project-naming claim, the
/// pattern when its fixed start does not name a whole project.
fn crossing_wildcard(provider: Provider, claim: &str, m: &Matcher) -> Option<String> {
    let prefix = match m {
        Matcher::Glob(g) => {
            if !g.as_str().contains('*') {
                return None;
            }
            g.as_str().split('*').next().unwrap_or("").to_owned()
        }
        Matcher::Regex { source, .. } => source
            .chars()
            .take_while(|c| !"\\.+*?()|[]{}^$".contains(*c))
            .collect(),
        Matcher::AnyOf(items) => {
            return items
                .iter()
                .find_map(|i| crossing_wildcard(provider, claim, i));
        }
        _ => return None,
    };
    // Any wildcard in a name crosses projects; `sub` names one once its
    // fixed start spells the project out.
    let names_project = claim == "sub" && provider.sub_names_project(&prefix);
    if names_project {
        None
    } else {
        Some(m.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyIssuer;

    const CREDS: &str = "credentials:\n  db:\n    kv: {mount: s, path: p}\n    ttl: 10m\n";
    const GOOD: &str = "repository_id: \"1\"\n      repository: acme/api\n      ref: refs/heads/main\n      event_name: [push]\n      runner_environment: github-hosted";

    fn codes(env: &str, url: &str, body: &str) -> Vec<&'static str> {
        warnings(env, issuer(url), body)
            .iter()
            .map(|w| w.code)
            .collect()
    }

    /// GitHub Enterprise Server and a self-managed GitLab (single-tenant:
    /// a rule without ids compiles and lint has its say), or a generic
    /// issuer at any other URL.
    fn issuer(url: &str) -> PolicyIssuer {
        match url {
            GH => PolicyIssuer::new("ci", Provider::Github, Some(GH.into())),
            GL => PolicyIssuer::new("ci", Provider::Gitlab, Some(GL.into())),
            other => PolicyIssuer::from_url("ci", other),
        }
    }

    /// The warnings of `env.yaml` made of the credentials and `body`. A
    /// `staging` file also says `self_hosted_runners_ok: true` (appended,
    /// so positions do not move): tests about other checks use it.
    fn warnings(env: &str, issuer: PolicyIssuer, body: &str) -> Vec<Warning> {
        let ok = if env == "staging" {
            "self_hosted_runners_ok: true\n"
        } else {
            ""
        };
        let src = format!("{CREDS}{body}{ok}");
        let set = match PolicySet::from_sources(&[(format!("{env}.yaml"), src.clone())], &[issuer])
        {
            Ok(set) => set,
            Err(e) => panic!("{e}\n{src}"),
        };
        lint(&set)
    }

    fn rule(claims: &str) -> String {
        format!(
            "rules:\n  - name: r\n    issuer: ci\n    claims:\n      {claims}\n    grant: [db]\n"
        )
    }

    const GH: &str = "https://ghe.example.com/_services/token";
    const GL: &str = "https://gitlab.acme.internal";

    /// (environment, issuer URL, file body after credentials, expected
    /// codes); `staging` accepts self-hosted runners (see `warnings`).
    #[test]
    fn each_lint() {
        let table: Vec<(&str, &str, String, Vec<&str>)> = vec![
            ("production", GH, rule(GOOD), vec![]),
            // JK006 is for every environment unless the file says
            // self-hosted runners are fine there.
            ("qa", GL, rule("project_id: \"1\""), vec!["JK006"]),
            (
                "qa",
                GH,
                rule("repository_id: \"1\"\n      ref: refs/tags/v1"),
                vec!["JK006"],
            ),
            (
                "production",
                GL,
                format!(
                    "self_hosted_runners_ok: true\n{}",
                    rule("project_id: \"1\"")
                ),
                vec![],
            ),
            (
                "production",
                GL,
                format!(
                    "self_hosted_runners_ok: false\n{}",
                    rule("project_id: \"1\"")
                ),
                vec!["JK006"],
            ),
            (
                "staging",
                GH,
                rule("ref: refs/heads/main\n      event_name: push"),
                vec!["JK001"],
            ),
            ("staging", GH, rule("aud: jobkey"), vec!["JK001"]),
            (
                "staging",
                GH,
                rule("repository: acme/api\n      ref: refs/tags/v1"),
                vec!["JK002"],
            ),
            (
                "staging",
                GH,
                rule("repository_owner: acme\n      ref: refs/tags/v1"),
                vec!["JK002"],
            ),
            (
                "staging",
                GL,
                rule("project_path: acme/api\n      ref: main"),
                vec!["JK002"],
            ),
            (
                "staging",
                GL,
                rule("namespace_path: acme\n      namespace_id: \"7\"\n      ref: main"),
                vec![],
            ),
            (
                "staging",
                GL,
                rule("project_id: \"4242\"\n      project_path: acme/api"),
                vec![],
            ),
            (
                "staging",
                GH,
                rule("sub: {glob: \"repo:acme/*\"}"),
                vec!["JK003"],
            ),
            (
                "staging",
                GH,
                rule("sub: {regex: \"repo:acme/.*\"}"),
                vec!["JK003"],
            ),
            (
                "staging",
                GH,
                rule("sub: [x, {glob: \"repo:*:ref:refs/tags/*\"}]"),
                vec!["JK003"],
            ),
            (
                "staging",
                GH,
                rule("sub: {glob: \"repo:acme/api:*\"}"),
                vec![],
            ),
            (
                "staging",
                GH,
                rule("sub: {glob: \"repo:acme/*\"}\n      repository_id: \"1\""),
                vec![],
            ),
            (
                "staging",
                GH,
                rule("repository: {glob: \"acme/*\"}\n      ref: refs/tags/v1"),
                vec!["JK003"],
            ),
            (
                "staging",
                GH,
                rule("repository_id: \"1\"\n      ref: refs/heads/main"),
                vec!["JK004"],
            ),
            (
                "staging",
                GH,
                rule(
                    "repository_id: \"1\"\n      ref: refs/heads/main\n      event_name: {glob: \"*\"}",
                ),
                vec!["JK004"],
            ),
            (
                "staging",
                GH,
                rule(
                    "repository_id: \"1\"\n      ref: refs/heads/main\n      event_name: [push, pull_request_target]",
                ),
                vec!["JK004"],
            ),
            (
                "staging",
                GH,
                rule("repository_id: \"1\"\n      sub: \"repo:acme/api:ref:refs/heads/main\""),
                vec!["JK004"],
            ),
            (
                "staging",
                GH,
                rule("repository_id: \"1\"\n      ref: refs/tags/v1"),
                vec![],
            ),
            // A dev issuer (unknown kind) with GitHub-shaped refs is linted as GitHub.
            (
                "staging",
                "http://127.0.0.1:1",
                rule("repository_id: \"1\"\n      ref: refs/heads/main"),
                vec!["JK004"],
            ),
            (
                "staging",
                GL,
                rule("project_id: \"1\"\n      ref: main\n      ref_protected: \"true\""),
                vec![],
            ),
            (
                "production",
                GL,
                rule("project_id: \"1\"\n      ref: main"),
                vec!["JK006"],
            ),
            (
                "production",
                GL,
                rule("project_id: \"1\"\n      runner_environment: {not: self-hosted}"),
                vec![],
            ),
            (
                "production",
                GL,
                rule("project_id: \"1\"\n      runner_environment: {present: true}"),
                vec!["JK006"],
            ),
            (
                "prod-eu",
                GL,
                format!(
                    "{}  - name: d\n    issuer: ci\n    effect: deny\n    claims: {{runner_environment: {{missing_or: self-hosted}}}}\n",
                    rule("project_id: \"1\"")
                ),
                vec![],
            ),
            // Two deny rules that together refuse self-hosted and absent.
            (
                "production",
                GL,
                format!(
                    "{}  - name: d\n    issuer: ci\n    effect: deny\n    claims: {{runner_environment: self-hosted}}\n  - name: e\n    issuer: ci\n    effect: deny\n    claims: {{runner_environment: {{present: false}}}}\n",
                    rule("project_id: \"1\"")
                ),
                vec![],
            ),
            // A deny rule narrowed by another condition does not cover everything.
            (
                "production",
                GL,
                format!(
                    "{}  - name: d\n    issuer: ci\n    effect: deny\n    claims: {{runner_environment: self-hosted, ref: main}}\n",
                    rule("project_id: \"1\"")
                ),
                vec!["JK006"],
            ),
            (
                "staging",
                GL,
                format!("max_ttl: 5m\n{}    ttl: 10m\n", rule("project_id: \"1\"")),
                vec!["JK007", "JK007"],
            ),
            (
                "staging",
                GL,
                format!("max_ttl: 20m\n{}    ttl: 10m\n", rule("project_id: \"1\"")),
                vec![],
            ),
            // require: is inherited, so it satisfies the lints too.
            (
                "production",
                GH,
                format!(
                    "require: {{runner_environment: github-hosted, repository_id: \"1\"}}\n{}",
                    rule("ref: refs/tags/v1")
                ),
                vec![],
            ),
        ];
        for (env, url, body, want) in &table {
            assert_eq!(codes(env, url, body), *want, "{env} {url}\n{body}");
        }
    }

    /// Regression: a token without `runner_environment` passed the deny
    /// rule `{runner_environment: self-hosted}`, and JK006 counted that
    /// rule as enough. A deny rule covers the rule only when it also
    /// refuses a token without the claim.
    #[test]
    fn a_deny_rule_on_a_claim_the_token_may_lack_does_not_cover_it() {
        let allow = rule("project_id: \"1\"");
        let deny = |condition: &str| {
            format!(
                "{allow}  - name: no-self-hosted\n    issuer: ci\n    effect: deny\n    claims: {{runner_environment: {condition}}}\n"
            )
        };
        let found = warnings("production", issuer(GL), &deny("self-hosted"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].code, "JK006");
        assert!(
            found[0].message.contains(
                "deny rule `no-self-hosted` refuses `runner_environment: self-hosted` but not a token without `runner_environment`"
            ),
            "{}",
            found[0].message
        );
        assert!(
            found[0]
                .fix
                .contains("`runner_environment: {missing_or: self-hosted}`"),
            "{}",
            found[0].fix
        );
        for covering in [
            "{missing_or: self-hosted}",
            "{missing_or: [self-hosted, x]}",
        ] {
            assert_eq!(
                warnings("production", issuer(GL), &deny(covering)),
                vec![],
                "{covering}"
            );
        }
    }

    /// Regression: a misspelt claim name silently disabled a deny rule
    /// (`runner_enviroment: self-hosted`). In a deny rule it is now a
    /// compile error (`compile.rs`); in an allow rule, or in `require:`, a
    /// warning at the condition with the closest claim the provider sends.
    #[test]
    fn a_claim_the_provider_never_sends_is_named_with_the_closest_one() {
        let body = format!(
            "require: {{repostiory_id: \"1\"}}\n{}  - name: s\n    issuer: ci\n    claims:\n      repository_id: \"1\"\n      runner_enviroment: github-hosted\n    grant: [db]\n",
            rule("repository_id: \"1\"\n      runner_environment: github-hosted")
        );
        let found: Vec<Warning> = warnings("staging", issuer(GH), &body)
            .into_iter()
            .filter(|w| w.code == "JK008")
            .collect();
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "staging.yaml:5:26: warning[JK008 unknown-claim] require: claim `repostiory_id`: GitHub Actions never sends a `repostiory_id` claim, so an allow rule for issuer `ci` never admits a job\n  fix: did you mean `repository_id`?".to_owned(),
                "staging.yaml:17:26: warning[JK008 unknown-claim] rule `s`: claim `runner_enviroment`: GitHub Actions never sends a `runner_enviroment` claim, so this rule never admits a job\n  fix: did you mean `runner_environment`?".to_owned(),
            ]
        );
        // The same names under a generic issuer: an unknown CI may send them.
        let generic = warnings("staging", issuer("https://ci.example.com"), &body);
        assert!(generic.iter().all(|w| w.code != "JK008"), "{generic:?}");
    }

    /// Regression: `repository_id: {glob: "55*"}` was reported as "JK002
    /// binds `repository` without `repository_id`", at the rule's name, as
    /// if the id were missing. A glob or regex on an immutable id is its
    /// own finding, at the condition.
    #[test]
    fn a_pattern_on_an_id_is_reported_at_the_condition() {
        let text = |url: &str, claims: &str| -> Vec<String> {
            warnings("staging", issuer(url), &rule(claims))
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // Lines: credentials 1..=4, `rules:` 5, `- name: r` 6, claims from 9.
        let table: &[(&str, &str, &[&str])] = &[
            (
                GH,
                "repository: acme/api\n      repository_id: {glob: \"55*\"}\n      ref: refs/tags/v1",
                &[
                    "staging.yaml:10:22: warning[JK009 pattern-on-id] rule `r`: `repository_id` is an immutable id, bound here to glob \"55*\": that admits every repository or project whose id fits the pattern, including ones anyone creates later\n  fix: bind `repository_id` to exact values (a list for several)",
                ],
            ),
            (
                GH,
                "repository_owner_id: [\"1\", {regex: \"2[0-9]\"}]\n      repository_id: \"5\"\n      ref: refs/tags/v1",
                &[
                    "staging.yaml:9:28: warning[JK009 pattern-on-id] rule `r`: `repository_owner_id` is an immutable id, bound here to any of [\"1\", regex \"2[0-9]\"]: that admits every owner whose id fits the pattern, including ones anyone creates later\n  fix: bind `repository_owner_id` to exact values (a list for several)",
                ],
            ),
            (
                GL,
                "project_id: {regex: \"4[0-9]+\"}\n      ref: main",
                &[
                    "staging.yaml:9:19: warning[JK009 pattern-on-id] rule `r`: `project_id` is an immutable id, bound here to regex \"4[0-9]+\": that admits every repository or project whose id fits the pattern, including ones anyone creates later\n  fix: bind `project_id` to exact values (a list for several)",
                ],
            ),
            // An id required only to be present is still "without its id".
            (
                GH,
                "repository: acme/api\n      repository_id: {present: true}\n      ref: refs/tags/v1",
                &[
                    "staging.yaml:6:11: warning[JK002 name-without-id] rule `r`: binds `repository` but `repository_id` only to present: names can be renamed and re-registered by someone else\n  fix: add `repository_id: \"<the id>\"` next to `repository`",
                ],
            ),
        ];
        for (url, claims, want) in table {
            assert_eq!(text(url, claims), *want, "{claims}");
        }
    }

    /// GitHub's immutable `sub` pins both ids for the compiler, but reads
    /// like the name-only form for names ending in `-` and digits: lint
    /// asks for the id claims too.
    #[test]
    fn ids_bound_only_through_sub_are_flagged() {
        let github = PolicyIssuer::from_url("ci", "https://token.actions.githubusercontent.com");
        let sub = "sub: \"repo:acme-10001/api-892347:environment:production\"";
        let found = warnings("staging", github.clone(), &rule(sub));
        assert_eq!(
            found.iter().map(|w| w.code).collect::<Vec<_>>(),
            vec!["JK010"]
        );
        assert!(
            found[0]
                .fix
                .contains("bind `repository_owner_id` and `repository_id` as well"),
            "{}",
            found[0].fix
        );
        assert_eq!((found[0].line, found[0].column), (Some(9), Some(12)));
        let both =
            format!("{sub}\n      repository_owner_id: \"10001\"\n      repository_id: \"892347\"");
        assert_eq!(warnings("staging", github, &rule(&both)), vec![]);
    }

    /// Regression: the self-hosted-runner check ran only for environments
    /// named `prod*`, so a `live` or `payments` environment got nothing.
    /// It runs for every environment; a file that accepts self-hosted
    /// runners says so with `self_hosted_runners_ok: true`.
    #[test]
    fn self_hosted_runners_are_checked_in_every_environment() {
        let open = rule("project_id: \"1\"");
        for env in ["live", "payments", "qa", "production"] {
            let src = format!("{CREDS}{open}");
            let set = PolicySet::from_sources(&[(format!("{env}.yaml"), src)], &[issuer(GL)])
                .expect("compiles");
            let found = lint(&set);
            assert_eq!(
                found.iter().map(|w| w.code).collect::<Vec<_>>(),
                vec!["JK006"],
                "{env}"
            );
            assert!(
                found[0]
                    .fix
                    .contains("write `self_hosted_runners_ok: true` at the top of the file"),
                "{}",
                found[0].fix
            );
            let src = format!("{CREDS}self_hosted_runners_ok: true\n{open}");
            let set = PolicySet::from_sources(&[(format!("{env}.yaml"), src)], &[issuer(GL)])
                .expect("compiles");
            assert_eq!(lint(&set), vec![], "{env}");
        }
    }

    #[test]
    fn warnings_print_position_code_rule_and_fix() {
        let src = format!(
            "{CREDS}{}self_hosted_runners_ok: true\n",
            rule("ref: refs/tags/v1")
        );
        let issuers = vec![issuer(GH)];
        let set = PolicySet::from_sources(&[("p/staging.yaml".into(), src)], &issuers).expect("ok");
        let text: Vec<String> = lint(&set).iter().map(|w| w.to_string()).collect();
        assert_eq!(text.len(), 1);
        assert!(
            text[0].starts_with(
                "p/staging.yaml:6:11: warning[JK001 unbound-identity] rule `r`: binds no repository"
            ),
            "{}",
            text[0]
        );
        assert!(
            text[0].contains("\n  fix: bind the repository"),
            "{}",
            text[0]
        );
    }

    /// The checks follow the rule's issuer's provider, whatever its URL:
    /// (environment, provider, claims, expected codes, a fragment of the
    /// warnings' text).
    #[test]
    fn checks_follow_the_provider() {
        let table: &[(&str, Provider, &str, &[&str], &str)] = &[
            (
                "staging",
                Provider::Generic,
                "organization_slug: acme\n      pipeline_slug: api",
                &["JK002"],
                "binds `organization_slug` without `organization_id`",
            ),
            (
                "staging",
                Provider::Generic,
                "organization_id: o1\n      pipeline_slug: {glob: \"api-*\"}",
                &["JK003"],
                "`pipeline_slug` pattern glob \"api-*\"",
            ),
            (
                "staging",
                Provider::Buildkite,
                "organization_id: o1\n      pipeline_id: p1\n      pipeline_slug: {glob: \"api-*\"}",
                &[],
                "",
            ),
            (
                "production",
                Provider::Gitlab,
                "project_id: \"1\"",
                &["JK006"],
                "add `runner_environment: gitlab-hosted`",
            ),
            (
                "staging",
                Provider::Github,
                "project_id: \"1\"",
                &["JK008", "JK001"],
                "(`repository_id` or `repository_owner_id`)",
            ),
            (
                "production",
                Provider::Forgejo,
                "repository_id: \"1\"\n      ref: refs/heads/main",
                &["JK004"],
                "add `event_name: [push, workflow_dispatch]`",
            ),
            (
                "staging",
                Provider::Gitlab,
                "project_id: \"1\"\n      ref: refs/heads/main",
                &[],
                "",
            ),
            (
                "staging",
                Provider::AzureDevops,
                "sub: {glob: \"sc://acme/*\"}",
                &["JK003"],
                "`sub` pattern glob \"sc://acme/*\"",
            ),
            (
                "production",
                Provider::AzureDevops,
                "sub: {glob: \"sc://acme/api/*\"}",
                &[],
                "",
            ),
            (
                "staging",
                Provider::Circleci,
                "oidc.circleci.com/org-id: o1\n      oidc.circleci.com/project-id: p1",
                &[],
                "",
            ),
        ];
        for (env, provider, claims, want, fragment) in table {
            let issuer = PolicyIssuer::new("ci", *provider, Some("http://127.0.0.1:1".into()));
            let found = warnings(env, issuer, &rule(claims));
            let codes: Vec<&str> = found.iter().map(|w| w.code).collect();
            assert_eq!(codes, *want, "{provider:?} {claims}");
            let text: Vec<String> = found.iter().map(|w| w.to_string()).collect();
            assert!(
                text.iter().any(|t| t.contains(fragment)) || fragment.is_empty(),
                "{provider:?} {claims}: {text:?}"
            );
        }
    }
}
