//! Secret hygiene, end to end: run the real binary at trace level, make
//! allowed, denied and refused exchanges and a revocation, then search its
//! log and the audit file for every secret value, every token and every
//! revocation handle. None may appear.

use crate::support::{Options, Stack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_and_no_token_in_logs_or_audit() {
    let stack = Stack::start_revocable_with(Options {
        subprocess: true,
        ..Options::default()
    })
    .await;
    let gh = stack.github_token(json!({}));
    let gl = stack.gitlab_token();
    let denied = stack.github_token(json!({"ref": "refs/heads/dev"}));
    let expired = stack.github_token(json!({"iat": 1, "nbf": 1, "exp": 2}));

    let (s, resp) = stack.exchange_status(&gh, "production").await;
    assert_eq!(s, 200, "{resp}");
    assert_eq!(
        resp["credentials"]["deploy-db"]["values"]["password"],
        stack.db_password.as_str()
    );
    let handle = resp["revocation"]["handle"].as_str().unwrap().to_owned();
    let (s, staging) = stack.exchange_status(&gl, "staging").await;
    assert_eq!(s, 200, "{staging}");
    let staging_handle = staging["revocation"]["handle"].as_str().unwrap();
    // The production exchange is revoked with its handle, so the handle
    // passes through the server's request path as a bearer too.
    let (s, revoked) = stack
        .revoke(&handle, resp["request_id"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(stack.exchange_status(&denied, "production").await.0, 403);
    assert_eq!(stack.exchange_status(&expired, "production").await.0, 401);
    assert_eq!(
        stack
            .exchange_status(&format!("{gh}x"), "production")
            .await
            .0,
        401
    );

    let log = std::fs::read_to_string(&stack.log_path).unwrap();
    let audit = std::fs::read_to_string(&stack.audit_path).unwrap();
    assert!(
        log.contains("exchange allowed"),
        "the log is the server's (trace level): {log}"
    );
    assert_eq!(audit.lines().count(), 6);
    // The refused tokens are audited with their claims read unverified,
    // and marked so.
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (line, code) in [(&lines[4], "token_expired"), (&lines[5], "bad_signature")] {
        assert_eq!(line["decision"], "deny", "{line}");
        assert_eq!(line["code"], code, "{line}");
        assert_eq!(line["identity"]["verified"], false, "{line}");
        assert_eq!(line["identity"]["repository"], "acme/api", "{line}");
        assert!(line["identity"].get("issuer").is_none(), "{line}");
    }
    let needles = [
        ("the database password", stack.db_password.clone()),
        ("the staging api key", stack.app_key.clone()),
        ("the Vault root token", stack.bao.root_token().to_owned()),
        ("the GitHub token", gh.clone()),
        ("the GitLab token", gl.clone()),
        ("the denied token", denied.clone()),
        ("the expired token", expired.clone()),
        ("the revocation handle used to revoke", handle.clone()),
        ("the other revocation handle", staging_handle.to_owned()),
        // A token's signature alone identifies it.
        (
            "the GitHub token's signature",
            gh.rsplit('.').next().unwrap().to_owned(),
        ),
    ];
    for (what, needle) in &needles {
        assert!(needle.len() >= 16, "{what} is a meaningful needle");
        assert!(
            !log.contains(needle.as_str()),
            "{what} appears in the server log"
        );
        assert!(
            !audit.contains(needle.as_str()),
            "{what} appears in the audit log"
        );
    }
}
