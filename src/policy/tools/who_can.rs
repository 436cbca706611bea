//! `jobkey policy who-can`: the access review. For each credential of an
//! environment, the allow rules that grant it and the identities they
//! admit (issuer, repositories/projects, owners, refs, environments,
//! workflows, events, runners, other conditions), with the deny rules
//! that can still refuse them.

use std::fmt::Write as _;

use crate::policy::compile::{Condition, Rule};
use crate::policy::parse::Effect;
use crate::policy::{CredentialSource, PolicySet};
use crate::provider::Role;

/// Who can have one credential.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct CredentialAccess {
    pub credential: String,
    pub source: CredentialSource,
    /// The credential's own TTL (humantime).
    pub ttl: String,
    pub rules: Vec<RuleAccess>,
}

/// One allow rule granting a credential, and whom it admits.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct RuleAccess {
    pub rule: String,
    pub description: Option<String>,
    pub issuer: String,
    /// The TTL this rule's grant gets: min(credential, rule, max_ttl).
    pub ttl: String,
    pub identity: Identity,
    /// Deny rules for the same issuer, each as `name: conditions`.
    pub unless: Vec<String>,
}

/// The conditions of a rule grouped by what they constrain. Each entry is
/// `claim condition`, e.g. `repository_id = "892347"`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub(crate) struct Identity {
    pub repositories: Vec<String>,
    pub owners: Vec<String>,
    pub refs: Vec<String>,
    pub environments: Vec<String>,
    pub workflows: Vec<String>,
    pub events: Vec<String>,
    pub runners: Vec<String>,
    pub other: Vec<String>,
}

fn render(c: &Condition) -> String {
    let op = if c.matcher.exact_values().is_some_and(|v| v.len() == 1) {
        "="
    } else {
        "is"
    };
    format!("{} {op} {}", c.claim.written, c.matcher.describe())
}

impl Identity {
    /// The rule's conditions, by the role their claim (the last step of
    /// its address) has for the rule's provider.
    fn of(rule: &Rule) -> Identity {
        let mut id = Identity::default();
        for c in &rule.conditions {
            let name = c.claim.segments.last().map(String::as_str).unwrap_or("");
            let bucket = match rule.provider.role_of(name) {
                Some(Role::Repository) => &mut id.repositories,
                Some(Role::Owner) => &mut id.owners,
                Some(Role::Ref) => &mut id.refs,
                Some(Role::Environment) => &mut id.environments,
                Some(Role::Workflow | Role::WorkflowOfRepository) => &mut id.workflows,
                Some(Role::Event) => &mut id.events,
                Some(Role::Runner) => &mut id.runners,
                Some(Role::Run | Role::Other) | None => &mut id.other,
            };
            bucket.push(render(c));
        }
        id
    }
}

/// The access review of `environment`, optionally for one credential.
pub(crate) fn who_can(
    set: &PolicySet,
    environment: &str,
    credential: Option<&str>,
) -> Result<Vec<CredentialAccess>, String> {
    let env = set.env(environment).ok_or_else(|| {
        format!(
            "no environment `{environment}` (known: {})",
            set.environments().collect::<Vec<_>>().join(", ")
        )
    })?;
    if let Some(name) = credential
        && !env.credentials.contains_key(name)
    {
        return Err(format!(
            "environment `{environment}` has no credential `{name}` (it has: {})",
            env.credential_order.join(", ")
        ));
    }
    let human = |d: std::time::Duration| humantime::format_duration(d).to_string();
    let mut out = Vec::new();
    for name in &env.credential_order {
        if credential.is_some_and(|c| c != name) {
            continue;
        }
        let Some(cred) = env.credentials.get(name) else {
            continue;
        };
        let rules = env
            .rules
            .iter()
            .filter(|r| r.effect == Effect::Allow && r.grant.contains(name))
            .map(|r| {
                let ttl = [Some(cred.ttl), r.ttl, env.max_ttl]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(cred.ttl);
                RuleAccess {
                    rule: r.name.clone(),
                    description: r.description.clone(),
                    issuer: r.issuer.clone(),
                    ttl: human(ttl),
                    identity: Identity::of(r),
                    unless: env
                        .rules
                        .iter()
                        .filter(|d| d.effect == Effect::Deny && d.issuer == r.issuer)
                        .map(|d| {
                            let conds: Vec<String> = d.conditions.iter().map(render).collect();
                            format!("{}: {}", d.name, conds.join(", "))
                        })
                        .collect(),
                }
            })
            .collect();
        out.push(CredentialAccess {
            credential: name.clone(),
            source: cred.source.clone(),
            ttl: human(cred.ttl),
            rules,
        });
    }
    Ok(out)
}

/// The default width of [`render_list`]: an 80-column terminal.
pub(crate) const DEFAULT_WIDTH: usize = 80;

/// The access review for a terminal: per credential, each rule that grants
/// it with the identities it admits, one kind per line, wrapped at `width`
/// columns (a value longer than a line is broken inside). `render_table`
/// is the wide form.
///
/// ```text
/// deploy-db (kv, ttl 10m)
///   rule github-api-deploy, issuer github, ttl 5m
///     repository   repository_id = "892347"
///                  repository = "acme/api"
///     unless       no-self-hosted-runners: runner_environment is missing
///                    or "self-hosted"
/// ```
pub(crate) fn render_list(review: &[CredentialAccess], width: usize) -> String {
    const LABEL: usize = 13;
    let mut out = String::new();
    for (i, c) in review.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        wrap(
            &mut out,
            "",
            &format!("{} ({}, ttl {})", c.credential, c.source.kind(), c.ttl),
            width,
        );
        if c.rules.is_empty() {
            wrap(&mut out, "  ", "(no rule grants it)", width);
        }
        for r in &c.rules {
            wrap(
                &mut out,
                "  ",
                &format!("rule {}, issuer {}, ttl {}", r.rule, r.issuer, r.ttl),
                width,
            );
            let id = &r.identity;
            let description: Vec<String> = r.description.iter().cloned().collect();
            let groups: [(&str, &[String]); 10] = [
                ("description", &description),
                ("repository", &id.repositories),
                ("owner", &id.owners),
                ("ref", &id.refs),
                ("environment", &id.environments),
                ("workflow", &id.workflows),
                ("event", &id.events),
                ("runner", &id.runners),
                ("other", &id.other),
                ("unless", &r.unless),
            ];
            for (label, items) in groups {
                for (k, item) in items.iter().enumerate() {
                    let head = if k == 0 { label } else { "" };
                    wrap(&mut out, &format!("    {head:<LABEL$}"), item, width);
                }
            }
        }
    }
    out
}

/// Appends `text` after `lead`, wrapped at `width` columns: breaks at
/// spaces, continuation lines indented two more than the text's start, and
/// a word longer than a line broken where the line ends. Each line keeps
/// at least 20 columns for text, however narrow `width` is.
fn wrap(out: &mut String, lead: &str, text: &str, width: usize) {
    let first = lead.chars().count();
    let room = |indent: usize| width.saturating_sub(indent).max(20);
    // (indentation, text) per output line; the first line's is `lead`.
    let mut lines: Vec<(usize, String)> = Vec::new();
    let mut indent = first;
    let mut line = String::new();
    for word in text.split(' ') {
        let mut word = word;
        loop {
            let used = line.chars().count();
            let sep = usize::from(used > 0);
            if used + sep + word.chars().count() <= room(indent) {
                if sep == 1 {
                    line.push(' ');
                }
                line.push_str(word);
                break;
            }
            if used > 0 {
                lines.push((indent, std::mem::take(&mut line)));
                indent = first + 2;
                continue;
            }
            let split = word
                .char_indices()
                .nth(room(indent))
                .map_or(word.len(), |(i, _)| i);
            lines.push((indent, word[..split].to_owned()));
            word = &word[split..];
            indent = first + 2;
        }
    }
    lines.push((indent, line));
    for (k, (indent, text)) in lines.iter().enumerate() {
        let start = if k == 0 {
            lead.to_owned()
        } else {
            " ".repeat(*indent)
        };
        out.push_str(format!("{start}{text}").trim_end());
        out.push('\n');
    }
}

/// The wide form (`--wide`): a plain-text table, one row per (credential,
/// rule), one column per kind of identity; cells with several conditions
/// list them on separate lines. As wide as its longest cells.
pub(crate) fn render_table(review: &[CredentialAccess]) -> String {
    const HEADERS: [&str; 11] = [
        "CREDENTIAL",
        "RULE",
        "ISSUER",
        "TTL",
        "REPOSITORY",
        "OWNER",
        "REF",
        "ENVIRONMENT",
        "WORKFLOW",
        "EVENT/RUNNER/OTHER",
        "UNLESS DENIED BY",
    ];
    let mut rows: Vec<Vec<Vec<String>>> = Vec::new();
    for c in review {
        if c.rules.is_empty() {
            rows.push(vec![
                vec![c.credential.clone()],
                vec!["(no rule grants it)".into()],
            ]);
        }
        for r in &c.rules {
            let id = &r.identity;
            let mut misc = id.events.clone();
            misc.extend(id.runners.iter().cloned());
            misc.extend(id.other.iter().cloned());
            rows.push(vec![
                vec![c.credential.clone()],
                vec![r.rule.clone()],
                vec![r.issuer.clone()],
                vec![r.ttl.clone()],
                id.repositories.clone(),
                id.owners.clone(),
                id.refs.clone(),
                id.environments.clone(),
                id.workflows.clone(),
                misc,
                r.unless.clone(),
            ]);
        }
    }
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            for line in cell {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(line.chars().count());
                }
            }
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            let _ = write!(text, "{cell:<w$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &HEADERS);
    for row in &rows {
        let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for k in 0..height {
            let cells: Vec<&str> = (0..HEADERS.len())
                .map(|i| {
                    row.get(i)
                        .and_then(|cell| cell.get(k))
                        .map(String::as_str)
                        .unwrap_or(if k == 0 { "-" } else { "" })
                })
                .collect();
            line(&mut out, &cells);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyIssuer;
    use crate::policy::test_support::compile;
    use crate::provider::Provider;

    /// Regression: the who-can table was 256 columns wide on the shipped
    /// production policy. The default layout fits 80 columns and still
    /// names every identity; the table is the `--wide` form.
    #[test]
    fn the_default_layout_fits_80_columns() {
        let issuers: Vec<PolicyIssuer> = vec!["github".into(), "gitlab".into(), "buildkite".into()];
        let set = PolicySet::load_dir(std::path::Path::new("policies"), &issuers).expect("shipped");
        for env in ["production", "staging"] {
            let review = who_can(&set, env, None).expect("review");
            let text = render_list(&review, DEFAULT_WIDTH);
            for line in text.lines() {
                assert!(
                    line.chars().count() <= 80,
                    "{} columns: {line}",
                    line.chars().count()
                );
            }
            // Every condition of every rule is there, wrapped or not.
            let joined = unbroken(&text);
            for c in &review {
                for r in &c.rules {
                    let id = &r.identity;
                    for item in id
                        .repositories
                        .iter()
                        .chain(&id.owners)
                        .chain(&id.refs)
                        .chain(&id.environments)
                        .chain(&id.workflows)
                        .chain(&id.events)
                        .chain(&id.runners)
                        .chain(&id.other)
                        .chain(&r.unless)
                    {
                        assert!(
                            joined.contains(&unbroken(item)),
                            "{env}: {item} missing from\n{text}"
                        );
                    }
                }
            }
            let wide = render_table(&review);
            assert!(wide.lines().any(|l| l.chars().count() > 80), "{env}");
        }
    }

    /// The words of `text`, one space apart (wrapped lines joined back).
    fn unbroken(text: &str) -> String {
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Wrapping at spaces, continuation indents, and a word longer than a
    /// line broken inside: (lead, text, width, lines).
    #[test]
    fn wrapping() {
        let table: &[(&str, &str, usize, &[&str])] = &[
            ("  ", "short", 80, &["  short"]),
            ("ab ", "one two three four", 12, &["ab one two three four"]),
            (
                "    label  ",
                "aaaa bbbb cccc dddd eeee ffff gggg",
                40,
                &[
                    "    label  aaaa bbbb cccc dddd eeee ffff",
                    "             gggg",
                ],
            ),
            (
                "x ",
                "a-very-long-word-that-does-not-fit-anywhere-at-all",
                30,
                &[
                    "x a-very-long-word-that-does-n",
                    "    ot-fit-anywhere-at-all",
                ],
            ),
            (
                "x ",
                "see a-very-long-word-that-does-not-fit-anywhere-at-all",
                30,
                &[
                    "x see",
                    "    a-very-long-word-that-does",
                    "    -not-fit-anywhere-at-all",
                ],
            ),
            ("  ", "", 80, &[""]),
        ];
        for (lead, text, width, want) in table {
            let mut out = String::new();
            wrap(&mut out, lead, text, *width);
            assert_eq!(out.lines().collect::<Vec<_>>(), *want, "{text}");
        }
    }

    /// Conditions are grouped by the role their claim has for the rule's
    /// issuer's provider: (provider, claim, the group it lands in).
    #[test]
    fn identities_are_grouped_by_the_providers_roles() {
        let table: &[(Provider, &str, &str)] = &[
            (Provider::Buildkite, "organization_id", "owners"),
            (Provider::Buildkite, "pipeline_slug", "repositories"),
            (Provider::Buildkite, "build_branch", "refs"),
            (Provider::Buildkite, "build_number", "other"),
            (Provider::Github, "repository_id", "repositories"),
            (Provider::Github, "job_workflow_ref", "workflows"),
            (Provider::Github, "build_branch", "other"),
            (Provider::Gitlab, "pipeline_source", "events"),
            (Provider::Bitbucket, "workspaceUuid", "owners"),
            (
                Provider::Bitbucket,
                "deploymentEnvironmentUuid",
                "environments",
            ),
            (Provider::Circleci, "oidc.circleci.com/vcs-ref", "refs"),
            // A generic issuer: every provider's roles.
            (Provider::Generic, "pipeline_slug", "repositories"),
            (Provider::Generic, "runner_environment", "runners"),
            (Provider::Generic, "x", "other"),
        ];
        for (provider, claim, group) in table {
            // Bind the ids too, for shared issuers; they are reported apart.
            let tenant: String = provider
                .tenant_claims()
                .iter()
                .chain(provider.project_claims())
                .filter(|t| provider.issuer_is_shared(None) && *t != claim)
                .map(|t| format!(", \"{t}\": t1"))
                .collect();
            let src = format!(
                "credentials:\n  db:\n    kv: {{mount: s, path: p}}\n    ttl: 10m\nrules:\n  - name: r\n    issuer: ci\n    claims: {{\"{claim}\": v{tenant}}}\n    grant: [db]\n"
            );
            let issuers = [PolicyIssuer::new("ci", *provider, None)];
            let set = compile(&[("env.yaml", &src)], &issuers).expect("compiles");
            let review = who_can(&set, "env", None).expect("review");
            let id = &review[0].rules[0].identity;
            let groups = [
                ("repositories", &id.repositories),
                ("owners", &id.owners),
                ("refs", &id.refs),
                ("environments", &id.environments),
                ("workflows", &id.workflows),
                ("events", &id.events),
                ("runners", &id.runners),
                ("other", &id.other),
            ];
            let found: Vec<&str> = groups
                .iter()
                .filter(|(_, list)| list.iter().any(|c| c.starts_with(&format!("{claim} "))))
                .map(|(name, _)| *name)
                .collect();
            assert_eq!(found, vec![*group], "{provider:?} {claim}");
        }
    }
}
