//! What the API tells a caller who proved nothing, or little: `/readyz`
//! is status only; an environment can hide which claims failed; an
//! environment without a policy is said to have none, naming no other.

use jobkey::Shape;
use serde_json::{Map, Value, json};

use crate::broker_support::eventually;
use crate::support::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_does_not_echo_a_refused_policy() {
    let policies = crate::support::copied_policies();
    let stack = Stack::start_on(policies.path()).await;
    // Serving (so the policy directory is watched).
    let (status, ready) = stack.get_json("/readyz").await;
    assert_eq!(
        (status, &ready["policies"]["status"]),
        (200, &json!("current"))
    );
    // A reload refused for a regex that names an internal repository.
    let file = policies.path().join("production.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let secretish = "acme-internal/payroll-ledger-(eu|us";
    let broken = original.replace(
        "ref: refs/heads/main",
        &format!("ref: {{regex: \"{secretish}\"}}"),
    );
    assert_ne!(broken, original);
    std::fs::write(&file, &broken).unwrap();
    let url = stack.url.clone();
    eventually("/readyz showing the refused reload", 10, || {
        let url = url.clone();
        async move {
            let r = reqwest::get(format!("{url}/readyz")).await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            let ready: Value = serde_json::from_str(&text).unwrap();
            if status == 200 && ready["policies"]["status"] == "stale" {
                Ok(())
            } else {
                Err(format!("{status} {text}"))
            }
        }
    })
    .await;
    let text = reqwest::get(format!("{}/readyz", stack.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for leak in ["payroll", "acme-internal", "production.yaml", "regex"] {
        assert!(!text.contains(leak), "{leak} in /readyz: {text}");
    }
    let ready: Value = serde_json::from_str(&text).unwrap();
    assert!(ready["policies"]["refused_at"].is_string(), "{ready}");
    assert!(ready["policies"].get("error").is_none(), "{ready}");
    // The operator's tools say what is wrong.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(["check", "--config"])
        .arg(&stack.config_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("production.yaml") && err.contains("payroll"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_failed_claims_false_gives_one_answer_whatever_failed() {
    let policies = crate::support::copied_policies();
    let file = policies.path().join("production.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("report_failed_claims: false\n{text}")).unwrap();
    let stack = Stack::start_on(policies.path()).await;
    let gh = |o: Value| {
        stack
            .github
            .mint(Shape::Github, "jobkey", &crate::support::overrides(o))
    };
    // (what differs from the admitted deploy, credentials asked for, the
    // denial it would otherwise be)
    let cases = [
        (
            json!({"ref": "refs/heads/feature"}),
            json!([]),
            "no_rule_matched",
        ),
        (
            json!({"environment": "prod-guess"}),
            json!([]),
            "no_rule_matched",
        ),
        (json!({"repository_id": "1"}), json!([]), "no_rule_matched"),
        (
            json!({"runner_environment": "self-hosted"}),
            json!([]),
            "denied_by_rule",
        ),
        (
            json!({}),
            json!(["no-such-credential"]),
            "unknown_credential",
        ),
    ];
    let mut answers = Vec::new();
    for (i, (claims, credentials, _)) in cases.iter().enumerate() {
        // Each its own token (a repeated refusal of one token is counted,
        // not written again).
        let mut claims = claims.clone();
        claims["jti"] = json!(format!("guess-{i}"));
        let (status, resp) = stack
            .exchange(
                &gh(claims.clone()),
                json!({"environment": "production", "credentials": credentials}),
            )
            .await;
        assert_eq!(status, 403, "{claims}: {resp}");
        assert!(resp.get("failed_claims").is_none(), "{claims}: {resp}");
        let mut resp = resp.as_object().unwrap().clone();
        let id = resp.remove("request_id").unwrap();
        // The message names the request id (for `jobkey audit show`);
        // apart from it, every answer is the same.
        let message = resp["message"]
            .as_str()
            .unwrap()
            .replace(id.as_str().unwrap(), "ID");
        resp.insert("message".into(), Value::String(message));
        answers.push(Value::Object(resp));
    }
    for a in &answers {
        assert_eq!(a, &answers[0], "the same answer whatever failed");
    }
    assert_eq!(answers[0]["error"], "policy_denied");
    assert_eq!(
        answers[0]["message"],
        "denied by the `production` policy; for why, ask an operator to run `jobkey audit show ID`"
    );
    // The audit log keeps what failed.
    let lines = stack.audit_lines();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"]["kind"].as_str().unwrap())
        .collect();
    let wanted: Vec<&str> = cases.iter().map(|c| c.2).collect();
    assert_eq!(kinds, wanted);
    assert!(
        lines[0]["reason"]["failures"]
            .to_string()
            .contains("refs/heads/main"),
        "{}",
        lines[0]
    );
    // Another environment still reports its failed claims.
    let (status, resp) = stack
        .exchange(&gh(json!({})), json!({"environment": "staging"}))
        .await;
    assert_eq!(status, 403);
    assert!(resp["failed_claims"].is_array(), "{resp}");
    // And the deploy is still admitted.
    let (status, resp) = stack
        .exchange(&gh(json!({})), json!({"environment": "production"}))
        .await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_environment_is_said_to_have_no_policy() {
    let stack = Stack::start().await;
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let (status, resp) = stack.exchange_status(&gh, "produciton").await;
    assert_eq!(
        (status, resp["error"].as_str()),
        (403, Some("unknown_environment"))
    );
    let message = resp["message"].as_str().unwrap();
    assert!(
        message.contains("no policy for the environment `produciton`"),
        "{message}"
    );
    assert!(
        !message.contains("denied by"),
        "no policy denied it: {message}"
    );
    for other in ["production", "staging"] {
        assert!(
            !message.replace("produciton", "").contains(other),
            "no other environment is named: {message}"
        );
    }
    assert!(resp.get("failed_claims").is_none(), "{resp}");
    // A long name is not echoed back whole.
    let long = "x".repeat(5000);
    let (status, resp) = stack.exchange_status(&gh, &long).await;
    assert_eq!(status, 403);
    assert!(resp["message"].as_str().unwrap().len() < 400, "{resp}");
}
