//! The policy engine: which job may have which credentials.
//!
//! Policies live in one directory, one YAML file per environment; the file
//! stem is the environment name (`policies/production.yaml` defines
//! `production`). See `policies/production.yaml` for the format, commented.
//! Loading ([`PolicySet::load_dir`]) is this module's only I/O; deciding
//! ([`PolicySet::decide`]) is pure: no network, no disk, no clock.
//!
//! # Loading
//!
//! - Only files ending in `.yaml` or `.yml` (lowercase) are read; others are
//!   ignored. The environment name must match `^[a-z0-9][a-z0-9_-]*$`; two
//!   files for one environment (`x.yaml`, `x.yml`) are an error. A directory
//!   without any policy file is an error (it is most likely a wrong path).
//! - Parsing is strict: unknown fields, duplicate keys and values of the
//!   wrong type are errors naming file, line and column of their cause (a
//!   tab, a list item indented less than its key), with a hint for layout
//!   mistakes.
//! - Compilation then checks what YAML cannot: issuers must be among the
//!   configured issuer names; granted credentials must exist in the same
//!   file; rule names are unique; every rule binds at least one claim;
//!   a rule field indented into `claims:` (`grant:` read as a claim) is
//!   named where it is; globs are non-empty; allow rules grant, deny rules
//!   do not; TTLs are positive; every environment offers credentials and
//!   has rules; the checks on conditions below.
//! - `self_hosted_runners_ok: true` (top level) is for `jobkey policy
//!   lint` only: the environment accepts self-hosted runners, so its
//!   allow rules need not exclude them. No decision changes.
//!
//! # Matching
//!
//! A rule applies when the request's issuer (the configured issuer *name*,
//! not a URL) equals the rule's `issuer` and **every** claim condition
//! holds (AND). Allow rules also inherit every condition of the file's
//! `require:` section (checked first); deny rules do not (narrowing a deny
//! rule could only weaken it).
//!
//! **Claim names.** A key is a top-level claim name, taken literally: dots
//! and slashes are part of the name (`oidc.circleci.com/project-id` is
//! CircleCI's top-level claim). A key that **starts with `/`** is a JSON
//! pointer (RFC 6901) into nested claims: `/a/b~1c` is `claims["a"]["b/c"]`
//! (`~1` is `/`, `~0` is `~`; array steps are decimal indexes). `/ref` is
//! the same address as `ref`; a top-level name starting with `/` is
//! written `/~1name`. One rule may not address the same claim twice.
//!
//! **Conditions** (the value of a key):
//!
//! - a scalar (string, integer or boolean in YAML): **exact** match on the
//!   claim's *text*. A string claim is its own text; a number or boolean
//!   claim is its JSON text. So `true`, `"true"` in a policy both match the
//!   claims `true` and `"true"` (GitLab sends `ref_protected: "true"`), and
//!   `1`, `"1"` both match the claims `1` and `"1"`; but `1` does not match
//!   `true`, `"01"` or `1.0`, and `true` does not match `"True"`.
//!   Comparison is case-sensitive. Floats and null are refused in policy
//!   files (quote them);
//! - `{glob: "pattern"}`: `*` matches any run of characters including `/`
//!   and the empty run; there are no other metacharacters; the whole value
//!   must match (see `glob.rs`);
//! - `{regex: "pattern"}`: Rust `regex` syntax (linear time), always
//!   anchored as `^(?:pattern)$`; size-limited at compile time;
//! - a list: any of its items (scalars, globs, regexes, `not`) may match;
//! - `{not: condition}`: the claim is **present**, has a text, and the
//!   inner condition does not match it (`not` never admits a missing claim);
//! - `{present: true}`: the claim exists and is not null;
//!   `{present: false}`: it does not;
//! - `{missing_or: condition}` (deny rules only): the claim is missing (or
//!   null, or not a scalar), or the inner condition matches it.
//!
//! A claim that is **absent** from the token never matches any value
//! condition, not even `{glob: "*"}` or `{not: x}`; only `{present:
//! false}` and `missing_or` hold. A claim whose value is an object, an
//! array or null never matches a value condition either: list claims such
//! as an `aud` array are not supported by conditions.
//!
//! So a **deny rule does not refuse a token that lacks its claim**: a deny
//! rule `{runner_environment: self-hosted}` lets a token without
//! `runner_environment` through. `{runner_environment: {missing_or:
//! self-hosted}}` refuses both. In an allow rule or `require:`,
//! `missing_or` would admit tokens without the claim, so it is a compile
//! error there.
//!
//! **Compile-time checks on conditions:** invalid or empty patterns, lists
//! that are empty or nested, `present` inside `not`/lists, `not` of a
//! condition that accepts everything, and rules that can never match where
//! that is decidable: `{present: false}` together with another condition on
//! the same claim, or a set of exact values (from the rule or inherited
//! from `require:`) that another condition on the same claim rejects.
//! A deny rule on a claim its issuer's provider never sends (the provider
//! table knows every provider's claims but the generic one's) is an error
//! with the closest claim it does send: it would never refuse anything.
//! An allow rule for a shared issuer ([`PolicyIssuer::is_shared`]: the
//! issuer of github.com and its enterprises, gitlab.com, Buildkite,
//! CircleCI, Bitbucket; the provider table in `crate::provider` says which)
//! must bind the provider's tenant id and project id claims
//! (`repository_owner_id` and `repository_id`, `namespace_id` and
//! `project_id`, ...) to exact values (a scalar or a list of scalars), in
//! the rule or through `require:`; for GitHub an exact `sub` in its
//! immutable form `repo:OWNER-OWNERID/REPO-REPOID:…` binds both. Names are
//! not enough: a renamed repository's name can be registered by someone
//! else.
//!
//! # Layout
//!
//! The engine: `parse.rs` (YAML to raw types), `compile.rs` (checks and the
//! compiled form), `credential.rs` (credential kinds), `matcher.rs`,
//! `glob.rs` and `template.rs` (conditions and name templates), `index.rs`,
//! `eval.rs` (decisions), `decision.rs` (what a decision says) and
//! `error.rs`. The tools built on it are in `tools/`.
//!
//! # Deciding
//!
//! 1. Unknown environment: deny (`unknown_environment`).
//! 2. If any applicable rule is a deny rule, the whole request is denied,
//!    naming the first such rule (`denied_by_rule`). Deny rules win.
//! 3. If no allow rule applies: deny (`no_rule_matched`), with, for every
//!    allow rule of the file, the first thing that failed: the issuer, or
//!    the first claim condition in file order with the expected value and
//!    the actual one (`None` when the claim is absent). Deny rules that do
//!    not apply are not reported: not applying is what they are for.
//!    This step comes before the checks on requested names, so a job no
//!    rule admits learns nothing about the environment's credentials.
//! 4. With credentials requested: each must exist in the environment
//!    (`unknown_credential`) and be granted by some applicable allow rule;
//!    the first such rule in file order is recorded. Otherwise deny
//!    (`credential_not_granted`) with the failures of the allow rules that
//!    would have granted it.
//!    Without credentials requested: everything every applicable allow rule
//!    grants, each credential once, recorded against the first rule.
//! 5. Default deny: nothing is granted that a rule does not grant.
//!
//! The TTL of each grant is the smallest of the credential's `ttl`, the
//! granting rule's `ttl` and the environment's `max_ttl` (when given).

mod compile;
mod credential;
mod decision;
mod error;
mod eval;
mod glob;
mod index;
mod matcher;
mod parse;
mod template;
#[cfg(test)]
mod test_support;
pub(crate) mod tools;
mod vault_tokens;

use std::collections::HashMap;
use std::path::Path;

pub(crate) use credential::{CredentialSource, KubeCluster, KubeUser};
pub use decision::Decision;
pub(crate) use decision::{
    DenyReason, Explanation, FailedCondition, Grant, RuleExplanation, RuleFailure,
};
pub use error::PolicyError;
pub(crate) use parse::Effect;
pub(crate) use template::{Template, TemplateError};

use crate::provider::Provider;
use crate::token::IssuerSettings;
use compile::CompiledEnv;

/// Largest policy file `load_dir` reads.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Every environment's compiled policy. Immutable once built; `Send + Sync`.
#[derive(Debug)]
pub struct PolicySet {
    environments: HashMap<String, CompiledEnv>,
    /// Environment names, sorted, for stable listings.
    names: Vec<String>,
}

/// What a job asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub environment: &'a str,
    /// The configured issuer name that verified the token.
    pub issuer: &'a str,
    /// The token's verified claims.
    pub claims: &'a serde_json::Map<String, serde_json::Value>,
    /// Credential names; empty = everything the applicable rules grant.
    pub credentials: &'a [String],
}

/// One configured issuer, as the policy compiler sees it: the name rules
/// use, its provider (with the URL: whether it is shared, and which ids its
/// rules must then bind), and
/// its URL when known (so a token's `iss` finds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssuer {
    /// The configured name rules use (`github`).
    pub name: String,
    pub provider: Provider,
    /// The issuer URL (`iss`), when known.
    pub url: Option<String>,
}

impl PolicyIssuer {
    /// An issuer with a known provider.
    pub fn new(name: impl Into<String>, provider: Provider, url: Option<String>) -> PolicyIssuer {
        PolicyIssuer {
            name: name.into(),
            provider,
            url,
        }
    }

    /// An issuer known by name only: generic, no URL.
    pub fn named(name: impl Into<String>) -> PolicyIssuer {
        PolicyIssuer::new(name, Provider::Generic, None)
    }

    /// An issuer by its URL: the provider whose exact well-known URL it
    /// is, or generic (see [`Provider::from_issuer_url`]).
    pub fn from_url(name: impl Into<String>, url: &str) -> PolicyIssuer {
        PolicyIssuer::new(name, Provider::from_issuer_url(url), Some(url.to_owned()))
    }

    /// The issuers of a server configuration, with the providers it names.
    pub fn from_settings(issuers: &[IssuerSettings]) -> Vec<PolicyIssuer> {
        issuers
            .iter()
            .map(|i| PolicyIssuer::new(i.name.clone(), i.provider, Some(i.issuer.clone())))
            .collect()
    }

    /// Whether the issuer signs for many tenants (github.com, gitlab.com,
    /// Buildkite, ...; see [`Provider::issuer_is_shared`]): then every
    /// allow rule must bind the tenant and the project by their immutable
    /// ids.
    pub fn is_shared(&self) -> bool {
        self.provider.issuer_is_shared(self.url.as_deref())
    }
}

impl From<&str> for PolicyIssuer {
    fn from(name: &str) -> Self {
        PolicyIssuer::named(name)
    }
}

/// Whether `name` is a policy file name; returns its stem.
fn policy_stem(name: &str) -> Option<&str> {
    let path = Path::new(name);
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => path.file_stem().and_then(|s| s.to_str()),
        _ => None,
    }
}

impl PolicySet {
    /// Reads every `*.yaml` / `*.yml` in `dir` (not recursively), parses
    /// strictly, compiles. `issuers` = the configured issuers
    /// ([`PolicyIssuer::from_settings`]).
    pub fn load_dir(dir: &Path, issuers: &[PolicyIssuer]) -> Result<PolicySet, PolicyError> {
        let io_err = |file: &Path, source| PolicyError::Io {
            file: file.display().to_string(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let path = entry.map_err(|e| io_err(dir, e))?.path();
            let name = path.display().to_string();
            if policy_stem(&name).is_some() {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(PolicyError::NoPolicies {
                file: dir.display().to_string(),
            });
        }
        paths.sort();
        let mut sources = Vec::with_capacity(paths.len());
        for path in paths {
            let text = match crate::files::read_to_string(&path, MAX_FILE_BYTES) {
                Ok(text) => text,
                Err(crate::files::FileError::TooLarge { size, limit, .. }) => {
                    return Err(PolicyError::TooLarge {
                        file: path.display().to_string(),
                        size,
                        limit,
                    });
                }
                Err(e) => return Err(io_err(&path, e.into_io())),
            };
            sources.push((path.display().to_string(), text));
        }
        Self::from_sources(&sources, issuers)
    }

    /// Same from in-memory (file name, text) pairs; names not ending in
    /// `.yaml` / `.yml` are ignored, as `load_dir` ignores such files.
    pub fn from_sources(
        sources: &[(String, String)],
        issuers: &[PolicyIssuer],
    ) -> Result<PolicySet, PolicyError> {
        let mut environments: HashMap<String, CompiledEnv> = HashMap::new();
        for (file, text) in sources {
            let Some(stem) = policy_stem(file) else {
                continue;
            };
            if !compile::valid_environment_name(stem) {
                return Err(PolicyError::InvalidEnvironmentName {
                    file: file.clone(),
                    environment: stem.to_owned(),
                });
            }
            if let Some(other) = environments.get(stem) {
                return Err(PolicyError::DuplicateEnvironment {
                    file: file.clone(),
                    environment: stem.to_owned(),
                    other: other.file.clone(),
                });
            }
            let raw = parse::parse_file(file, text)?;
            let env = compile::compile(file, raw, issuers)?;
            environments.insert(stem.to_owned(), env);
        }
        let mut names: Vec<String> = environments.keys().cloned().collect();
        names.sort();
        Ok(PolicySet {
            environments,
            names,
        })
    }

    /// Environment names, sorted.
    pub fn environments(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The compiled environment, for the tools.
    pub(crate) fn env(&self, name: &str) -> Option<&CompiledEnv> {
        self.environments.get(name)
    }

    /// Whether denials in `environment` name the failed claims (its
    /// `report_failed_claims`; true for an unknown environment, which has
    /// no claims to report).
    pub fn reports_failed_claims(&self, environment: &str) -> bool {
        self.environments
            .get(environment)
            .is_none_or(|e| e.report_failed_claims)
    }

    /// The decision plus, for every rule of the environment in file order,
    /// whether it applies and the first condition that failed. For humans
    /// (`jobkey policy explain`, `policy test`); the request path uses
    /// [`decide`](Self::decide).
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let decision = self.decide(req);
        match self.environments.get(req.environment) {
            Some(env) => Explanation {
                file: env.file.clone(),
                decision,
                rules: eval::explain_rules(env, req),
            },
            None => Explanation {
                file: String::new(),
                decision,
                rules: Vec::new(),
            },
        }
    }

    /// The JSON Schema of a policy file (what `schema/policy.schema.json`
    /// holds), generated from the parser's own types.
    pub fn json_schema() -> String {
        parse::json_schema_text()
    }

    /// Pure, no I/O. `req.claims` are the token's verified claims.
    pub fn decide(&self, req: &Request<'_>) -> Decision {
        match self.environments.get(req.environment) {
            Some(env) => eval::decide(env, req),
            None => Decision::Deny(DenyReason::UnknownEnvironment {
                environment: req.environment.to_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Map, Value, json};

    use super::test_support::{claims, denied, granted};
    use super::*;

    fn issuers() -> Vec<PolicyIssuer> {
        vec!["github".into(), "gitlab".into(), "buildkite".into()]
    }

    fn shipped() -> PolicySet {
        match PolicySet::load_dir(Path::new("policies"), &issuers()) {
            Ok(set) => set,
            Err(err) => panic!("{err}"),
        }
    }

    /// What GitHub Actions puts in the token of acme/api's production
    /// deploy from main (trimmed to the claims that matter, plus noise).
    fn github_deploy() -> Map<String, Value> {
        claims(json!({
            "iss": "https://token.actions.githubusercontent.com",
            "aud": "jobkey",
            "sub": "repo:acme/api:environment:production",
            "repository": "acme/api",
            "repository_id": "892347",
            "repository_owner": "acme",
            "repository_owner_id": "10001",
            "ref": "refs/heads/main",
            "ref_type": "branch",
            "environment": "production",
            "event_name": "push",
            "runner_environment": "github-hosted",
            "run_id": "1234",
            "run_attempt": "1",
        }))
    }

    fn gitlab_deploy() -> Map<String, Value> {
        claims(json!({
            "iss": "https://gitlab.com",
            "sub": "project_path:acme/api:ref_type:branch:ref:main",
            "project_id": "4242",
            "project_path": "acme/api",
            "namespace_id": "77",
            "namespace_path": "acme",
            "ref": "main",
            "ref_type": "branch",
            "ref_protected": "true",
            "environment": "staging",
            "pipeline_source": "push",
        }))
    }

    fn decide(set: &PolicySet, env: &str, issuer: &str, c: &Map<String, Value>) -> Decision {
        set.decide(&Request {
            environment: env,
            issuer,
            claims: c,
            credentials: &[],
        })
    }

    #[test]
    fn policy_set_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<PolicySet>();
    }

    #[test]
    fn shipped_policies_load() {
        let set = shipped();
        assert_eq!(
            set.environments().collect::<Vec<_>>(),
            vec!["production", "staging"]
        );
    }

    #[test]
    fn production_admits_the_main_deploy() {
        let set = shipped();
        let d = decide(&set, "production", "github", &github_deploy());
        assert_eq!(
            d,
            Decision::Allow(vec![Grant {
                credential: "deploy-db".into(),
                rule: "github-api-deploy".into(),
                ttl: Duration::from_secs(300),
                source: CredentialSource::Kv {
                    mount: "secret".into(),
                    path: "production/deploy-db".into(),
                    fields: Some(vec!["username".into(), "password".into()]),
                },
            }])
        );
        let mut dispatch = github_deploy();
        dispatch.insert("event_name".into(), json!("workflow_dispatch"));
        assert!(matches!(
            decide(&set, "production", "github", &dispatch),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn production_release_workflow_gets_a_database_user_and_a_kubeconfig() {
        let set = shipped();
        let mut c = github_deploy();
        c.insert(
            "job_workflow_ref".into(),
            json!("acme/api/.github/workflows/release.yml@refs/heads/main"),
        );
        match decide(&set, "production", "github", &c) {
            Decision::Allow(grants) => {
                let kinds: Vec<(&str, &str)> = grants
                    .iter()
                    .map(|g| (g.credential.as_str(), g.source.kind()))
                    .collect();
                assert!(kinds.contains(&("app-db-user", "database")), "{kinds:?}");
                assert!(
                    kinds.contains(&("prod-kubeconfig", "kubeconfig")),
                    "{kinds:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // Another workflow file of the same repository does not.
        c.insert(
            "job_workflow_ref".into(),
            json!("acme/api/.github/workflows/lint.yml@refs/heads/main"),
        );
        let names: Vec<String> = granted(&decide(&set, "production", "github", &c))
            .into_iter()
            .map(|(credential, ..)| credential)
            .collect();
        assert_eq!(names, vec!["deploy-db".to_owned()]);
    }

    #[test]
    fn production_refuses_lookalikes() {
        let set = shipped();
        // (claim, value or None to remove it, claim named in failed_claims)
        let table: &[(&str, Option<Value>, &str)] = &[
            ("ref", Some(json!("refs/heads/feature")), "ref"),
            (
                "event_name",
                Some(json!("pull_request_target")),
                "event_name",
            ),
            ("event_name", Some(json!("pull_request")), "event_name"),
            ("repository_id", Some(json!("892348")), "repository_id"),
            // a renamed-and-re-registered owner keeps the name, not the id
            (
                "repository_owner_id",
                Some(json!("666")),
                "repository_owner_id",
            ),
            ("repository", Some(json!("acme/api-fork")), "repository"),
            ("environment", Some(json!("staging")), "environment"),
            ("environment", None, "environment"),
            ("repository_id", None, "repository_id"),
        ];
        for (claim, value, named) in table {
            let mut c = github_deploy();
            match value {
                Some(v) => c.insert((*claim).to_owned(), v.clone()),
                None => c.remove(*claim),
            };
            match decide(&set, "production", "github", &c) {
                Decision::Deny(reason) => {
                    assert_eq!(reason.code(), "no_rule_matched", "{claim}={value:?}");
                    assert_eq!(reason.failed_claims(), vec![(*named).to_owned()]);
                }
                other => panic!("{claim}={value:?} was allowed: {other:?}"),
            }
        }

        // Self-hosted runners: the deny rule wins over the matching allow rule.
        let mut c = github_deploy();
        c.insert("runner_environment".into(), json!("self-hosted"));
        assert_eq!(
            decide(&set, "production", "github", &c),
            Decision::Deny(DenyReason::DeniedByRule {
                rule: "no-self-hosted-runners".into()
            })
        );

        // The right claims under another issuer name do not get in.
        let d = decide(&set, "production", "gitlab", &github_deploy());
        assert_eq!(denied(&d).code(), "no_rule_matched");
        // Nor do GitHub's claims get staging's credentials.
        let d = decide(&set, "staging", "github", &github_deploy());
        assert_eq!(denied(&d).code(), "no_rule_matched");
    }

    /// Regression: a token without `runner_environment` passed the deny
    /// rule `no-self-hosted-runners`, whose condition held only for tokens
    /// carrying the claim. `{missing_or: self-hosted}` refuses it too.
    #[test]
    fn production_denies_a_token_that_does_not_name_its_runner() {
        let set = shipped();
        for runner in [None, Some(json!(null)), Some(json!(["self-hosted"]))] {
            let mut c = github_deploy();
            match &runner {
                Some(v) => c.insert("runner_environment".into(), v.clone()),
                None => c.remove("runner_environment"),
            };
            assert_eq!(
                decide(&set, "production", "github", &c),
                Decision::Deny(DenyReason::DeniedByRule {
                    rule: "no-self-hosted-runners".into()
                }),
                "{runner:?}"
            );
        }
    }

    #[test]
    fn staging_admits_the_protected_main_deploy_only() {
        let set = shipped();
        let d = decide(&set, "staging", "gitlab", &gitlab_deploy());
        match d {
            Decision::Allow(grants) => {
                assert_eq!(grants.len(), 1);
                assert_eq!(grants[0].credential, "app-config");
                assert_eq!(grants[0].rule, "gitlab-api-deploy");
                assert_eq!(grants[0].ttl, Duration::from_secs(900));
            }
            other => panic!("{other:?}"),
        }
        // A boolean `true` is accepted as well as GitLab's string "true".
        let mut c = gitlab_deploy();
        c.insert("ref_protected".into(), json!(true));
        assert!(matches!(
            decide(&set, "staging", "gitlab", &c),
            Decision::Allow(_)
        ));

        let table: &[(&str, Option<Value>)] = &[
            ("ref_protected", Some(json!("false"))),
            ("ref_protected", Some(json!(false))),
            ("ref", Some(json!("feature"))),
            ("project_id", Some(json!("4243"))),
            ("project_id", Some(json!(4243))),
            ("namespace_id", Some(json!("78"))),
            ("environment", None),
        ];
        for (claim, value) in table {
            let mut c = gitlab_deploy();
            match value {
                Some(v) => c.insert((*claim).to_owned(), v.clone()),
                None => c.remove(*claim),
            };
            match decide(&set, "staging", "gitlab", &c) {
                Decision::Deny(reason) => {
                    assert_eq!(reason.failed_claims(), vec![(*claim).to_owned()])
                }
                other => panic!("{claim}={value:?} was allowed: {other:?}"),
            }
        }
        // The numeric project id written as a number in the token still matches.
        let mut c = gitlab_deploy();
        c.insert("project_id".into(), json!(4242));
        assert!(matches!(
            decide(&set, "staging", "gitlab", &c),
            Decision::Allow(_)
        ));
    }

    #[test]
    fn shipped_policies_need_their_issuers_configured() {
        let err = PolicySet::load_dir(Path::new("policies"), &["github".into()])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("policies/staging.yaml:") && err.contains("issuer `gitlab`"),
            "{err}"
        );
    }

    #[test]
    fn load_dir_edges() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Empty directory: most likely a wrong path.
        let err = PolicySet::load_dir(dir.path(), &issuers()).err();
        assert!(
            matches!(err, Some(PolicyError::NoPolicies { .. })),
            "{err:?}"
        );
        // Missing directory.
        let err = PolicySet::load_dir(&dir.path().join("nope"), &issuers()).err();
        assert!(matches!(err, Some(PolicyError::Io { .. })), "{err:?}");

        let good = std::fs::read_to_string("policies/staging.yaml").expect("read");
        std::fs::write(dir.path().join("staging.yml"), &good).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not yaml: [").expect("write");
        let set = PolicySet::load_dir(dir.path(), &issuers()).expect("loads");
        assert_eq!(set.environments().collect::<Vec<_>>(), vec!["staging"]);

        // Two files for one environment.
        std::fs::write(dir.path().join("staging.yaml"), &good).expect("write");
        let err = PolicySet::load_dir(dir.path(), &issuers()).err();
        assert!(
            matches!(err, Some(PolicyError::DuplicateEnvironment { .. })),
            "{err:?}"
        );
        std::fs::remove_file(dir.path().join("staging.yaml")).expect("rm");

        // Oversized file.
        let big = format!("{good}\n#{}\n", "x".repeat(1024 * 1024));
        std::fs::write(dir.path().join("big.yaml"), big).expect("write");
        let err = PolicySet::load_dir(dir.path(), &issuers()).err();
        assert!(matches!(err, Some(PolicyError::TooLarge { .. })), "{err:?}");
        std::fs::remove_file(dir.path().join("big.yaml")).expect("rm");

        // Malformed file: error with its path, line and column.
        std::fs::write(dir.path().join("broken.yaml"), "rules:\n  - name: [\n").expect("write");
        let err = PolicySet::load_dir(dir.path(), &issuers())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let prefix = format!("{}:", dir.path().join("broken.yaml").display());
        assert!(err.starts_with(&prefix), "{err}");
        assert!(
            matches!(err.get(prefix.len()..prefix.len() + 1), Some("2" | "3")),
            "{err}"
        );
    }
}
