//! Claims shaped like each CI provider's ID tokens (GUIDE §3), for tests and
//! the demo. Values are the example organisation's (`acme/api`), matching the
//! example policies in `policies/`.

use serde_json::{Map, Value, json};

/// The providers the dev issuer can imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Github,
    Gitlab,
}

impl Shape {
    /// Typical lifetime of the provider's tokens, in seconds.
    pub fn lifetime(self) -> u64 {
        match self {
            Shape::Github => 300,
            Shape::Gitlab => 3600,
        }
    }

    /// The claims of a main-branch deploy job, issued `now`.
    pub fn claims(self, iss: &str, aud: &str, now: u64) -> Map<String, Value> {
        let v = match self {
            Shape::Github => github(iss, aud, now),
            Shape::Gitlab => gitlab(iss, aud, now),
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
