//! jobkey's own Vault login, seen from the API: a revoked static token makes
//! the broker not ready and its exchanges 503 (never a silent failure of
//! every request); with AppRole it logs in again and keeps serving, without
//! a restart.

use std::time::{Duration, Instant};

use crate::support::{OpenBao, Options, Stack};
use serde_json::json;

async fn readyz(stack: &Stack) -> u16 {
    reqwest::get(format!("{}/readyz", stack.url))
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls until `f` holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_static_token_is_not_ready_and_503() {
    let token = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let t = token.clone();
    let stack = Stack::start_with(Options {
        vault_auth: Some(Box::new(move |bao: &OpenBao, dir: &std::path::Path| {
            bao.read_secrets_policy("jobkey");
            let tok = bao.create_token(&["-policy=jobkey", "-period=1h"]);
            let file = dir.join("jobkey-token");
            std::fs::write(&file, &tok).unwrap();
            *t.lock().unwrap() = tok;
            format!("method = \"token\"\ntoken_file = \"{}\"", file.display())
        })),
        ..Options::default()
    })
    .await;
    let gh = stack.github_token(json!({}));
    assert_eq!(stack.exchange_status(&gh, "production").await.0, 200);
    assert_eq!(readyz(&stack).await, 200);

    let tok = token.lock().unwrap().clone();
    stack.bao.bao(&["token", "revoke", &tok]);
    let (status, body) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "vault_unavailable");
    assert!(body.get("credentials").is_none());
    assert!(
        eventually(Duration::from_secs(10), || async {
            readyz(&stack).await == 503
        })
        .await,
        "readiness reports the dead token"
    );
    let r = reqwest::get(format!("{}/readyz", stack.url)).await.unwrap();
    assert_eq!(r.headers()["retry-after"], "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_again_and_keeps_serving() {
    let stack = Stack::start_with(Options {
        vault_auth: Some(Box::new(|bao: &OpenBao, _: &std::path::Path| {
            bao.read_secrets_policy("jobkey");
            let ids = bao.approle(&[
                "token_policies=jobkey",
                "token_ttl=3s",
                "token_max_ttl=5s",
                "secret_id_ttl=0",
            ]);
            format!(
                "method = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"",
                ids.role_id_file.display(),
                ids.secret_id_file.display()
            )
        })),
        ..Options::default()
    })
    .await;
    let gh = stack.github_token(json!({}));
    assert_eq!(stack.exchange_status(&gh, "production").await.0, 200);

    // Past the token's max TTL: renewal alone cannot keep it, a new login must.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (status, body) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 200, "after the first token's max TTL: {body}");

    // Every token AppRole handed out is revoked behind jobkey's back.
    let live = |stack: &Stack| {
        stack.bao.bao_as(
            stack.bao.root_token(),
            &[
                "list",
                "-format=json",
                "sys/leases/lookup/auth/approle/login/",
            ],
            None,
        )
    };
    assert!(
        live(&stack).status.success(),
        "jobkey holds an AppRole token lease"
    );
    stack
        .bao
        .bao(&["lease", "revoke", "-prefix", "auth/approle/login"]);
    assert!(
        !live(&stack).status.success(),
        "no AppRole token is left after the revocation"
    );
    assert!(
        eventually(Duration::from_secs(15), || async {
            stack.exchange_status(&gh, "production").await.0 == 200
        })
        .await,
        "jobkey logs in again without a restart"
    );
    assert_eq!(readyz(&stack).await, 200);
}
