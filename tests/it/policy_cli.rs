//! `jobkey policy ...` end to end, through the real binary: fixtures pass
//! and fail readably, lint, the shipped schema, explain on signed GitHub-
//! and GitLab-shaped tokens verified offline, who-can.

use std::path::{Path, PathBuf};

use crate::support::{example_config, jobkey_cli, policy_test, rsa_key};
use jobkey::Shape;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_fixtures_pass() {
    let (code, out, err) = jobkey_cli(&["policy", "test", "--config", &example_config()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("PASS  a fork with a lookalike name is refused"),
        "{out}"
    );
    assert!(
        out.contains("PASS  an unprotected ref named main is refused"),
        "{out}"
    );
    assert!(out.contains(" 0 failed"), "{out}");
}

#[test]
fn a_wrong_expectation_fails_with_a_readable_report() {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("wrong.yaml"),
        r#"
cases:
  - name: feature branch (wrongly expected to be allowed)
    environment: production
    issuer: github
    claims: {repository_id: "892347", repository_owner_id: "10001", repository: acme/api,
             ref: refs/heads/feature, event_name: push, environment: production,
             runner_environment: github-hosted}
    expect: allow
    rule: github-api-deploy
  - name: the real deploy
    environment: production
    issuer: github
    claims: {repository_id: "892347", repository_owner_id: "10001", repository: acme/api,
             ref: refs/heads/main, event_name: push, environment: production,
             runner_environment: github-hosted}
    expect: allow
"#,
    )
    .expect("write");
    let (code, out, err) = policy_test(dir.path());
    assert_eq!(code, 1, "{out}{err}");
    let want = [
        "  FAIL  feature branch (wrongly expected to be allowed)\n".to_owned(),
        "        expected: allow (every grant by rule `github-api-deploy`)\n".to_owned(),
        "        got:      deny (no_rule_matched)\n".to_owned(),
        "        why:\n".to_owned(),
        format!(
            "          rule `no-self-hosted-runners` (deny, line {}): claim `runner_environment`: expected missing or \"self-hosted\", got \"github-hosted\"\n",
            rule_line("no-self-hosted-runners")
        ),
        format!(
            "          rule `github-api-deploy` (allow, line {}): claim `ref`: expected \"refs/heads/main\", got \"refs/heads/feature\"\n",
            rule_line("github-api-deploy")
        ),
        "  PASS  the real deploy\n".to_owned(),
        "1 passed, 1 failed\n".to_owned(),
    ];
    for line in &want {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(err.contains("1 policy test(s) failed"), "{err}");

    // A malformed fixture is an error naming the file, not a silent pass.
    std::fs::write(
        dir.path().join("wrong.yaml"),
        "cases:\n  - name: x\n    expekt: allow\n",
    )
    .expect("write");
    let (code, _, err) = policy_test(dir.path());
    assert_eq!(code, 1);
    let at = format!("{}:3:5: ", dir.path().join("wrong.yaml").display());
    assert!(
        err.starts_with(&format!("error: {at}unknown field `expekt`")),
        "{err}"
    );
    assert_eq!(err.matches("error:").count(), 1, "{err}");

    // A case naming an issuer that is not configured is an error, not a
    // pass of every `expect: deny`.
    std::fs::write(
        dir.path().join("wrong.yaml"),
        "cases:\n  - name: x\n    environment: production\n    issuer: githb\n    claims: {repository_id: \"892347\"}\n    expect: deny\n",
    )
    .expect("write");
    let (code, out, err) = policy_test(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("PASS"), "{out}");
    assert!(
        err.contains(":4:13: case `x`: issuer `githb` is not configured (configured: buildkite, github, gitlab); did you mean `github`?"),
        "{err}"
    );
}

#[test]
fn lint_is_clean_on_shipped_policies_and_fails_with_deny_warnings() {
    let (code, out, err) = jobkey_cli(&[
        "policy",
        "lint",
        "--policies",
        "policies",
        "--issuer",
        "github=https://token.actions.githubusercontent.com",
        "--issuer",
        "gitlab=https://gitlab.com",
        "--issuer",
        "buildkite=https://agent.buildkite.com",
        "--deny-warnings",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 warning(s)"), "{out}");

    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(
        dir.path().join("production.yaml"),
        "credentials:\n  db:\n    kv: {mount: s, path: p}\n    ttl: 10m\nrules:\n  - name: wide\n    issuer: github\n    claims: {sub: {glob: \"repo:acme/*\"}}\n    grant: [db]\n",
    )
    .expect("write");
    let d = dir.path().display().to_string();
    // `jobkey policy lint` of the temp directory, with GitHub Enterprise
    // Server (single-tenant: the rule compiles, lint warns), with `extra`.
    let lint = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "lint",
            "--policies",
            &d,
            "--issuer",
            "github=github:https://ghe.example.com/_services/token",
        ];
        args.extend_from_slice(extra);
        jobkey_cli(&args)
    };
    let (code, out, _) = lint(&[]);
    assert_eq!(code, 0, "warnings alone do not fail: {out}");
    assert!(
        out.contains(
            "production.yaml:6:11: warning[JK003 wildcard-crosses-repositories] rule `wide`"
        ),
        "{out}"
    );
    assert!(out.contains("warning[JK006 self-hosted-runners]"), "{out}");
    let (code, _, err) = lint(&["--deny-warnings"]);
    assert_eq!(code, 1);
    assert!(err.contains("2 warning(s) and --deny-warnings"), "{err}");
    let (code, out, _) = lint(&["--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    let codes: Vec<&str> = v["warnings"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|w| w["code"].as_str())
        .collect();
    assert_eq!(codes, vec!["JK003", "JK006"]);

    // On github.com (shared by every repository owner) the same rule does
    // not compile: it names the rule, the issuer and the ids to bind.
    let (code, _, err) = jobkey_cli(&[
        "policy",
        "lint",
        "--policies",
        &d,
        "--issuer",
        "github=https://token.actions.githubusercontent.com",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("production.yaml:7:13: rule `wide`: issuer `github` (GitHub Actions at https://token.actions.githubusercontent.com) signs tokens for every repository owner on it")
            && err.contains("add `repository_owner_id: \"<id>\"` and `repository_id: \"<id>\"`"),
        "{err}"
    );

    // A compile error is a failure with file:line:column.
    std::fs::write(dir.path().join("production.yaml"), "credentials:\n  db:\n    kv: {mount: s, path: p}\n    ttl: 10m\nrules:\n  - name: r\n    issuer: github\n    claims: {ref: {regex: \"(\"}}\n    grant: [db]\n").expect("write");
    let (code, _, err) = lint(&[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("production.yaml:8:19: rule `r`: claim `ref`: invalid regex"),
        "{err}"
    );
}

/// Without --config, `explain --claims` finds the --issuer whose URL is
/// the claims' `iss`; an unknown `iss` is named plainly. A stand-in URL
/// named as Buildkite's gets the shared issuer's tenant check.
#[test]
fn issuer_flags_carry_urls_and_providers() {
    let dir = tempfile::tempdir().expect("tmp");
    let github_url = "https://token.actions.githubusercontent.com";
    let issuers = [
        "--issuer",
        "github=https://token.actions.githubusercontent.com",
        "--issuer",
        "gitlab=https://gitlab.com",
        "--issuer",
        "buildkite=buildkite:http://127.0.0.1:8403",
    ];
    let explain = |iss: &str| {
        let claims = dir.path().join("claims.json");
        std::fs::write(
            &claims,
            Value::Object(Shape::Github.claims(iss, "jobkey", 1_764_279_612)).to_string(),
        )
        .expect("claims");
        let claims = claims.display().to_string();
        let mut args = vec!["policy", "explain", "--policies", "policies"];
        args.extend(issuers);
        args.extend(["--env", "production", "--claims", &claims]);
        jobkey_cli(&args)
    };
    let (code, out, err) = explain(github_url);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("issuer `github`"), "{out}");
    assert!(
        out.contains("decision: allow (deploy-db by github-api-deploy)"),
        "{out}"
    );
    let (code, _, err) = explain("https://evil.example");
    assert_eq!(code, 2, "no decision: {err}");
    assert!(
        err.contains("no configured issuer has `iss` \"https://evil.example\"; give --as-issuer NAME (one of: github, gitlab, buildkite)"),
        "{err}"
    );
    assert!(!err.contains("Some("), "{err}");

    // The staging policy binds the organisation's and the pipeline's ids:
    // it compiles on the stand-in. Without them it is refused, as on the
    // real issuer.
    let mut args = vec!["policy", "lint", "--policies", "policies"];
    args.extend(issuers);
    let (code, out, err) = jobkey_cli(&args);
    assert_eq!(code, 0, "{out}{err}");
    let staging = std::fs::read_to_string(root().join("policies/staging.yaml")).expect("staging");
    std::fs::write(
        dir.path().join("staging.yaml"),
        staging.replace(
            "      organization_id: 0189a3c2-7d51-4e3b-9f0a-5b6c7d8e9f01\n",
            "",
        ),
    )
    .expect("write");
    let d = dir.path().display().to_string();
    let mut args = vec!["policy", "lint", "--policies", &d];
    args.extend(issuers);
    let (code, _, err) = jobkey_cli(&args);
    assert_eq!(code, 1);
    assert!(
        err.contains("rule `buildkite-api-deploy`: issuer `buildkite` (Buildkite at http://127.0.0.1:8403) signs tokens for every organisation on it")
            && err.contains("add `organization_id: \"<id>\"`"),
        "{err}"
    );
}

/// The shipped schema is the generated one. To regenerate:
/// `cargo run -- policy schema > schema/policy.schema.json`.
#[test]
fn shipped_schema_is_current() {
    let (code, out, _) = jobkey_cli(&["policy", "schema"]);
    assert_eq!(code, 0);
    let shipped =
        std::fs::read_to_string(root().join("schema/policy.schema.json")).expect("shipped");
    assert!(
        shipped == out,
        "schema/policy.schema.json is stale; regenerate it with `cargo run -- policy schema > schema/policy.schema.json`"
    );
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["additionalProperties"], json!(false));
    for field in ["max_ttl", "require", "credentials", "rules"] {
        assert!(v["properties"].get(field).is_some(), "{field}");
    }
}

/// A config whose issuers are the real providers' URLs; keys come from --jwks.
fn provider_config(dir: &Path) -> String {
    let path = dir.join("jobkey.toml");
    std::fs::write(
        &path,
        format!(
            r#"
listen = "127.0.0.1:0"
audiences = ["jobkey"]
policy_dir = "{}"
[audit]
path = "audit.jsonl"
[vault]
address = "http://127.0.0.1:8200"
[vault.auth]
method = "token"
token_env = "VAULT_TOKEN"
[issuers.github]
preset = "github"
[issuers.gitlab]
preset = "gitlab"
[issuers.buildkite]
issuer = "https://agent.buildkite.com"
"#,
            root().join("policies").display()
        ),
    )
    .expect("write");
    path.display().to_string()
}

#[test]
fn explain_verifies_real_shaped_tokens_offline() {
    let dir = tempfile::tempdir().expect("tmp");
    let config = provider_config(dir.path());
    let gh_key = rsa_key("issuer-a", "gh-1");
    let gl_key = rsa_key("issuer-b", "gl-1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(
        &jwks,
        json!({"keys": [gh_key.public_jwk(), gl_key.public_jwk()]}).to_string(),
    )
    .expect("jwks");
    let at = 1_764_279_612u64; // 2025-11-27T21:40:12Z
    let gh_claims = Shape::Github.claims(
        "https://token.actions.githubusercontent.com",
        "jobkey",
        at - 60,
    );
    // Writes a token to a file and explains it for `env` at `at`.
    let explain = |name: &str, token: String, env: &str, at: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, token).expect("token");
        jobkey_cli(&[
            "policy",
            "explain",
            "--config",
            &config,
            "--env",
            env,
            "--token",
            &file.display().to_string(),
            "--jwks",
            &jwks.display().to_string(),
            "--at",
            at,
        ])
    };
    let gh = gh_key.mint(&Value::Object(gh_claims.clone()));

    let (code, out, err) = explain(
        "github.jwt",
        gh.clone(),
        "production",
        "2025-11-27T21:40:12Z",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("decision: allow (deploy-db by github-api-deploy)"),
        "{out}"
    );
    assert!(out.contains("matching rule: github-api-deploy"), "{out}");
    let want = format!(
        "rule `no-self-hosted-runners` (deny, line {}): claim `runner_environment`: expected missing or \"self-hosted\", got \"github-hosted\"",
        rule_line("no-self-hosted-runners")
    );
    assert!(out.contains(&want), "{out}");

    // The same token much later: expired, refused before any decision.
    let (code, _, err) = explain("github.jwt", gh, "production", &(at + 3600).to_string());
    assert_eq!(code, 2, "no decision: {err}");
    assert!(err.contains("token_expired"), "{err}");

    // A token signed by a key not in the JWKS is refused.
    let forged = rsa_key("rogue", "gh-1").mint(&Value::Object(gh_claims));
    let (code, _, err) = explain("forged.jwt", forged, "production", &at.to_string());
    assert_eq!(code, 2, "no decision: {err}");
    assert!(err.contains("bad_signature"), "{err}");

    // GitLab: an unprotected ref; the rule and the reason are shown.
    let mut gl_claims = Shape::Gitlab.claims("https://gitlab.com", "jobkey", at - 60);
    gl_claims.insert("ref_protected".into(), json!("false"));
    let gl = gl_key.mint(&Value::Object(gl_claims));
    let (code, out, err) = explain("gitlab.jwt", gl, "staging", &at.to_string());
    assert_eq!(code, 1, "denied: {out}{err}");
    assert!(out.contains("issuer `gitlab`"), "{out}");
    assert!(out.contains("decision: deny (no_rule_matched)"), "{out}");
    assert!(out.contains("matching rule: none"), "{out}");
    let want = format!(
        "rule `gitlab-api-deploy` (allow, line {}): claim `ref_protected`: expected \"true\", got \"false\"",
        rule_line_in("staging", "gitlab-api-deploy")
    );
    assert!(out.contains(&want), "{out}");

    // --claims: no verification; the issuer comes from `iss`.
    let claims = dir.path().join("claims.json");
    std::fs::write(
        &claims,
        Value::Object(Shape::Gitlab.claims("https://gitlab.com", "jobkey", at)).to_string(),
    )
    .expect("claims");
    let (code, out, err) = jobkey_cli(&[
        "policy",
        "explain",
        "--config",
        &config,
        "--env",
        "staging",
        "--claims",
        &claims.display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["matching_rules"], json!(["gitlab-api-deploy"]));
    assert_eq!(v["rules"][0]["applies"], json!(true));
}

/// Regression: `policy explain` exited 0 on a deny, so a script could not
/// tell. 0 allow, 1 deny, 2 no decision (bad input); stdout has the
/// explanation whatever the decision.
#[test]
fn explain_exits_by_its_decision() {
    let dir = tempfile::tempdir().expect("tmp");
    let claims = |name: &str, overrides: Value| {
        let mut c = Shape::Github.claims(
            "https://token.actions.githubusercontent.com",
            "jobkey",
            1_764_279_612,
        );
        jobkey::apply_claim_overrides(&mut c, overrides.as_object().expect("object"));
        let path = dir.path().join(name);
        std::fs::write(&path, Value::Object(c).to_string()).expect("claims");
        path.display().to_string()
    };
    let allowed = claims("allowed.json", json!({}));
    let denied = claims("denied.json", json!({"ref": "refs/heads/feature"}));
    let missing = dir.path().join("nope.json").display().to_string();
    // (claims file, environment, extra arguments, exit status, on stdout or stderr)
    let table: &[(&str, &str, &[&str], i32, &str)] = &[
        (&allowed, "production", &[], 0, "decision: allow"),
        (
            &denied,
            "production",
            &[],
            1,
            "decision: deny (no_rule_matched)",
        ),
        (
            &allowed,
            "nowhere",
            &[],
            1,
            "decision: deny (unknown_environment)",
        ),
        (
            &allowed,
            "production",
            &["--format", "json"],
            0,
            "\"decision\": \"allow",
        ),
        (
            &denied,
            "production",
            &["--format", "json"],
            1,
            "\"decision\": \"deny",
        ),
        (&missing, "production", &[], 2, "error: "),
        (&allowed, "production", &["--as-issuer"], 2, "error: "),
    ];
    for (file, env, extra, status, shown) in table {
        let mut args = vec![
            "policy",
            "explain",
            "--config",
            "examples/jobkey.toml",
            "--as-issuer",
            "github",
            "--env",
            env,
            "--claims",
            file,
        ];
        args.extend_from_slice(extra);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"));
        let out = cmd
            .args(&args)
            .current_dir(root())
            .env_remove("JOBKEY_CONFIG")
            .output()
            .expect("run jobkey");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(*status),
            "{args:?}\n{stdout}{stderr}"
        );
        assert!(
            stdout.contains(shown) || stderr.contains(shown),
            "{args:?}: {shown:?} not in\n{stdout}{stderr}"
        );
    }
}

#[test]
fn who_can_lists_the_identities_of_a_production_credential() {
    // `jobkey policy who-can` on the example config's production, with `extra`.
    let who_can = |extra: &[&str]| {
        let config = example_config();
        let mut args = vec![
            "policy",
            "who-can",
            "--config",
            &config,
            "--env",
            "production",
        ];
        args.extend_from_slice(extra);
        jobkey_cli(&args)
    };
    // The default layout fits an 80-column terminal (the table was 256
    // columns wide) and names the same identities.
    let (code, out, err) = who_can(&[]);
    assert_eq!(code, 0, "{out}{err}");
    for line in out.lines() {
        assert!(line.chars().count() <= 80, "{line}");
    }
    assert!(
        out.starts_with(
            "deploy-db (kv, ttl 10m)\n  rule github-api-deploy, issuer github, ttl 5m\n"
        ),
        "{out}"
    );
    for cell in [
        "    repository   repository_id = \"892347\"",
        "                 repository = \"acme/api\"",
        "    ref          ref = \"refs/heads/main\"",
        "    event        event_name is any of [\"push\", \"workflow_dispatch\"]",
        "    unless       no-self-hosted-runners: runner_environment is missing or\n                   \"self-hosted\"",
        "    workflow     job_workflow_ref =\n                   \"acme/api/.github/workflows/release.yml@refs/heads/main\"",
    ] {
        assert!(out.contains(cell), "missing {cell} in\n{out}");
    }

    // --wide: one table row per rule.
    let (code, out, err) = who_can(&["--credential", "deploy-db", "--wide"]);
    assert_eq!(code, 0, "{out}{err}");
    let header = out.lines().next().unwrap_or("");
    for col in [
        "CREDENTIAL",
        "RULE",
        "ISSUER",
        "REPOSITORY",
        "REF",
        "ENVIRONMENT",
        "WORKFLOW",
        "UNLESS DENIED BY",
    ] {
        assert!(header.contains(col), "{header}");
    }
    for cell in [
        "deploy-db",
        "github-api-deploy",
        "repository_id = \"892347\"",
        "repository = \"acme/api\"",
        "ref = \"refs/heads/main\"",
        "environment = \"production\"",
        "event_name is any of [\"push\", \"workflow_dispatch\"]",
        "no-self-hosted-runners: runner_environment is missing or \"self-hosted\"",
    ] {
        assert!(out.contains(cell), "missing {cell} in\n{out}");
    }

    let (code, out, _) = who_can(&["--format", "json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    let rule = &v["credentials"][0]["rules"][0];
    assert_eq!(v["credentials"][0]["credential"], json!("deploy-db"));
    assert_eq!(rule["rule"], json!("github-api-deploy"));
    assert_eq!(rule["issuer"], json!("github"));
    assert_eq!(rule["ttl"], json!("5m"));
    assert_eq!(
        rule["identity"]["repositories"],
        json!(["repository_id = \"892347\"", "repository = \"acme/api\""])
    );
    assert_eq!(
        rule["identity"]["refs"],
        json!(["ref = \"refs/heads/main\""])
    );

    let (code, _, err) = who_can(&["--credential", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no credential `nope`"), "{err}");
}

/// The line of `- name: RULE` in the shipped production policy (reports
/// name the line a rule starts on).
fn rule_line(rule: &str) -> usize {
    rule_line_in("production", rule)
}

/// The line of `- name: RULE` in the shipped policy of `env`.
fn rule_line_in(env: &str, rule: &str) -> usize {
    let text = std::fs::read_to_string(root().join(format!("policies/{env}.yaml"))).unwrap();
    1 + text
        .lines()
        .position(|l| l.trim() == format!("- name: {rule}"))
        .unwrap_or_else(|| panic!("no rule {rule} in policies/{env}.yaml"))
}
