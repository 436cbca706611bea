//! The CI examples in `examples/` are admitted by the policy they name, and
//! the same job on a feature branch is denied. The claims are the ones the
//! example job would present: the provider's token shape
//! (`jobkey::Shape`) with the values the example sets (its
//! environment, branch, step key).

use std::path::Path;

use jobkey::Shape;
use jobkey::{Decision, PolicyIssuer, PolicySet, Request};
use serde_json::{Map, Value, json};

fn read(rel: &str) -> (String, Value) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    let yaml: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    (text, yaml)
}

/// `# jobkey policy: policies/ENV.yaml, rule RULE` → (ENV, RULE).
fn named_policy(rel: &str, text: &str) -> (String, String) {
    let re = regex::Regex::new(
        r"jobkey policy: [^\n]*?policies/([a-z0-9_-]+)\.yaml, rule ([a-z0-9_-]+)",
    )
    .unwrap();
    let c = re
        .captures(text)
        .unwrap_or_else(|| panic!("{rel} names no policy"));
    (c[1].to_owned(), c[2].to_owned())
}

/// The `--environment` a `jobkey fetch` in the text asks for.
fn fetched_environment(rel: &str, text: &str) -> String {
    let re = regex::Regex::new(r"jobkey fetch --environment (\S+)").unwrap();
    re.captures(text)
        .unwrap_or_else(|| panic!("{rel} runs no jobkey fetch"))[1]
        .trim_matches('"')
        .to_owned()
}

/// The shipped policies, loaded once. Buildkite by its real URL, so the
/// shared-issuer tenant check applies.
fn policies() -> &'static PolicySet {
    static SET: std::sync::OnceLock<PolicySet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        let issuers = [
            PolicyIssuer::from_url("github", "https://token.actions.githubusercontent.com"),
            PolicyIssuer::from_url("gitlab", "https://gitlab.com"),
            PolicyIssuer::from_url("buildkite", "https://agent.buildkite.com"),
        ];
        PolicySet::load_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
            &issuers,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

fn claims(shape: Shape, overrides: Value) -> Map<String, Value> {
    let mut c = shape.claims("https://issuer.example", "jobkey", 1_700_000_000);
    jobkey::apply_claim_overrides(&mut c, &crate::support::overrides(overrides));
    c
}

/// The decision of the shipped policies for a job of `issuer` with
/// `claims` asking for everything in `env`.
fn decide(env: &str, issuer: &str, claims: &Map<String, Value>) -> Decision {
    policies().decide(&Request {
        environment: env,
        issuer,
        claims,
        credentials: &[],
    })
}

fn assert_admitted(rel: &str, env: &str, rule: &str, issuer: &str, c: &Map<String, Value>) {
    match decide(env, issuer, c) {
        Decision::Allow(grants) => {
            assert!(!grants.is_empty());
            assert!(
                grants.iter().all(|g| g.rule == rule),
                "{rel}: granted by {:?}",
                grants.iter().map(|g| &g.rule).collect::<Vec<_>>()
            );
        }
        Decision::Deny(d) => panic!("{rel}: denied: {:?}", d.failed_claims()),
    }
}

fn assert_denied(rel: &str, env: &str, issuer: &str, c: &Map<String, Value>) {
    assert!(
        matches!(decide(env, issuer, c), Decision::Deny(_)),
        "{rel}: a feature branch must be denied"
    );
}

#[test]
fn github_deploy_workflow_is_admitted_on_main_only() {
    let rel = "examples/github/deploy.yml";
    let (text, y) = read(rel);
    let (env, rule) = named_policy(rel, &text);
    let job = &y["jobs"]["deploy"];
    assert_eq!(
        job["permissions"]["id-token"], "write",
        "{rel}: needs id-token: write"
    );
    assert_eq!(
        job["environment"],
        env.as_str(),
        "{rel}: the GitHub environment is the policy's"
    );
    assert_eq!(fetched_environment(rel, &text), env);
    assert!(
        text.contains("--exec -- kubectl apply"),
        "{rel}: deploys with --exec"
    );
    let branch = y["on"]["push"]["branches"][0].as_str().unwrap();

    let c = claims(
        Shape::Github,
        json!({"environment": env, "ref": format!("refs/heads/{branch}"), "event_name": "push"}),
    );
    assert_admitted(rel, &env, &rule, "github", &c);
    let c = claims(
        Shape::Github,
        json!({"environment": env, "ref": "refs/heads/feature/x", "event_name": "push"}),
    );
    assert_denied(rel, &env, "github", &c);
}

#[test]
fn github_composite_action_has_two_inputs_and_no_script_injection() {
    let rel = "examples/github/action.yml";
    let (text, y) = read(rel);
    let inputs = y["inputs"].as_object().unwrap();
    assert_eq!(inputs.len(), 2, "{rel}: two inputs");
    assert_eq!(y["runs"]["using"], "composite");
    let run = y["runs"]["steps"][0]["run"].as_str().unwrap();
    assert!(
        run.contains("jobkey fetch") && run.contains("--exec --"),
        "{run}"
    );
    assert!(
        !run.contains("${{"),
        "{rel}: inputs must reach the script via env, not interpolation"
    );
    let (env, rule) = named_policy(rel, &text);
    let c = claims(Shape::Github, json!({"environment": env}));
    assert_admitted(rel, &env, &rule, "github", &c);
}

#[test]
fn gitlab_job_is_admitted_on_main_only_and_uses_files() {
    let rel = "examples/gitlab/.gitlab-ci.yml";
    let (text, y) = read(rel);
    let (env, rule) = named_policy(rel, &text);
    let job = &y["deploy-staging"];
    assert_eq!(
        job["id_tokens"]["JOBKEY_ID_TOKEN"]["aud"], "jobkey",
        "{rel}: id_tokens for jobkey"
    );
    assert_eq!(job["environment"]["name"], env.as_str());
    assert_eq!(fetched_environment(rel, &text), env);
    let script = job["script"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        script.contains("--out") && !script.contains("--exec"),
        "{rel}: files only"
    );

    let c = claims(Shape::Gitlab, json!({"environment": env}));
    assert_admitted(rel, &env, &rule, "gitlab", &c);
    let c = claims(
        Shape::Gitlab,
        json!({"environment": env, "ref": "feature/x", "ref_path": "refs/heads/feature/x"}),
    );
    assert_denied(rel, &env, "gitlab", &c);
}

#[test]
fn buildkite_pipeline_is_admitted_on_main_only_and_binds_the_organization() {
    let rel = "examples/buildkite/pipeline.yml";
    let (text, y) = read(rel);
    let (env, rule) = named_policy(rel, &text);
    let step = &y["steps"][0];
    let step_key = step["key"].as_str().unwrap();
    let branch = step["branches"].as_str().unwrap();
    assert_eq!(fetched_environment(rel, &text), env);
    // Buildkite puts the ids the policy binds in the token only when asked.
    assert_eq!(
        y["env"]["BUILDKITE_OIDC_TOKEN_CLAIMS"], "organization_id,pipeline_id",
        "{rel}: asks for the organization's and the pipeline's ids"
    );

    let c = claims(
        Shape::Buildkite,
        json!({"step_key": step_key, "build_branch": branch}),
    );
    assert_admitted(rel, &env, &rule, "buildkite", &c);
    // Another branch, and another organization with the same pipeline name
    // on the shared issuer, are denied.
    let cases = [
        json!({"step_key": step_key, "build_branch": "feature/x"}),
        json!({"step_key": step_key, "build_branch": branch, "organization_id": "another-org-id"}),
        json!({"step_key": step_key, "build_branch": branch, "organization_slug": "evil"}),
        json!({"step_key": step_key, "build_branch": branch, "pipeline_id": "another-pipeline-id"}),
        // A token without the ids (not asked for) is refused.
        json!({"step_key": step_key, "build_branch": branch, "pipeline_id": null}),
    ];
    for o in cases {
        assert_denied(rel, &env, "buildkite", &claims(Shape::Buildkite, o));
    }
}
