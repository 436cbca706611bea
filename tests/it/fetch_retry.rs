//! `jobkey fetch --retry-for` against a running broker: a Vault outage
//! shorter than the window is ridden out (the broker's 503 and its
//! `Retry-After` are honoured, and each retry is said on stderr), a denial
//! is answered at once, and a broker that refuses connections is retried
//! until the window ends.

use std::time::{Duration, Instant};

use crate::fetch_support::{REQUEST_TOKEN, github_token_endpoint, jobkey, spawn_jobkey};
use crate::support::{Options, Stack, engines};
use serde_json::{Value, json};

/// A GitHub step's environment whose token endpoint mints tokens with
/// `claims` applied.
async fn github_env(
    stack: &Stack,
    tmp: &std::path::Path,
    claims: Value,
) -> Vec<(&'static str, String)> {
    let url =
        github_token_endpoint(stack.github.clone(), claims.as_object().unwrap().clone()).await;
    std::fs::create_dir_all(tmp.join("runner_temp")).unwrap();
    vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", url),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.into()),
        ("RUNNER_TEMP", tmp.join("runner_temp").display().to_string()),
        ("JOBKEY_URL", stack.url.clone()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_outage_within_retry_for_is_ridden_out() {
    // A Vault token credential with the `default` policy: a dev OpenBao
    // started again has that policy at once; only the token role is
    // written again.
    let mut stack = Stack::start_with(Options {
        setup: Some(Box::new(|bao| {
            engines::policy_dir(
                bao.dir(),
                "  vt:\n    vault_token: {policies: [default]}\n    ttl: 10m\n",
            )
        })),
        token_policies: Some(vec!["default"]),
        ..Options::default()
    })
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;

    stack.bao.stop();
    let started = Instant::now();
    // The default window: 60s.
    let mut run = spawn_jobkey(&["fetch", "-e", "production"], &env);
    // The first answer is the broker's 503; jobkey waits its Retry-After.
    run.wait_for_line("retrying in 5s", Duration::from_secs(30))
        .await;
    tokio::task::block_in_place(|| {
        stack.bao.restart();
        // A dev server forgets its token roles too.
        stack.bao.write_jobkey_token_role(&["default"]);
    });
    let (code, stderr) = run.finish().await;

    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("the exchange failed: the broker refused (503 vault_unavailable)"),
        "{stderr}"
    );
    assert!(stderr.contains("(retry 1, for up to 1m"), "{stderr}");
    assert!(stderr.contains("production: vt (vault_token"), "{stderr}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "Retry-After was honoured"
    );
    let token = tmp.path().join("runner_temp/jobkey/credentials/vt/token");
    assert!(token.exists(), "delivered after the outage: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_is_not_retried() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({"ref": "refs/heads/feature/x"})).await;
    let started = Instant::now();
    // The default window (60s) is open, and unused.
    let run = jobkey(&["fetch", "-e", "production"], &env).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("403 no_rule_matched"), "{}", run.stderr);
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_broker_that_refuses_connections_is_retried_until_the_window_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(&token, "header.payload.signature").unwrap();
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = [("JOBKEY_URL", format!("http://127.0.0.1:{port}"))];
    // (--retry-for, retries expected)
    for (window, retries) in [("0", 0), ("4s", 2)] {
        let started = Instant::now();
        let run = jobkey(
            &[
                "fetch",
                "-e",
                "production",
                "--ci",
                "none",
                "--token-file",
                &token.display().to_string(),
                "--retry-for",
                window,
            ],
            &env,
        )
        .await;
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
        assert_eq!(
            run.stderr.matches("retrying in").count(),
            retries,
            "1s, 2s, then 4s would end after the window: {}",
            run.stderr
        );
        if retries > 0 {
            assert!(
                run.stderr.contains("giving up (--retry-for 4s)"),
                "{}",
                run.stderr
            );
            assert!(
                started.elapsed() >= Duration::from_secs(3),
                "slept 1s then 2s"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
