//! Hot reload against the running server: a valid change takes effect, an
//! invalid one is refused while the old policy keeps serving and `/readyz`
//! shows it is stale (not why: that is in the log); SIGHUP reloads a change
//! the file watcher cannot see.

use std::time::Duration;

use crate::support::{Options, Stack};
use serde_json::json;

/// Polls `check` for up to 10 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..100 {
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 10 s: {last}");
}

async fn expect_exchange(stack: &Stack, token: &str, want: u16) -> Result<(), String> {
    let (status, body) = stack.exchange_status(token, "production").await;
    if status == want {
        Ok(())
    } else {
        Err(format!("{status} {body}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_change_takes_effect_and_an_invalid_one_is_refused() {
    let policies = crate::support::copied_policies();
    let stack = Stack::start_on(policies.path()).await;
    let token = stack.github_token(json!({}));
    expect_exchange(&stack, &token, 200).await.unwrap();
    let (_, ready) = stack.get_json("/readyz").await;
    assert_eq!(ready["policies"]["status"], "current", "{ready}");

    // A valid change: production now only admits a release branch.
    let file = policies.path().join("production.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let release = original.replace("ref: refs/heads/main", "ref: refs/heads/release");
    assert_ne!(release, original);
    std::fs::write(&file, &release).unwrap();
    eventually("the valid change", || expect_exchange(&stack, &token, 403)).await;
    let (_, body) = stack.exchange_status(&token, "production").await;
    assert_eq!(body["error"], "no_rule_matched", "{body}");
    assert_eq!(body["failed_claims"], serde_json::json!(["ref"]), "{body}");

    // An invalid change: refused; the previous (release-only) policy keeps
    // serving and readiness shows it is stale, still 200.
    let broken = original.replace("ref: refs/heads/main", "ref: {regex: \"(\"}");
    std::fs::write(&file, &broken).unwrap();
    eventually("readyz showing the refused reload", || async {
        let (status, ready) = stack.get_json("/readyz").await;
        let p = &ready["policies"];
        match (status, p["status"].as_str(), p["refused_at"].as_str()) {
            (200, Some("stale"), Some(_)) if p.get("error").is_none() => Ok(()),
            _ => Err(format!("{status} {ready}")),
        }
    })
    .await;
    let (status, body) = stack.exchange_status(&token, "production").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"], "no_rule_matched",
        "the old policy serves: {body}"
    );

    // Restoring the original makes it current again and admits main.
    std::fs::write(&file, &original).unwrap();
    eventually("the restored policy", || {
        expect_exchange(&stack, &token, 200)
    })
    .await;
    let (_, ready) = stack.get_json("/readyz").await;
    assert_eq!(ready["policies"]["status"], "current", "{ready}");
    assert!(ready["policies"].get("error").is_none(), "{ready}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_real_binary() {
    // The served directory holds links to the policy files, which live
    // elsewhere: editing them changes nothing in the watched directory, so
    // only SIGHUP can make jobkey read the change.
    let files = crate::support::copied_policies();
    let policies = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(files.path()).unwrap() {
        let path = entry.unwrap().path();
        std::os::unix::fs::symlink(&path, policies.path().join(path.file_name().unwrap())).unwrap();
    }
    let stack = Stack::start_with(Options {
        policy_dir: Some(policies.path().to_path_buf()),
        subprocess: true,
        ..Options::default()
    })
    .await;
    let token = stack.github_token(json!({}));
    expect_exchange(&stack, &token, 200).await.unwrap();

    // Production now admits a release branch only; unseen without the
    // signal (well past the file watcher's debounce).
    let file = files.path().join("production.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let release = original.replace("ref: refs/heads/main", "ref: refs/heads/release");
    assert_ne!(release, original);
    std::fs::write(&file, &release).unwrap();
    // The watcher debounces for 250 ms; a second is well past it.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    expect_exchange(&stack, &token, 200).await.unwrap();

    let pid = stack.pid().unwrap();
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("the SIGHUP reload in the log", || async {
        let log = std::fs::read_to_string(&stack.log_path).unwrap_or_default();
        match log
            .lines()
            .find(|l| l.contains("reloaded policies") && l.contains("SIGHUP"))
        {
            Some(_) => Ok(()),
            None => Err(format!("no reload logged:\n{log}")),
        }
    })
    .await;
    // The changed policy decides, and the server still serves (SIGHUP did
    // not kill it).
    let (status, body) = stack.exchange_status(&token, "production").await;
    assert_eq!(
        (status, body["error"].as_str(), &body["failed_claims"]),
        (403, Some("no_rule_matched"), &json!(["ref"])),
        "{body}"
    );
}
