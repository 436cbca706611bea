//! Decision and compile time with 10,000 rules over 100 environments.
//!
//! `cargo bench --bench policy` (or `-- --quick`). Each environment has 100
//! rules: 95 GitHub allow rules each for its own repository (exact
//! `repository_owner_id` and `repository_id`, `ref`, `event_name` list, `environment`, a glob on
//! `workflow_ref`), 4 GitLab rules, 1 deny rule on self-hosted runners.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jobkey::{Decision, PolicyIssuer, PolicySet, Request};
use serde_json::{Map, Value, json};

const ENVS: usize = 100;
const RULES: usize = 100;

fn sources() -> Vec<(String, String)> {
    (0..ENVS)
        .map(|e| {
            let mut s = format!(
                "max_ttl: 15m\nrequire:\n  repository_id: {{present: true}}\ncredentials:\n  db:\n    kv: {{mount: secret, path: env{e}/db}}\n    ttl: 10m\n  cfg:\n    kv: {{mount: secret, path: env{e}/cfg}}\n    ttl: 10m\nrules:\n  - name: no-self-hosted\n    effect: deny\n    issuer: github\n    claims: {{runner_environment: self-hosted}}\n"
            );
            for r in 0..RULES - 5 {
                s.push_str(&format!(
                    "  - name: deploy-{r}\n    issuer: github\n    claims:\n      repository_owner_id: \"10001\"\n      repository_id: \"{id}\"\n      repository: acme/app-{r}\n      ref: refs/heads/main\n      event_name: [push, workflow_dispatch]\n      environment: env{e}\n      workflow_ref: {{glob: \"acme/app-{r}/.github/workflows/*@refs/heads/main\"}}\n    grant: [db]\n    ttl: 5m\n",
                    id = 100_000 + r
                ));
            }
            for r in 0..4 {
                s.push_str(&format!(
                    "  - name: gitlab-{r}\n    issuer: gitlab\n    claims:\n      namespace_id: \"77\"\n      project_id: \"{r}\"\n      repository_id: {{present: true}}\n      ref_protected: \"true\"\n      ref: {{regex: \"main|release/[0-9]+\"}}\n    grant: [cfg]\n"
                ));
            }
            (format!("env{e}.yaml"), s)
        })
        .collect()
}

fn issuers() -> Vec<PolicyIssuer> {
    vec![
        PolicyIssuer::from_url("github", "https://token.actions.githubusercontent.com"),
        PolicyIssuer::from_url("gitlab", "https://gitlab.com"),
    ]
}

fn claims(e: usize, r: usize) -> Map<String, Value> {
    match json!({
        "iss": "https://token.actions.githubusercontent.com",
        "sub": format!("repo:acme/app-{r}:environment:env{e}"),
        "repository": format!("acme/app-{r}"),
        "repository_id": format!("{}", 100_000 + r),
        "repository_owner": "acme",
        "repository_owner_id": "10001",
        "ref": "refs/heads/main",
        "event_name": "push",
        "environment": format!("env{e}"),
        "workflow_ref": format!("acme/app-{r}/.github/workflows/deploy.yml@refs/heads/main"),
        "runner_environment": "github-hosted",
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn bench(c: &mut Criterion) {
    let sources = sources();
    let issuers = issuers();
    c.bench_function("compile 10,000 rules (100 files)", |b| {
        b.iter(|| {
            PolicySet::from_sources(black_box(&sources), &issuers)
                .map(|s| s.environments().count())
                .ok()
        })
    });
    let set = match PolicySet::from_sources(&sources, &issuers) {
        Ok(set) => set,
        Err(e) => panic!("{e}"),
    };
    let allowed = claims(57, 80);
    let env = "env57";
    let req = Request {
        environment: env,
        issuer: "github",
        claims: &allowed,
        credentials: &[],
    };
    assert!(matches!(set.decide(&req), Decision::Allow(_)));
    c.bench_function("decide: allow (1 of 100 rules matches)", |b| {
        b.iter(|| set.decide(black_box(&req)))
    });
    let wanted = vec!["db".to_owned()];
    let req_named = Request {
        credentials: &wanted,
        ..req
    };
    c.bench_function("decide: allow, credential named", |b| {
        b.iter(|| set.decide(black_box(&req_named)))
    });
    let mut feature = allowed.clone();
    feature.insert("ref".into(), json!("refs/heads/feature"));
    let denied = Request {
        claims: &feature,
        ..req
    };
    assert!(matches!(set.decide(&denied), Decision::Deny(_)));
    c.bench_function(
        "decide: deny (no rule matches; every failure reported)",
        |b| b.iter(|| set.decide(black_box(&denied))),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
