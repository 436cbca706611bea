//! Claims shaped like each CI provider's ID tokens (GitHub, GitLab,
//! Buildkite), for tests and the demo. Values are the example
//! organisation's (`acme/api`), matching the example policies in
//! `policies/`. The claim names are spelt out here, as the providers send
//! them; a test of `crate::provider` checks that they fit the table.

use serde_json::{Map, Value, json};

/// The providers the dev issuer can imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Github,
    Gitlab,
    Buildkite,
}

impl Shape {
    /// The provider whose tokens this shape imitates.
    #[cfg(test)]
    pub(crate) fn provider(self) -> crate::provider::Provider {
        use crate::provider::Provider;
        match self {
            Shape::Github => Provider::Github,
            Shape::Gitlab => Provider::Gitlab,
            Shape::Buildkite => Provider::Buildkite,
        }
    }

    /// Typical lifetime of the provider's tokens, in seconds.
    pub fn lifetime(self) -> u64 {
        match self {
            Shape::Github => 300,
            Shape::Gitlab => 3600,
            Shape::Buildkite => 600,
        }
    }

    /// The claims of a main-branch deploy job, issued `now`.
    pub fn claims(self, iss: &str, aud: &str, now: u64) -> Map<String, Value> {
        let v = match self {
            Shape::Github => github(iss, aud, now),
            Shape::Gitlab => gitlab(iss, aud, now),
            Shape::Buildkite => buildkite(iss, aud, now),
        };
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }
}

fn github(iss: &str, aud: &str, now: u64) -> Value {
    json!({
        "iss": iss,
        "aud": aud,
        "sub": "repo:acme/api:environment:production",
        "jti": format!("gh-{now}"),
        "iat": now,
        "nbf": now,
        "exp": now + Shape::Github.lifetime(),
        "repository": "acme/api",
        "repository_id": "892347",
        "repository_owner": "acme",
        "repository_owner_id": "10001",
        "repository_visibility": "private",
        "ref": "refs/heads/main",
        "ref_type": "branch",
        "ref_protected": "true",
        "sha": "5e4c7a1d2b3f4e5a6b7c8d9e0f1a2b3c4d5e6f70",
        "environment": "production",
        "event_name": "push",
        "workflow": "deploy",
        "workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "runner_environment": "github-hosted",
        "actor": "octocat",
        "actor_id": "583231",
        "run_id": "9876543210",
        "run_number": "42",
        "run_attempt": "1",
    })
}

fn gitlab(iss: &str, aud: &str, now: u64) -> Value {
    json!({
        "iss": iss,
        "aud": aud,
        "sub": "project_path:acme/api:ref_type:branch:ref:main",
        "jti": format!("gl-{now}"),
        "iat": now,
        "nbf": now,
        "exp": now + Shape::Gitlab.lifetime(),
        "namespace_id": "77",
        "namespace_path": "acme",
        "project_id": "4242",
        "project_path": "acme/api",
        "user_id": "31",
        "user_login": "deploy-bot",
        "pipeline_id": "1200345",
        "pipeline_source": "push",
        "job_id": "5550001",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "environment": "staging",
        "environment_protected": "true",
        "deployment_tier": "staging",
        "ci_config_ref_uri": "gitlab.example.com/acme/api//.gitlab-ci.yml@refs/heads/main",
        "runner_id": "12",
        "runner_environment": "gitlab-hosted",
        "sha": "5e4c7a1d2b3f4e5a6b7c8d9e0f1a2b3c4d5e6f70",
    })
}

/// Buildkite's issuer is shared by every organization: a policy must bind
/// the organization (see the provider table's tenant claims).
fn buildkite(iss: &str, aud: &str, now: u64) -> Value {
    let sha = "5e4c7a1d2b3f4e5a6b7c8d9e0f1a2b3c4d5e6f70";
    json!({
        "iss": iss,
        "aud": aud,
        "sub": format!("organization:acme:pipeline:api:ref:refs/heads/main:commit:{sha}:step:deploy"),
        "jti": format!("bk-{now}"),
        "iat": now,
        "nbf": now,
        "exp": now + Shape::Buildkite.lifetime(),
        "organization_slug": "acme",
        "organization_id": "0189a3c2-7d51-4e3b-9f0a-5b6c7d8e9f01",
        "pipeline_slug": "api",
        "pipeline_id": "0189a3c2-8e62-4f4c-a01b-6c7d8e9f0a12",
        "build_number": 1234,
        "build_branch": "main",
        "build_commit": sha,
        "build_source": "webhook",
        "step_key": "deploy",
        "job_id": "0189a3c3-0a73-4b5d-b12c-7d8e9f0a1b23",
        "agent_id": "0189a3c3-1b84-4c6e-c23d-8e9f0a1b2c34",
        "runner_environment": "buildkite-hosted",
    })
}
