//! Revocation from the job's side, written against the shared contract
//! (`revocation` in the exchange response, `POST /v1/revoke`). It needs the
//! broker's revocation endpoint (issue 4); on a branch without it these
//! tests fail, by design: nothing here is ignored.

use crate::fetch_support::{fetch, github_env, jobkey};
use crate::support::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_revokes_the_exchange_when_the_command_exits() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let run = fetch(
        "production",
        &["--exec", "--", "/bin/sh", "-c", "exit 3"],
        &env,
    )
    .await;
    assert_eq!(run.code, Some(3), "{}", run.stderr);
    assert!(
        run.stderr.contains("jobkey: revoked "),
        "revoked after the command exited: {}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("no revocation handle"),
        "{}",
        run.stderr
    );
    // The broker's side: the exchange, then its revocation by its own
    // handle.
    let lines = stack.audit_lines();
    let [exchange, revoke] = lines.as_slice() else {
        panic!("an exchange and a revocation: {lines:#?}");
    };
    assert_eq!(exchange["decision"], "allow", "{exchange}");
    let revoked = (
        &revoke["action"],
        &revoke["auth"],
        &revoke["decision"],
        &revoke["exchange"],
    );
    assert_eq!(
        revoked,
        (
            &json!("revoke"),
            &json!("handle"),
            &json!("allow"),
            &exchange["request_id"]
        ),
        "{revoke}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_uses_the_saved_handle_once() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let run = fetch("production", &[], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let state = tmp.path().join("runner_temp/jobkey/revocation.json");
    assert!(
        state.exists(),
        "fetch saved the revocation state: {}",
        run.stderr
    );
    assert_eq!(crate::fetch_support::mode(&state), 0o600);
    let handle =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&state).unwrap())
            .unwrap()["handle"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(
        run.stdout.contains(&format!("::add-mask::{handle}")),
        "the handle is masked"
    );
    let copy = tmp.path().join("copy.json");
    std::fs::copy(&state, &copy).unwrap();

    let run = jobkey(&["revoke"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(!state.exists(), "the state is removed once used");
    assert!(!run.stderr.contains(&handle));

    // Twice: the broker no longer knows the exchange.
    let run = jobkey(&["revoke", "--state", &copy.display().to_string()], &env).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("404 unknown_exchange"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&handle));
}
