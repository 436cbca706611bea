//! End to end: GitHub- and GitLab-shaped tokens get KV secrets from a real
//! OpenBao through the shipped policies; denials say which claims failed;
//! every decision is audited first.

use crate::support::{Options, Stack};
use jobkey::Shape;
use serde_json::{Map, Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_and_gitlab_jobs_get_their_secrets_and_others_are_denied() {
    let stack = Stack::start().await;

    // GitHub: production deploy of acme/api from main.
    let gh = stack.github_token(json!({}));
    let body = json!({"environment": "production", "credentials": ["deploy-db"]}).to_string();
    let (status, resp) = stack
        .exchange_raw(Some(format!("Bearer {gh}")), &body)
        .await;
    assert_eq!(status, 200, "{resp}");
    let cred = &resp["credentials"]["deploy-db"];
    assert_eq!(cred["values"]["username"], "deploy");
    assert_eq!(cred["values"]["password"], stack.db_password.as_str());
    assert_eq!(cred["kind"], "kv");
    let ttl = cred["ttl_seconds"].as_u64().unwrap();
    assert!(ttl > 0 && ttl <= 600, "ttl {ttl}");
    let mask: Vec<&str> = resp["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(mask.contains(&stack.db_password.as_str()), "{mask:?}");
    assert!(resp["request_id"].as_str().unwrap().len() >= 16);

    // GitLab: staging deploy, all that the rule grants.
    let gl = stack.gitlab_token();
    let (status, resp) = stack.exchange_status(&gl, "staging").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["credentials"]["app-config"]["values"]["api_key"],
        stack.app_key.as_str()
    );
    assert_eq!(
        resp["credentials"]["app-config"]["values"]["region"],
        "eu-west-1"
    );

    // The GitHub workflow on a feature branch: 403 naming the claim, not
    // the expected value.
    let feature = stack.github_token(json!({"ref": "refs/heads/feature/x"}));
    let (status, resp) = stack.exchange_status(&feature, "production").await;
    assert_eq!(status, 403, "{resp}");
    assert!(
        resp["failed_claims"]
            .as_array()
            .unwrap()
            .contains(&json!("ref")),
        "{resp}"
    );
    assert!(
        !resp.to_string().contains("refs/heads/main"),
        "the job is not told the expected value: {resp}"
    );

    // A GitHub token asking for the GitLab environment: denied because no
    // rule there is for its issuer, so no claim is named.
    let (status, resp) = stack.exchange_status(&gh, "staging").await;
    assert_eq!(
        (status, resp["error"].as_str(), &resp["failed_claims"]),
        (403, Some("no_rule_matched"), &json!([])),
        "{resp}"
    );
    assert_eq!(
        resp["message"],
        format!(
            "denied by the `staging` policy (no_rule_matched); for why, ask an operator to run `jobkey audit show {}`",
            resp["request_id"].as_str().unwrap()
        ),
        "{resp}"
    );

    // Unknown environment and credential.
    let (status, resp) = stack.exchange_status(&gh, "nowhere").await;
    assert_eq!(
        (status, resp["error"].as_str()),
        (403, Some("unknown_environment"))
    );
    let body = json!({"environment": "production", "credentials": ["root-ca"]}).to_string();
    let (status, resp) = stack
        .exchange_raw(Some(format!("Bearer {gh}")), &body)
        .await;
    assert_eq!(
        (status, resp["error"].as_str(), &resp["failed_claims"]),
        (403, Some("unknown_credential"), &json!([])),
        "{resp}"
    );
    assert_eq!(
        resp["message"],
        format!(
            "denied by the `production` policy (unknown_credential); for why, ask an operator to run `jobkey audit show {}`",
            resp["request_id"].as_str().unwrap()
        ),
        "{resp}"
    );

    // The audit log: one line per decision, chained, with who/what/why.
    let lines = stack.audit_lines();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let allow = &lines[0];
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["action"], "exchange");
    assert_eq!(allow["identity"]["issuer"], "github");
    assert_eq!(allow["identity"]["verified"], true);
    assert_eq!(allow["identity"]["repository"], "acme/api");
    assert_eq!(allow["identity"]["repository_id"], "892347");
    assert_eq!(allow["identity"]["run_id"], "9876543210");
    assert_eq!(allow["credentials"][0]["name"], "deploy-db");
    assert!(
        allow["credentials"][0]["rule"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert_eq!(lines[1]["identity"]["project_id"], "4242");
    let deny = &lines[2];
    assert_eq!(deny["decision"], "deny");
    assert_eq!(
        (&deny["stage"], &deny["code"]),
        (&json!("policy"), &json!("no_rule_matched"))
    );
    assert_eq!(deny["identity"]["ref"], "refs/heads/feature/x");
    let failures = deny["reason"]["failures"].as_array().unwrap();
    assert!(
        failures.iter().any(|f| f["failed"]["claim"] == "ref"
            && f["failed"]["expected"]
                .as_str()
                .unwrap()
                .contains("refs/heads/main")),
        "the audit line says which rule failed and why: {deny}"
    );
    // The wrong-issuer denial: every rule of the environment failed on the
    // issuer, before any claim was compared.
    let wrong_issuer = &lines[3]["reason"];
    let failures = wrong_issuer["failures"].as_array().unwrap();
    assert!(!failures.is_empty(), "{wrong_issuer}");
    for f in failures {
        assert_eq!(
            (&f["failed"]["kind"], &f["failed"]["actual"]),
            (&json!("issuer"), &json!("github")),
            "{wrong_issuer}"
        );
    }
    assert_eq!(lines[5]["reason"]["kind"], "unknown_credential");
    assert_eq!(lines[5]["reason"]["credential"], "root-ca");
    let report = jobkey::verify_file(&stack.audit_path).unwrap();
    assert_eq!(report.lines, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_400s() {
    let stack = Stack::start().await;
    let gh = stack.github_token(json!({}));
    let auth = Some(format!("Bearer {gh}"));
    let cases = [
        ("not json", "{oops", 400, "bad_request"),
        (
            "unknown field",
            r#"{"environment":"production","envirnoment":"x"}"#,
            400,
            "bad_request",
        ),
        (
            "missing environment",
            r#"{"credentials":["deploy-db"]}"#,
            400,
            "bad_request",
        ),
        (
            "empty environment",
            r#"{"environment":""}"#,
            400,
            "bad_request",
        ),
        (
            "wrong type",
            r#"{"environment":"production","credentials":"deploy-db"}"#,
            400,
            "bad_request",
        ),
    ];
    for (name, body, status, code) in cases {
        let (s, resp) = stack.exchange_raw(auth.clone(), body).await;
        assert_eq!(
            (s, resp["error"].as_str()),
            (status, Some(code)),
            "{name}: {resp}"
        );
        assert!(
            resp["message"].as_str().unwrap().contains("environment"),
            "{name}: says what to send: {resp}"
        );
    }
    let huge = format!(
        r#"{{"environment":"production","credentials":["{}"]}}"#,
        "x".repeat(200_000)
    );
    let (s, resp) = stack.exchange_raw(auth.clone(), &huge).await;
    assert_eq!(
        (s, resp["error"].as_str()),
        (413, Some("body_too_large")),
        "{resp}"
    );
    // Nothing was decided for these, so nothing was audited.
    assert!(stack.audit_lines().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down_is_503_with_retry_after_and_nothing_issued() {
    let mut stack = Stack::start().await;
    let gh = stack.github_token(json!({}));
    stack.bao.stop();
    let (status, resp) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["error"], "vault_unavailable");
    assert!(resp.get("credentials").is_none());
    let lines = stack.audit_lines();
    assert_eq!(lines.last().unwrap()["decision"], "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_audit_log_means_no_credential() {
    let stack = Stack::start_with(Options {
        audit_path: Some("/dev/full".into()),
        ..Options::default()
    })
    .await;
    let gh = stack.github_token(json!({}));
    let (status, resp) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 503, "{resp}");
    assert_eq!(resp["error"], "audit_unavailable");
    assert!(
        !resp.to_string().contains(&stack.db_password),
        "no secret in the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_health() {
    let stack = Stack::start().await;
    let c = reqwest::Client::new();
    let r = c
        .get(format!("{}/healthz", stack.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let r = c.get(format!("{}/readyz", stack.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("retry-after").is_none());

    // Unknown routes and wrong methods get the same JSON error body.
    let cases = [
        ("GET", "/v1/exchange", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
        ("GET", "/v1/secrets", 404, "not_found"),
        ("POST", "/", 404, "not_found"),
    ];
    for (method, path, status, code) in cases {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", stack.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{method} {path}");
        assert!(body["request_id"].is_string());
    }
}

/// Runs `jobkey audit find --config CONFIG` with `value` on stdin.
fn audit_find(config: &std::path::Path, value: &str, json: bool) -> (bool, String, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"));
    cmd.args(["audit", "find", "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(value.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_maps_a_leaked_value_back_to_the_job() {
    let stack = Stack::start().await;
    let gh = stack.github_token(json!({}));
    let (status, resp) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 200, "{resp}");
    let rid = resp["request_id"].as_str().unwrap().to_owned();
    let gl = stack.gitlab_token();
    assert_eq!(stack.exchange_status(&gl, "staging").await.0, 200);

    // The audit line carries a keyed fingerprint per field, never the value.
    let line = &stack.audit_lines()[0];
    let fp = line["credentials"][0]["fingerprints"]["password"]
        .as_str()
        .unwrap();
    assert!(fp.starts_with("hmac-sha256:"), "{line}");
    assert!(!line.to_string().contains(&stack.db_password));

    // The value as found in a build log (with a trailing newline).
    let leaked = format!("{}\n", stack.db_password);
    let (ok, out, err) = audit_find(&stack.config_path, &leaked, false);
    assert!(ok, "{err}");
    assert!(
        out.contains(&rid) && out.contains("deploy-db.password") && out.contains("acme/api"),
        "{out}"
    );
    assert!(out.contains("run 9876543210"), "names the run: {out}");
    assert_eq!(
        out.lines().count(),
        1,
        "only the exchange that issued it: {out}"
    );
    let (ok, out, _) = audit_find(&stack.config_path, &stack.app_key, true);
    assert!(ok);
    let found: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(found[0]["credential"], "app-config");
    assert_eq!(found[0]["identity"]["project_id"], "4242");
    let (ok, out, _) = audit_find(&stack.config_path, "a-value-jobkey-never-issued", false);
    assert!(!ok, "no match is not success (exit status 1)");
    assert!(out.contains("no exchange issued this value"), "{out}");
    let (ok, _, err) = audit_find(&stack.config_path, "  \n", false);
    assert!(!ok && err.contains("stdin"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_by_handle_is_audited_with_the_exchange_owner() {
    let stack = Stack::start_revocable().await;
    let gh = stack.github_token(json!({}));
    let (status, resp) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 200, "{resp}");
    let handle = resp["revocation"]["handle"].as_str().unwrap();
    let rid = resp["request_id"].as_str().unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/revoke", stack.url))
        .bearer_auth(handle)
        .json(&json!({"request_id": rid}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let lines = stack.audit_lines();
    let last = lines.last().unwrap();
    assert_eq!(last["action"], "revoke");
    assert_eq!(last["auth"], "handle");
    assert_eq!(last["exchange"], rid);
    assert_eq!(last["exchange_owner"]["issuer"], "github");
    assert_eq!(
        last["exchange_owner"]["sub"],
        "repo:acme/api:environment:production"
    );
    assert_eq!(last["exchange_owner"]["run"], "9876543210");
    assert!(
        !last.to_string().contains(handle),
        "the handle is never audited"
    );

    // Bad bodies get the same clear errors as on /v1/exchange.
    let c = reqwest::Client::new();
    for (body, status, code) in [
        ("{oops".to_owned(), 400, "bad_request"),
        (
            r#"{"request_id": "x", "extra": 1}"#.to_owned(),
            400,
            "bad_request",
        ),
        (
            format!(r#"{{"request_id": "{}"}}"#, "x".repeat(200_000)),
            413,
            "body_too_large",
        ),
    ] {
        let r = c
            .post(format!("{}/v1/revoke", stack.url))
            .bearer_auth(handle)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], code);
        assert!(
            v["message"].as_str().unwrap().contains("request_id") || status == 413,
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buildkite_job_is_audited_with_its_organisation_and_pipeline() {
    let stack = Stack::start().await;
    let bk = stack
        .buildkite
        .mint(Shape::Buildkite, "jobkey", &Map::new());
    let (status, resp) = stack.exchange_status(&bk, "staging").await;
    assert_eq!(status, 200, "{resp}");
    let identity = &stack.audit_lines()[0]["identity"];
    assert_eq!(identity["issuer"], "buildkite");
    assert_eq!(identity["organization_slug"], "acme");
    assert_eq!(
        identity["organization_id"],
        "0189a3c2-7d51-4e3b-9f0a-5b6c7d8e9f01"
    );
    assert_eq!(identity["pipeline_slug"], "api");
    assert_eq!(identity["build_number"], 1234);
    assert_eq!(identity["step_key"], "deploy");
}

/// Regression: on Buildkite "the same run" fell back to `pipeline_id`, so
/// build 1235 of a pipeline could revoke build 1234's exchange. The run is
/// one build (organisation, pipeline, build number).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkite_build_cannot_revoke_another_builds_exchange() {
    let stack = Stack::start_revocable().await;
    let build = |n: u64| {
        stack.buildkite.mint(
            Shape::Buildkite,
            "jobkey",
            json!({"build_number": n}).as_object().unwrap(),
        )
    };
    let (status, resp) = stack
        .exchange(
            &build(1234),
            json!({"environment": "staging", "credentials": ["app-config", "app-config-wrapped"]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let rid = resp["request_id"].as_str().unwrap();

    // The next build of the same pipeline is not the owner.
    let (status, r) = stack.revoke(&build(1235), rid).await;
    assert_eq!(
        (status, r["error"].as_str()),
        (404, Some("unknown_exchange")),
        "{r}"
    );
    // The build itself is.
    let (status, r) = stack.revoke(&build(1234), rid).await;
    assert_eq!((status, r["revoked"].as_u64()), (200, Some(1)), "{r}");
    let lines = stack.audit_lines();
    let revokes: Vec<&Value> = lines.iter().filter(|l| l["action"] == "revoke").collect();
    assert_eq!(revokes.len(), 2, "{revokes:?}");
    assert_eq!(revokes[0]["decision"], "deny", "{}", revokes[0]);
    assert_eq!(revokes[1]["decision"], "allow", "{}", revokes[1]);
}

/// The mask list of an exchange response.
fn mask_of(resp: &Value) -> Vec<&str> {
    resp["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// A KV read issues nothing revocable: the exchange gets no revocation
/// handle and jobkey keeps no record of it, so the job's own ID token finds
/// nothing to revoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_only_exchange_has_no_revocation_handle_and_no_record() {
    let stack = Stack::start().await;
    let gh = stack.github_token(json!({}));
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, resp) = stack.exchange_status(&gh, "production").await;
        assert_eq!(status, 200, "{resp}");
        assert_eq!(resp["credentials"]["deploy-db"]["kind"], "kv", "{resp}");
        assert!(resp.get("revocation").is_none(), "{resp}");
        seen.push(resp);
    }
    // The mask holds the secret's hints only: a handle is random, so two
    // exchanges of the same secret would differ by it.
    assert!(mask_of(&seen[0]).contains(&stack.db_password.as_str()));
    assert_eq!(mask_of(&seen[0]), mask_of(&seen[1]));

    // The job's own ID token could revoke a recorded exchange of its run;
    // there is none.
    let rid = seen[0]["request_id"].as_str().unwrap();
    let (status, body) = stack.revoke(&gh, rid).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_exchange")),
        "{body}"
    );
    let lines = stack.audit_lines();
    let exchange = lines.iter().find(|l| l["request_id"] == rid).unwrap();
    assert_eq!(
        (&exchange["decision"], &exchange["revocable"]),
        (&json!("allow"), &json!(0)),
        "{exchange}"
    );
}

/// An exchange that issues something revocable (here a wrapping token)
/// still gets a handle, masked, which revokes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocable_exchange_gets_a_masked_handle() {
    let stack = Stack::start_revocable().await;
    let gh = stack.github_token(json!({}));
    let (status, resp) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["credentials"]["deploy-db-wrapped"]["wrapped"], true);
    let handle = resp["revocation"]["handle"].as_str().unwrap();
    assert!(resp["revocation"]["expires_at"].is_string(), "{resp}");
    assert!(mask_of(&resp).contains(&handle), "the handle is masked");
    let rid = resp["request_id"].as_str().unwrap();
    let lines = stack.audit_lines();
    assert_eq!(lines[0]["revocable"], 1, "{}", lines[0]);
    let (status, body) = stack.revoke(handle, rid).await;
    assert_eq!((status, body["revoked"].as_u64()), (200, Some(1)), "{body}");
}
