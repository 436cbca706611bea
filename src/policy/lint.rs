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
//! | JK005 | `shared-issuer-without-tenant` | reserved: a compile *error* now (a rule for a shared issuer must bind the tenant claim) |
//! | JK006 | `self-hosted-runners` | a production allow rule is open to self-hosted runners (no `runner_environment` condition, no deny rule) |
//! | JK007 | `ttl-above-limit` | a rule or credential TTL is above the environment's `max_ttl` (silently clamped) |
//!
//! Deny rules are only checked by JK007 (they have no TTL) — the others are
//! about what allow rules admit.

use super::PolicySet;
use super::compile::{CompiledEnv, Condition, Rule};
use super::issuers::{IssuerKind, PolicyIssuer};
use super::matcher::Matcher;
use super::parse::Effect;

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
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

/// Claims that identify the repository, project, owner or organisation.
const IDENTITY_CLAIMS: &[&str] = &[
    "sub",
    "repository",
    "repository_id",
    "repository_owner",
    "repository_owner_id",
    "project_path",
    "project_id",
    "namespace_path",
    "namespace_id",
    "workflow_ref",
    "job_workflow_ref",
    "organization_slug",
    "organization_id",
    "pipeline_slug",
    "oidc.circleci.com/org-id",
    "oidc.circleci.com/project-id",
];

/// (name claim, its immutable id claim).
const NAME_ID_PAIRS: &[(&str, &str)] = &[
    ("repository", "repository_id"),
    ("project_path", "project_id"),
    ("repository_owner", "repository_owner_id"),
    ("namespace_path", "namespace_id"),
];

/// Claims whose wildcards can reach other repositories, and the exact id
/// that makes such a wildcard harmless.
const REPOSITORY_NAME_CLAIMS: &[&str] = &["sub", "repository", "project_path"];
const REPOSITORY_ID_CLAIMS: &[&str] = &["repository_id", "project_id"];

/// Lints every environment of `set`. `issuers` are the configured issuers
/// (their kinds decide the provider-specific checks).
pub fn lint(set: &PolicySet, issuers: &[PolicyIssuer]) -> Vec<Warning> {
    let mut out = Vec::new();
    for name in set.environments() {
        if let Some(env) = set.env(name) {
            lint_env(name, env, issuers, &mut out);
        }
    }
    out
}

fn conditions_on<'r>(rule: &'r Rule, claim: &'r str) -> impl Iterator<Item = &'r Condition> {
    rule.conditions
        .iter()
        .filter(move |c| c.claim.top_level() == Some(claim))
}

fn binds_positively(rule: &Rule, claim: &str) -> bool {
    conditions_on(rule, claim).any(|c| c.matcher.is_positive())
}

fn binds_exactly(rule: &Rule, claim: &str) -> bool {
    conditions_on(rule, claim).any(|c| c.matcher.exact_values().is_some())
}

fn lint_env(
    environment: &str,
    env: &CompiledEnv,
    issuers: &[PolicyIssuer],
    out: &mut Vec<Warning>,
) {
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
    let production = environment.starts_with("prod");

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
        let kind = issuers
            .iter()
            .find(|i| i.name == rule.issuer)
            .map(|i| i.kind)
            .unwrap_or(IssuerKind::Other);

        // JK001
        if !IDENTITY_CLAIMS.iter().any(|c| binds_positively(rule, c)) {
            warn(out, Some(rule), "JK001", "unbound-identity",
                "binds no repository, project, owner or organisation claim: any repository of the issuer whose other claims fit is admitted".into(),
                "bind the repository by its immutable id (GitHub `repository_id`, GitLab `project_id`), or the owner (`repository_owner_id`, `namespace_id`)".into());
        }

        // JK002
        for (name, id) in NAME_ID_PAIRS {
            if binds_exactly(rule, name) && !binds_exactly(rule, id) {
                warn(
                    out,
                    Some(rule),
                    "JK002",
                    "name-without-id",
                    format!(
                        "binds `{name}` without `{id}`: names can be renamed and re-registered by someone else"
                    ),
                    format!("add `{id}: \"<the numeric id>\"` next to `{name}`"),
                );
            }
        }

        // JK003
        let id_pinned = REPOSITORY_ID_CLAIMS.iter().any(|c| binds_exactly(rule, c));
        if !id_pinned {
            for claim in REPOSITORY_NAME_CLAIMS {
                for c in conditions_on(rule, claim) {
                    if let Some(pattern) = crossing_wildcard(claim, &c.matcher) {
                        warn(out, Some(rule), "JK003", "wildcard-crosses-repositories",
                            format!("`{claim}` pattern {pattern} can match other repositories (and a repository anyone creates later under that name)"),
                            "bind `repository_id` / `project_id` to exact values, or make the pattern name the whole repository before any wildcard (`repo:acme/api:*`)".into());
                    }
                }
            }
        }

        // JK004
        let github_shaped = kind == IssuerKind::Github
            || conditions_on(rule, "ref").any(|c| mentions(&c.matcher, "refs/heads/"));
        if github_shaped && kind != IssuerKind::Gitlab && binds_branch(rule) && !event_pinned(rule)
        {
            warn(out, Some(rule), "JK004", "branch-without-event",
                "binds a branch `ref` but not `event_name`: `pull_request_target` runs carry the default branch as `ref` while running a fork's code".into(),
                "add `event_name: [push, workflow_dispatch]` (the events that run trusted code only)".into());
        }

        // JK006
        if production
            && !matches!(kind, IssuerKind::Buildkite | IssuerKind::Circleci)
            && !excludes_self_hosted(rule, env)
        {
            warn(out, Some(rule), "JK006", "self-hosted-runners",
                format!("production rule open to self-hosted runners (no `runner_environment` condition, and no deny rule for issuer `{}` on `runner_environment: self-hosted`)", rule.issuer),
                "add `runner_environment: github-hosted` to the rule (or `require:`), or a deny rule `{runner_environment: self-hosted}` for this issuer".into());
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

/// Whether any exact value or pattern of `m` contains `needle`.
fn mentions(m: &Matcher, needle: &str) -> bool {
    match m {
        Matcher::Exact(v) => v.contains(needle),
        Matcher::Glob(g) => g.as_str().contains(needle),
        Matcher::Regex { source, .. } => source.contains(needle),
        Matcher::AnyOf(items) => items.iter().any(|i| mentions(i, needle)),
        Matcher::Not(_) | Matcher::Present(_) => false,
    }
}

/// The rule admits some branch ref: a positive `ref` condition that is not
/// only tags, or a `sub` naming `:ref:refs/heads/`.
fn binds_branch(rule: &Rule) -> bool {
    let ref_branch = conditions_on(rule, "ref").any(|c| {
        c.matcher.is_positive()
            && !c
                .matcher
                .exact_values()
                .is_some_and(|vs| vs.iter().all(|v| v.starts_with("refs/tags/")))
    });
    ref_branch || conditions_on(rule, "sub").any(|c| mentions(&c.matcher, ":ref:refs/heads/"))
}

/// `event_name` is bound to exact values none of which is `pull_request_target`.
fn event_pinned(rule: &Rule) -> bool {
    conditions_on(rule, "event_name").any(|c| {
        c.matcher
            .exact_values()
            .is_some_and(|vs| !vs.contains(&"pull_request_target"))
    })
}

/// The rule cannot admit `runner_environment: self-hosted`: its own
/// condition rejects it, or a deny rule of the file for the same issuer
/// whose only condition is on `runner_environment` denies it.
fn excludes_self_hosted(rule: &Rule, env: &CompiledEnv) -> bool {
    let own = conditions_on(rule, "runner_environment").any(|c| {
        !matches!(c.matcher, Matcher::Present(false)) && !c.matcher.matches_text("self-hosted")
    });
    own || env.rules.iter().any(|d| {
        d.effect == Effect::Deny
            && d.issuer == rule.issuer
            && d.conditions.len() == 1
            && d.conditions.iter().all(|c| {
                c.claim.top_level() == Some("runner_environment")
                    && c.matcher.matches_text("self-hosted")
            })
    })
}

/// For a glob/regex (or a list holding one) on a repository-naming claim,
/// the pattern when its fixed prefix does not name a whole repository.
fn crossing_wildcard(claim: &str, m: &Matcher) -> Option<String> {
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
        Matcher::AnyOf(items) => return items.iter().find_map(|i| crossing_wildcard(claim, i)),
        _ => return None,
    };
    let names_repository = if claim == "sub" {
        // `repo:O/R:` / `project_path:G/P:` / `organization:O:pipeline:P:` /
        // CircleCI `org/O/project/P/`.
        if prefix.starts_with("organization:") {
            prefix.matches(':').count() >= 4
        } else if prefix.starts_with("org/") {
            prefix.matches('/').count() >= 4
        } else {
            prefix.matches(':').count() >= 2
        }
    } else {
        false // any wildcard in a repository name crosses repositories
    };
    if names_repository {
        None
    } else {
        Some(m.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDS: &str = "credentials:\n  db:\n    kv: {mount: s, path: p}\n    ttl: 10m\n";
    const GOOD: &str = "repository_id: \"1\"\n      repository: acme/api\n      ref: refs/heads/main\n      event_name: [push]\n      runner_environment: github-hosted";

    fn codes(env: &str, kind_url: &str, body: &str) -> Vec<&'static str> {
        let src = format!("{CREDS}{body}");
        let issuers = vec![PolicyIssuer::from_url("ci", kind_url)];
        let set = match PolicySet::from_sources(&[(format!("{env}.yaml"), src.clone())], &issuers) {
            Ok(set) => set,
            Err(e) => panic!("{e}\n{src}"),
        };
        lint(&set, &issuers).iter().map(|w| w.code).collect()
    }

    fn rule(claims: &str) -> String {
        format!(
            "rules:\n  - name: r\n    issuer: ci\n    claims:\n      {claims}\n    grant: [db]\n"
        )
    }

    const GH: &str = "https://token.actions.githubusercontent.com";
    const GL: &str = "https://gitlab.com";

    /// (environment, issuer URL, file body after credentials, expected codes)
    #[test]
    fn each_lint() {
        let table: Vec<(&str, &str, String, Vec<&str>)> = vec![
            ("production", GH, rule(GOOD), vec![]),
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
                    "{}  - name: d\n    issuer: ci\n    effect: deny\n    claims: {{runner_environment: self-hosted}}\n",
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

    #[test]
    fn warnings_print_position_code_rule_and_fix() {
        let src = format!("{CREDS}{}", rule("ref: refs/tags/v1"));
        let issuers = vec![PolicyIssuer::from_url("ci", GH)];
        let set = PolicySet::from_sources(&[("p/staging.yaml".into(), src)], &issuers).expect("ok");
        let text: Vec<String> = lint(&set, &issuers).iter().map(|w| w.to_string()).collect();
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
}
