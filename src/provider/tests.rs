//! The provider table, tested over every entry.

use serde_json::json;

use super::*;
use crate::devissuer::Shape;

fn env_of<'a>(vars: &'a [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    }
}

#[test]
fn every_entry_is_its_own_and_named_once() {
    for p in Provider::ALL {
        assert_eq!(p.info().provider, p, "{p:?}");
        assert_eq!(Provider::from_name(p.name()), Some(p), "{p:?}");
        let value: Provider = serde_json::from_value(json!(p.name())).expect("deserializes");
        assert_eq!(value, p);
        assert_eq!(serde_json::to_value(p).ok(), Some(json!(p.name())));
        // `--issuer NAME=PROVIDER:URL` tells a provider from a URL scheme.
        assert!(!["http", "https"].contains(&p.name()), "{p:?}");
    }
    let mut names = Provider::names().to_vec();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), Provider::ALL.len());
    assert_eq!(Provider::ALL.last(), Some(&Provider::Generic));
    let err = serde_json::from_value::<Provider>(json!("buildkit"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("unknown variant `buildkit`"), "{err}");
}

/// (preset, config value, issuer URL, provider)
#[test]
fn presets_make_issuer_urls() {
    let org = "c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e";
    let table: &[(&str, Option<&str>, &str, Provider)] = &[
        (
            "github",
            None,
            "https://token.actions.githubusercontent.com",
            Provider::Github,
        ),
        (
            "github-enterprise",
            Some("acme"),
            "https://token.actions.githubusercontent.com/acme",
            Provider::Github,
        ),
        (
            "github-server",
            Some("github.acme.internal"),
            "https://github.acme.internal/_services/token",
            Provider::Github,
        ),
        ("gitlab", None, "https://gitlab.com", Provider::Gitlab),
        (
            "gitlab",
            Some("https://gitlab.acme.internal/"),
            "https://gitlab.acme.internal",
            Provider::Gitlab,
        ),
        (
            "buildkite",
            None,
            "https://agent.buildkite.com",
            Provider::Buildkite,
        ),
        (
            "circleci",
            Some(org),
            "https://oidc.circleci.com/org/c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e",
            Provider::Circleci,
        ),
        (
            "bitbucket",
            Some("acme"),
            "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc",
            Provider::Bitbucket,
        ),
        (
            "azure-devops",
            Some(org),
            "https://vstoken.dev.azure.com/c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e",
            Provider::AzureDevops,
        ),
        (
            "forgejo",
            Some("https://codeberg.org"),
            "https://codeberg.org/api/actions",
            Provider::Forgejo,
        ),
    ];
    for (name, value, url, provider) in table {
        let preset = Preset::by_name(name).expect("a preset");
        assert_eq!(preset.issuer_url(*value).as_deref(), Ok(*url), "{name}");
        assert_eq!(preset.provider, *provider, "{name}");
    }
    // Every preset is in the table above.
    for p in PRESETS {
        assert!(table.iter().any(|(n, ..)| *n == p.name), "{}", p.name);
        assert!(!p.max_lifetime.is_zero(), "{}", p.name);
    }
    assert_eq!(Preset::names().len(), PRESETS.len());
}

/// A parameter of the wrong form cannot reshape the URL; a required one
/// is asked for with an example.
#[test]
fn preset_parameters_are_checked() {
    let table: &[(&str, Option<&str>, &str)] = &[
        ("github-enterprise", None, "needs enterprise"),
        ("github-enterprise", Some(""), "enterprise slug"),
        ("github-enterprise", Some("acme/../x"), "enterprise slug"),
        ("github-server", Some("evil.example/x"), "host name"),
        ("github-server", Some("evil.example:8443"), "host name"),
        ("circleci", None, "needs organization"),
        ("circleci", Some("acme"), "UUID"),
        (
            "circleci",
            Some("c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e/x"),
            "UUID",
        ),
        ("bitbucket", Some("Acme"), "workspace's slug"),
        ("bitbucket", Some("a/b"), "workspace's slug"),
        ("azure-devops", Some("acme"), "UUID"),
        ("forgejo", None, "needs url"),
        ("forgejo", Some("/"), "instance's URL"),
    ];
    for (name, value, want) in table {
        let preset = Preset::by_name(name).expect("a preset");
        let got = match preset.issuer_url(*value) {
            Err(PresetError::Missing { key, example }) => {
                assert!(!example.is_empty());
                format!("needs {key}")
            }
            Err(PresetError::Invalid { fix, .. }) => fix.to_owned(),
            Ok(url) => panic!("{name} {value:?} made {url}"),
        };
        assert!(got.contains(want), "{name} {value:?}: {got}");
    }
    // An IPv6 literal is a host.
    assert!(
        Preset::by_name("github-server")
            .map(|p| p.issuer_url(Some("[::1]")).is_ok())
            .unwrap_or(false)
    );
}

/// Only exact well-known URLs name a provider; lookalikes, self-managed
/// hosts and stand-ins are generic.
#[test]
fn providers_from_exact_well_known_urls_only() {
    let table: &[(&str, Provider)] = &[
        (
            "https://token.actions.githubusercontent.com",
            Provider::Github,
        ),
        (
            "https://token.actions.githubusercontent.com/acme",
            Provider::Github,
        ),
        ("https://gitlab.com", Provider::Gitlab),
        ("https://agent.buildkite.com", Provider::Buildkite),
        (
            "https://oidc.circleci.com/org/c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e",
            Provider::Circleci,
        ),
        (
            "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc",
            Provider::Bitbucket,
        ),
        (
            "https://vstoken.dev.azure.com/c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e",
            Provider::AzureDevops,
        ),
        // Not well known: no guessing from the URL's shape.
        ("https://ghe.example.com/_services/token", Provider::Generic),
        ("https://gitlab.example.com", Provider::Generic),
        ("https://codeberg.org/api/actions", Provider::Generic),
        ("http://127.0.0.1:8403", Provider::Generic),
        // Lookalikes.
        ("https://agent.buildkite.com/", Provider::Generic),
        (
            "https://agent.buildkite.com.evil.example",
            Provider::Generic,
        ),
        (
            "https://token.actions.githubusercontent.com/acme/x",
            Provider::Generic,
        ),
        (
            "https://token.actions.githubusercontent.com.evil.example",
            Provider::Generic,
        ),
        ("https://oidc.circleci.com/org/1f4e", Provider::Generic),
        ("https://gitlab.com.evil.example", Provider::Generic),
    ];
    for (url, want) in table {
        assert_eq!(Provider::from_issuer_url(url), *want, "{url}");
    }
    // Every preset's well-known URL names the preset's provider.
    for p in PRESETS.iter().filter(|p| p.param.is_none()) {
        assert_eq!(
            Provider::from_issuer_url(p.prefix),
            p.provider,
            "{}",
            p.name
        );
    }
}

/// (provider, tenancy, tenant ids, project ids, run claims)
#[test]
fn tenants_projects_and_runs() {
    type Row = (
        Provider,
        Tenancy,
        &'static [&'static str],
        &'static [&'static str],
        &'static [&'static str],
    );
    let table: &[Row] = &[
        (
            Provider::Github,
            Tenancy::SharedAtWellKnownUrls,
            &["repository_owner_id"],
            &["repository_id"],
            &["run_id"],
        ),
        (
            Provider::Gitlab,
            Tenancy::SharedAtWellKnownUrls,
            &["namespace_id"],
            &["project_id"],
            &["pipeline_id"],
        ),
        (
            Provider::Buildkite,
            Tenancy::Shared,
            &["organization_id"],
            &["pipeline_id"],
            &["organization_slug", "pipeline_slug", "build_number"],
        ),
        (
            Provider::Circleci,
            Tenancy::Shared,
            &["oidc.circleci.com/org-id"],
            &["oidc.circleci.com/project-id"],
            &["oidc.circleci.com/workflow-id"],
        ),
        (
            Provider::Bitbucket,
            Tenancy::Shared,
            &["workspaceUuid"],
            &["repositoryUuid"],
            &["pipelineUuid"],
        ),
        (Provider::AzureDevops, Tenancy::Single, &[], &[], &[]),
        (
            Provider::Forgejo,
            Tenancy::Single,
            &["repository_owner_id"],
            &["repository_id"],
            &["run_id"],
        ),
        (Provider::Generic, Tenancy::Single, &[], &[], &[]),
    ];
    for (p, tenancy, tenant, project, run) in table {
        assert_eq!(p.tenancy(), *tenancy, "{p:?}");
        assert_eq!(p.tenant_claims(), *tenant, "{p:?}");
        assert_eq!(p.project_claims(), *project, "{p:?}");
        assert_eq!(p.run_claims(), *run, "{p:?}");
        // A provider with shared issuers has ids to bind.
        assert!(
            *tenancy == Tenancy::Single || (!tenant.is_empty() && !project.is_empty()),
            "{p:?}"
        );
    }
    assert_eq!(table.len(), Provider::ALL.len());
}

/// Which issuers are shared: (provider, issuer URL, shared). A token's
/// `iss` must equal its issuer's URL, so only the well-known URLs receive
/// github.com's and gitlab.com's tokens.
#[test]
fn shared_issuers_by_provider_and_url() {
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
        (
            Provider::Github,
            Some("https://ghe.example.com/_services/token"),
            false,
        ),
        (Provider::Github, Some("http://127.0.0.1:8401"), false),
        (Provider::Github, None, true),
        (Provider::Gitlab, Some("https://gitlab.com"), true),
        (
            Provider::Gitlab,
            Some("https://gitlab.acme.internal"),
            false,
        ),
        (Provider::Buildkite, Some("http://127.0.0.1:8403"), true),
        (Provider::Circleci, None, true),
        (Provider::Bitbucket, Some("http://127.0.0.1:8404"), true),
        (Provider::AzureDevops, None, false),
        (
            Provider::Forgejo,
            Some("https://codeberg.org/api/actions"),
            false,
        ),
        (
            Provider::Generic,
            Some("https://token.actions.githubusercontent.com"),
            false,
        ),
    ];
    for (p, url, shared) in table {
        assert_eq!(p.issuer_is_shared(*url), *shared, "{p:?} {url:?}");
    }
}

/// GitHub's immutable subject names both ids; the name-only form, other
/// providers' shapes and near misses do not.
#[test]
fn github_immutable_subjects() {
    let table: &[(&str, bool)] = &[
        ("repo:acme-10001/api-892347:ref:refs/heads/main", true),
        (
            "repo:acme-corp-10001/my-api-892347:environment:production",
            true,
        ),
        ("repo:acme/api:ref:refs/heads/main", false),
        ("repo:acme-x/api-892347:ref:refs/heads/main", false),
        ("repo:acme-10001/api-89x:ref:refs/heads/main", false),
        ("repo:-10001/api-892347:ref:refs/heads/main", false),
        ("repo:acme-/api-892347:ref:refs/heads/main", false),
        ("repo:acme-10001/api-892347", false),
        ("repo:acme-10001/api-892347:", false),
        ("repo:acme-10001/x/api-892347:ref:main", false),
        ("project_path:acme-1/api-2:ref:main", false),
    ];
    for (sub, want) in table {
        assert_eq!(Provider::Github.sub_has_ids(sub), *want, "{sub}");
        assert!(!Provider::Gitlab.sub_has_ids(sub), "{sub}");
    }
}

/// Every claim a table names elsewhere is one the provider sends, and
/// the run and tenant are audited.
#[test]
fn claim_lists_agree() {
    for p in Provider::ALL {
        let known = p.known_claims();
        let audited = p.audited_claims();
        let lint = p.lint();
        let named = p
            .tenant_claims()
            .iter()
            .chain(p.project_claims())
            .chain(p.run_claims())
            .chain(lint.project_names)
            .chain(lint.renamed.iter().flat_map(|(n, i)| [n, i]));
        for claim in named {
            assert!(known.contains(claim), "{p:?}: {claim}");
        }
        for claim in p.tenant_claims().iter().chain(p.run_claims()) {
            assert!(audited.contains(claim), "{p:?}: {claim} is not audited");
        }
        for claim in audited {
            assert!(known.contains(claim), "{p:?}: {claim}");
        }
        if let Some(check) = lint.branch_event {
            assert!(known.contains(&check.ref_claim), "{p:?}");
            assert!(known.contains(&check.event_claim), "{p:?}");
        }
        if let Some(r) = lint.runner {
            assert!(known.contains(&r.claim), "{p:?}");
        }
        assert!(known.contains(&"iss") && audited.contains(&"sub"), "{p:?}");
    }
    // The generic provider knows and audits what every provider does.
    for p in Provider::ALL {
        for claim in p.audited_claims() {
            assert!(
                Provider::Generic.audited_claims().contains(claim),
                "{claim}"
            );
        }
    }
    assert_eq!(
        Provider::Generic.role_of("pipeline_slug"),
        Some(Role::Repository)
    );
    assert_eq!(Provider::Github.role_of("pipeline_slug"), None);
    assert_eq!(Provider::Github.role_of("sub"), Some(Role::Repository));
}

/// The dev issuer's stand-in tokens carry only claims their provider
/// is known to send, and the claims that name the run and the tenant.
#[test]
fn stand_in_tokens_fit_their_entries() {
    for shape in [Shape::Github, Shape::Gitlab, Shape::Buildkite] {
        let p = shape.provider();
        let claims = shape.claims("https://issuer.example", "jobkey", 1_700_000_000);
        for name in claims.keys() {
            assert!(p.known_claims().contains(&name.as_str()), "{p:?}: {name}");
        }
        assert!(p.run_of(&claims).is_some(), "{p:?}");
        assert!(
            p.tenant_claims().iter().any(|t| claims.contains_key(*t)),
            "{p:?}"
        );
    }
}

#[test]
fn run_of_joins_the_run_claims() {
    let gh = json!({"run_id": "9876543210", "run_attempt": "2"});
    let bk = json!({"organization_slug": "acme", "pipeline_slug": "api", "build_number": 1234, "pipeline_id": "p"});
    let table: &[(Provider, Value, Option<&str>)] = &[
        (Provider::Github, gh.clone(), Some("9876543210")),
        (Provider::Gitlab, gh, None),
        (
            Provider::Buildkite,
            bk.clone(),
            Some("[\"acme\",\"api\",\"1234\"]"),
        ),
        (Provider::Generic, bk, None),
        (
            Provider::Buildkite,
            json!({"organization_slug": "acme", "pipeline_slug": "api"}),
            None,
        ),
        (Provider::Github, json!({"run_id": {"a": 1}}), None),
    ];
    for (p, claims, want) in table {
        let claims = claims.as_object().cloned().unwrap_or_default();
        assert_eq!(p.run_of(&claims).as_deref(), *want, "{p:?} {claims:?}");
    }
}

/// (environment variables, detected provider)
#[test]
fn detection_reads_each_ci_variable() {
    let table: &[(&[(&str, &str)], Provider)] = &[
        (&[("GITHUB_ACTIONS", "true")], Provider::Github),
        (&[("GITLAB_CI", "true")], Provider::Gitlab),
        (&[("BUILDKITE", "true")], Provider::Buildkite),
        (&[("CIRCLECI", "true")], Provider::Circleci),
        (&[("BITBUCKET_BUILD_NUMBER", "17")], Provider::Bitbucket),
        (&[("TF_BUILD", "True")], Provider::AzureDevops),
        (
            &[("GITHUB_ACTIONS", "true"), ("FORGEJO_ACTIONS", "true")],
            Provider::Forgejo,
        ),
        (&[("GITHUB_ACTIONS", "false")], Provider::Generic),
        (&[("CI", "true")], Provider::Generic),
        (&[], Provider::Generic),
    ];
    for (vars, want) in table {
        assert_eq!(Provider::detect(&env_of(vars)), *want, "{vars:?}");
    }
    // Every provider but the generic one can be detected.
    for p in Provider::ALL {
        assert_eq!(p.client().detect.is_some(), p != Provider::Generic, "{p:?}");
    }
}

#[test]
fn ci_names_and_older_spellings_parse() {
    use clap::ValueEnum;
    let table: &[(&str, Provider)] = &[
        ("github", Provider::Github),
        ("forgejo", Provider::Forgejo),
        ("azure-devops", Provider::AzureDevops),
        ("azure", Provider::AzureDevops),
        ("none", Provider::Generic),
        ("generic", Provider::Generic),
    ];
    for (text, want) in table {
        assert_eq!(Provider::from_str(text, false).ok(), Some(*want), "{text}");
    }
    assert!(Provider::from_str("jenkins", false).is_err());
}

#[test]
fn sub_shapes() {
    let table: &[(Provider, &str, bool)] = &[
        (Provider::Github, "repo:acme/api:", true),
        (Provider::Github, "repo:acme/", false),
        (Provider::Github, "", false),
        (Provider::Gitlab, "project_path:acme/api:", true),
        (Provider::Buildkite, "organization:acme:pipeline:api:", true),
        (Provider::Buildkite, "organization:acme:pipeline:", false),
        (Provider::Circleci, "org/o/project/p/", true),
        (Provider::Circleci, "org/o/project/", false),
        (Provider::Generic, "organization:acme:pipeline:api:", true),
        (Provider::Generic, "organization:acme:", false),
        (Provider::Generic, "org/o/project/p/", true),
        (Provider::Generic, "x:y:", true),
        (Provider::Generic, "x:", false),
    ];
    for (p, prefix, want) in table {
        assert_eq!(p.sub_names_project(prefix), *want, "{p:?} {prefix}");
    }
}

/// The audit records, for each provider, every claim of the single list it
/// used for all tokens before the table that the provider sends.
#[test]
fn the_audit_keeps_the_claims_it_recorded_before() {
    const BEFORE: &[&str] = &[
        "iss",
        "sub",
        "jti",
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "project_path",
        "project_id",
        "namespace_path",
        "namespace_id",
        "ref",
        "ref_type",
        "ref_protected",
        "sha",
        "environment",
        "event_name",
        "workflow_ref",
        "job_workflow_ref",
        "runner_environment",
        "actor",
        "user_login",
        "run_id",
        "run_attempt",
        "pipeline_id",
        "pipeline_source",
        "job_id",
        "organization_slug",
        "organization_id",
        "pipeline_slug",
        "build_number",
        "build_branch",
        "step_key",
    ];
    for p in Provider::ALL {
        for claim in BEFORE.iter().filter(|c| p.known_claims().contains(c)) {
            assert!(p.audited_claims().contains(claim), "{p:?}: {claim}");
        }
    }
    for claim in BEFORE {
        assert!(
            Provider::Generic.audited_claims().contains(claim),
            "{claim}"
        );
    }
}

/// A claim a provider never sends is named, with the closest it does send.
#[test]
fn misspelt_claims_find_their_closest_known_claim() {
    let table: &[(Provider, &str, bool, Option<&str>)] = &[
        (
            Provider::Github,
            "runner_enviroment",
            false,
            Some("runner_environment"),
        ),
        (Provider::Github, "repo_id", false, None),
        (Provider::Buildkite, "ref", false, None),
        (
            Provider::Github,
            "repostiory_id",
            false,
            Some("repository_id"),
        ),
        (
            Provider::Github,
            "runner_environment",
            true,
            Some("runner_environment"),
        ),
        (Provider::Github, "aud", true, Some("aud")),
        (Provider::Gitlab, "projectid", false, Some("project_id")),
        (Provider::Gitlab, "repository_id", false, None),
        (
            Provider::Circleci,
            "oidc.circleci.com/orgid",
            false,
            Some("oidc.circleci.com/org-id"),
        ),
        (
            Provider::Buildkite,
            "organisation_id",
            false,
            Some("organization_id"),
        ),
        // An unknown CI may send anything.
        (Provider::Generic, "anything_at_all", true, None),
    ];
    for (p, claim, sent, closest) in table {
        assert_eq!(p.sends(claim), *sent, "{p:?} {claim}");
        assert_eq!(p.closest_claim(claim), *closest, "{p:?} {claim}");
    }
}
