//! Revocation from the job's side, written against the shared contract
//! (`revocation` in the exchange response, `POST /v1/revoke`): after
//! `--exec`, and with `jobkey revoke`, which revokes every exchange of the
//! job and removes the files and directories `jobkey fetch` made.

use crate::fetch_support::{fetch, github_env, jobkey};
use crate::support::Stack;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_revokes_the_exchange_when_the_command_exits() {
    let stack = Stack::start_revocable().await;
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
    let stack = Stack::start_revocable().await;
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
    let (_, handle) = last_exchange(&state);
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

/// The request id and handle of the last exchange in a state file, in
/// either of the forms `jobkey fetch` has written (one exchange, or a list).
fn last_exchange(state: &std::path::Path) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    let e = match v.get("exchanges") {
        Some(list) => list.as_array().unwrap().last().unwrap().clone(),
        None => v,
    };
    (
        e["request_id"].as_str().unwrap().to_owned(),
        e["handle"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fetches_in_one_job_are_both_revoked() {
    let stack = Stack::start_revocable().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let state = tmp.path().join("runner_temp/jobkey/revocation.json");
    let mut exchanges = Vec::new();
    for _ in 0..2 {
        let run = jobkey(&["fetch", "-e", "production"], &env).await;
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        exchanges.push(last_exchange(&state));
    }
    assert_ne!(exchanges[0].0, exchanges[1].0, "two exchanges");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert_eq!(
        saved["exchanges"].as_array().map(Vec::len),
        Some(2),
        "the state keeps both: {saved}"
    );

    let run = jobkey(&["revoke"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    for (request_id, handle) in &exchanges {
        assert!(
            run.stderr
                .contains(&format!("jobkey: exchange {request_id}: revoked ")),
            "each exchange is reported: {}",
            run.stderr
        );
        assert!(!run.stderr.contains(handle.as_str()));
        // The broker no longer knows either of them.
        let (status, body) = stack.revoke(handle, request_id).await;
        assert_eq!(status, 404, "{request_id} was not revoked: {body}");
        assert_eq!(body["error"], "unknown_exchange");
    }
    assert!(!state.exists(), "the state is removed once used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_removes_the_files_and_the_directories_fetch_made() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let fetch = |out: Option<String>| {
        let env = env.clone();
        async move {
            let mut args = vec!["fetch", "-e", "production"];
            if let Some(o) = &out {
                args.extend(["--out", o.as_str()]);
            }
            let run = jobkey(&args, &env).await;
            assert_eq!(run.code, Some(0), "{}", run.stderr);
        }
    };
    // Under directories that do not exist yet: fetch makes all of them.
    let made = tmp.path().join("work/secrets/creds");
    fetch(Some(made.display().to_string())).await;
    assert!(made.join("deploy-db/password").exists());
    // Into a directory the job made itself, with a file of its own.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::write(mine.join("notes"), "the job's").unwrap();
    fetch(Some(mine.display().to_string())).await;
    assert!(mine.join("deploy-db/username").exists());
    // The default directory, $RUNNER_TEMP/jobkey/credentials.
    fetch(None).await;
    let default = tmp.path().join("runner_temp/jobkey/credentials");
    assert!(default.join("deploy-db/password").exists());

    let run = jobkey(&["revoke"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        !tmp.path().join("work").exists(),
        "the directories fetch made are gone: {}",
        run.stderr
    );
    assert!(!mine.join("deploy-db").exists(), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(mine.join("notes")).unwrap(),
        "the job's",
        "what the job made stays"
    );
    assert!(
        !tmp.path().join("runner_temp/jobkey").exists(),
        "the default directory and the state are gone: {}",
        run.stderr
    );
    assert!(tmp.path().join("runner_temp").is_dir(), "the runner's own");
    assert_eq!(
        run.stderr.matches("removed 2 file(s) under").count(),
        3,
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_leaves_no_file_and_no_directory_behind() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let mut env = github_env(&stack, tmp.path(), json!({})).await;
    // A temporary directory that does not exist yet: fetch makes it.
    let runner_temp = tmp.path().join("rt/nested");
    for (k, v) in &mut env {
        if *k == "RUNNER_TEMP" {
            *v = runner_temp.display().to_string();
        }
    }
    let seen = tmp.path().join("seen");
    let script = format!(
        "echo \"$JOBKEY_CREDENTIALS_DIR\" > '{}'; test -s \"$JOBKEY_CREDENTIALS_DIR/deploy-db/password\"",
        seen.display()
    );
    let run = jobkey(
        &[
            "fetch",
            "-e",
            "production",
            "--exec",
            "--",
            "/bin/sh",
            "-c",
            &script,
        ],
        &env,
    )
    .await;
    assert_eq!(run.code, Some(0), "the files were there: {}", run.stderr);
    let dir = std::fs::read_to_string(&seen).unwrap();
    assert!(dir.trim().starts_with(&runner_temp.display().to_string()));
    assert!(!std::path::Path::new(dir.trim()).exists());
    assert!(
        !tmp.path().join("rt").exists(),
        "the directories fetch made for it are gone too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exchange_that_could_not_be_revoked_stays_for_another_try() {
    let stack = Stack::start_revocable().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let state = tmp.path().join("runner_temp/jobkey/revocation.json");
    let run = jobkey(&["fetch", "-e", "production"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let (request_id, _) = last_exchange(&state);

    // The broker cannot be reached: nothing is revoked, the state stays,
    // the files go anyway.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("http://127.0.0.1:{closed}");
    let run = jobkey(&["revoke", "--url", &closed, "--retry-for", "0"], &env).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "jobkey: exchange {request_id}: not revoked: the broker: cannot connect"
        )),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("1 of 1 exchange(s) could not be revoked"),
        "{}",
        run.stderr
    );
    assert_eq!(last_exchange(&state).0, request_id, "kept for another try");
    assert!(
        !tmp.path()
            .join("runner_temp/jobkey/credentials/deploy-db")
            .exists()
    );

    // Another try, with the broker: revoked, and everything is gone.
    let run = jobkey(&["revoke"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("jobkey: exchange {request_id}: revoked ")),
        "{}",
        run.stderr
    );
    assert!(
        !tmp.path().join("runner_temp/jobkey").exists(),
        "{}",
        run.stderr
    );
}

/// A KV-only exchange has no revocation handle: `--exec` and `jobkey
/// revoke` say there is nothing to revoke and succeed, and `jobkey revoke`
/// still removes the files `jobkey fetch` wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_only_exchange_has_nothing_to_revoke_and_its_files_still_go() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let run = fetch("production", &["--exec", "--", "/bin/true"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("jobkey: nothing to revoke"),
        "{}",
        run.stderr
    );

    let run = fetch("production", &[], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("jobkey: nothing to revoke"),
        "{}",
        run.stderr
    );
    let files = tmp.path().join("runner_temp/jobkey/credentials/deploy-db");
    assert!(files.join("password").exists());
    let run = jobkey(&["revoke"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr.contains("nothing to revoke") && run.stderr.contains("removed 2 file(s)"),
        "{}",
        run.stderr
    );
    assert!(
        !tmp.path().join("runner_temp/jobkey").exists(),
        "{}",
        run.stderr
    );
    // The broker's side: two exchanges, no revocation.
    let lines = stack.audit_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines.iter().all(|l| l["revocable"] == 0), "{lines:#?}");
}
