//! The auditor's tools on a real log: a scripted run of allowed, denied
//! and revoked exchanges on the test stack, then `jobkey audit query`,
//! `audit show`, `audit export --format ocsf`, `policy replay`, and the
//! review page loaded in headless Chromium.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{Stack, jobkey_cli};

/// What the scripted run produced.
struct Run {
    allowed: String,
    denied: String,
    revoke: String,
}

/// Two allowed exchanges (one revoked), a policy denial, an unknown
/// environment.
async fn scripted_run(stack: &Stack) -> Run {
    let gh = stack.github_token(json!({}));
    let (status, first) = stack
        .exchange(&gh, json!({"environment": "production"}))
        .await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = stack
        .exchange(&stack.gitlab_token(), json!({"environment": "staging"}))
        .await;
    assert_eq!(status, 200, "{second}");
    let dev = stack.github_token(json!({"ref": "refs/heads/dev"}));
    let (status, denied) = stack.exchange_status(&dev, "production").await;
    assert_eq!(status, 403, "{denied}");
    let (status, _) = stack.exchange_status(&gh, "nowhere").await;
    assert_eq!(status, 403);
    let allowed = first["request_id"].as_str().unwrap().to_owned();
    let (status, revoked) = stack
        .revoke(first["revocation"]["handle"].as_str().unwrap(), &allowed)
        .await;
    assert_eq!(status, 200, "{revoked}");
    let revoke = stack
        .audit_lines()
        .iter()
        .rev()
        .find(|l| l["action"] == "revoke")
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .unwrap();
    // The job's denial names its request id and the command that explains it.
    let denied_id = denied["request_id"].as_str().unwrap().to_owned();
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .ends_with(&format!("`jobkey audit show {denied_id}`")),
        "{denied}"
    );
    Run {
        allowed,
        denied: denied_id,
        revoke,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn query_show_export_and_replay_read_a_real_log() {
    let stack = Stack::start_revocable().await;
    let run = scripted_run(&stack).await;
    let log = stack.audit_path.to_str().unwrap().to_owned();
    let cfg = stack.config_path.to_str().unwrap().to_owned();

    // query: (arguments, exit status, request ids expected in order)
    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["--decision", "allow", "--env", "production"],
            0,
            vec![&run.allowed, &run.revoke],
        ),
        (vec!["--code", "no_rule_matched"], 0, vec![&run.denied]),
        (
            vec!["--request-id", &run.allowed],
            0,
            vec![&run.allowed, &run.revoke],
        ),
        (
            vec![
                "--repository",
                "acme/api",
                "--decision",
                "deny",
                "--env",
                "production",
            ],
            0,
            vec![&run.denied],
        ),
        (vec!["--env", "nowhere", "--since", "1h"], 0, vec![]),
        (vec!["--rule", "no-such-rule"], 1, vec![]),
    ];
    for (extra, status, want) in cases {
        let mut args = vec!["audit", "query", &log, "--format", "json"];
        args.extend(extra.iter().copied());
        let (code, out, err) = jobkey_cli(&args);
        assert_eq!(code, status, "{extra:?}: {out}{err}");
        let ids: Vec<String> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["event"]["action"] != "refusals_summarized")
            .map(|v| v["event"]["request_id"].as_str().unwrap().to_owned())
            .collect();
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        if extra[0] == "--env" {
            assert_eq!(ids.len(), 1, "{extra:?}: {out}");
        } else {
            assert_eq!(ids, want, "{extra:?}: {out}");
        }
    }
    let (code, out, _) = jobkey_cli(&["audit", "query", "--config", &cfg]);
    assert_eq!(code, 0);
    assert!(out.starts_with("TIME"), "{out}");
    assert!(
        out.contains("github:acme/api deploy-db (github-api-deploy, 300s)"),
        "{out}"
    );
    let (code, _, err) = jobkey_cli(&["audit", "query", "/nonexistent/audit.jsonl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/audit.jsonl"), "{err}");

    // show: the allowed exchange and its revocation.
    let (code, out, _) = jobkey_cli(&["audit", "show", &run.allowed, &log]);
    assert_eq!(code, 0, "{out}");
    for want in [
        "issued: deploy-db (kv) by rule `github-api-deploy`, ttl 300s",
        "revoked by:",
        &format!("revoke {} allow", run.revoke),
        "repository = acme/api",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    // The denial: the recorded reason, then re-decided under the policies.
    let (code, out, _) = jobkey_cli(&["audit", "show", &run.denied, &log]);
    assert_eq!(code, 0);
    assert!(
        out.contains("rule `github-api-deploy`: claim `ref`: expected \"refs/heads/main\", got \"refs/heads/dev\""),
        "{out}"
    );
    // The policies the stack served.
    let policies = stack.policy_dir.clone();
    let (code, out, err) = jobkey_cli(&[
        "audit",
        "show",
        &run.denied,
        &log,
        "--config",
        &cfg,
        "--policies",
        policies.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("under the policies in"), "{out}");
    assert!(out.contains("decision: deny (no_rule_matched)"), "{out}");
    let (code, out, _) = jobkey_cli(&["audit", "show", "no-such-request", &log]);
    assert_eq!(
        (code, out.trim()),
        (1, "no record of request no-such-request")
    );

    // export: the OCSF fields a SIEM needs, on every exported line.
    let (code, out, err) = jobkey_cli(&["audit", "export", "--format", "ocsf", &log]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 4, "{out}");
    for e in &events {
        for pointer in [
            "/class_uid",
            "/category_uid",
            "/activity_id",
            "/type_uid",
            "/time",
            "/severity_id",
            "/status_id",
            "/actor/user/name",
            "/metadata/product/name",
            "/metadata/version",
        ] {
            assert!(e.pointer(pointer).is_some(), "{pointer}: {e}");
        }
        assert!(e["time"].as_u64().unwrap() > 1_600_000_000_000, "{e}");
        assert_eq!(
            e["type_uid"],
            e["class_uid"].as_u64().unwrap() * 100 + e["activity_id"].as_u64().unwrap()
        );
    }
    let by_id = |id: &str| events.iter().find(|e| e["metadata"]["uid"] == id).unwrap();
    assert_eq!(
        (
            by_id(&run.allowed)["class_uid"].as_u64(),
            by_id(&run.allowed)["status_id"].as_u64()
        ),
        (Some(3002), Some(1))
    );
    assert_eq!(by_id(&run.allowed)["user"]["name"], "acme/api");
    assert_eq!(
        (
            by_id(&run.denied)["status_id"].as_u64(),
            by_id(&run.denied)["status_code"].as_str()
        ),
        (Some(2), Some("no_rule_matched"))
    );
    assert_eq!(
        (
            by_id(&run.revoke)["class_uid"].as_u64(),
            by_id(&run.revoke)["activity_id"].as_u64()
        ),
        (Some(6003), Some(4))
    );
    assert!(
        !out.contains(&stack.db_password) && !out.contains("hmac-sha256"),
        "{out}"
    );

    // replay: the policies served change nothing (0); a stricter copy
    // denies the allowed production exchange (1); a broken one is 2.
    let replay = |dir: &Path| {
        jobkey_cli(&[
            "policy",
            "replay",
            "--config",
            &cfg,
            "--policies",
            dir.to_str().unwrap(),
            "--audit",
            &log,
        ])
    };
    let (code, out, err) = replay(&policies);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("0 decision(s) would change"), "{out}");
    let proposed = tempfile::tempdir().unwrap();
    for f in ["production.yaml", "staging.yaml"] {
        let text = std::fs::read_to_string(policies.join(f)).unwrap();
        let text = text.replace("repository: acme/api\n", "repository: acme/other\n");
        std::fs::write(proposed.path().join(f), text).unwrap();
    }
    let (code, out, err) = replay(proposed.path());
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains(&format!("{} env `production`", run.allowed)),
        "{out}"
    );
    assert!(out.contains("NewlyDenied"), "{out}");
    std::fs::write(proposed.path().join("production.yaml"), "rules: [").unwrap();
    let (code, _, err) = replay(proposed.path());
    assert_eq!(code, 2, "{err}");
}

/// `chromium` with the flags a headless run in a container needs.
fn chromium(profile: &Path) -> Command {
    let bin = std::env::var("JOBKEY_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .stderr(Stdio::null());
    c
}

/// Starts `jobkey review` on a free loopback port: (child, URL).
fn start_review(config: &str) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(["review", "--config", config, "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("review page at ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    (child, url)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_review_page_shows_the_run_in_chromium_and_no_secret() {
    let stack = Stack::start_revocable().await;
    let run = scripted_run(&stack).await;
    let cfg = stack.config_path.to_str().unwrap().to_owned();
    let (mut child, url) = start_review(&cfg);

    let client = reqwest::Client::new();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(
        resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );

    // The leaked-value lookup: the matches, never the value.
    let form = format!("value={}", stack.db_password);
    let resp = client
        .post(format!("{url}lookup"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    assert!(html.contains("Issued by 1 exchange(s)"), "{html}");
    assert!(
        html.contains(&run.allowed) && html.contains("deploy-db.password"),
        "{html}"
    );
    assert!(
        !html.contains(&stack.db_password),
        "the value is not echoed back"
    );
    let resp = client
        .post(format!("{url}lookup"))
        .body("value=never-issued")
        .send()
        .await
        .unwrap();
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("No exchange issued this value.")
    );

    // In the browser.
    let tmp = tempfile::tempdir().unwrap();
    let out = chromium(&tmp.path().join("profile"))
        .args(["--dump-dom", &url])
        .output()
        .expect("chromium (scripts/ensure-chromium.sh installs it)");
    assert!(out.status.success());
    let dom = String::from_utf8_lossy(&out.stdout);
    for want in [
        "id=\"allowed\"><b>2</b>allowed",
        "id=\"denied\"><b>2</b>denied",
        "id=\"revocations\"><b>1</b>revocations",
        "Chain intact",
        "github:acme/api",
        "no_rule_matched",
        "unknown_environment",
        "github-api-deploy (1)",
        "<svg id=\"chart\"",
        "Who can have what",
        &run.denied,
    ] {
        assert!(dom.contains(want), "{want}: {dom}");
    }
    for secret in [&stack.db_password, &stack.app_key] {
        assert!(!dom.contains(secret.as_str()), "a secret in the page");
    }
    assert!(!dom.contains("hmac-sha256"), "no fingerprint on the page");
    let shot: PathBuf = tmp.path().join("review.png");
    let status = chromium(&tmp.path().join("profile2"))
        .arg(format!("--screenshot={}", shot.display()))
        .args(["--window-size=1280,900", &url])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
    if let Ok(keep) = std::env::var("JOBKEY_REVIEW_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_review_page_refuses_a_non_loopback_address_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = jobkey_cli(&[
        "review",
        "--config",
        dir.path().join("none.toml").to_str().unwrap(),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("listens on loopback only"), "{err}");
    assert!(err.contains("--allow-remote"), "{err}");
}
