//! jobkey's own Vault login, seen from the API: a revoked static token makes
//! the broker not ready and its exchanges 503 (never a silent failure of
//! every request); with AppRole it logs in again and keeps serving, without
//! a restart. A Vault that restarted and forgot jobkey's token makes
//! `/readyz` say so within one poll interval, with no traffic at all.

use std::time::{Duration, Instant};

use crate::support::{OpenBao, Options, Stack, random};
use jobkey::Shape;
use serde_json::{Map, json};

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

/// `/readyz`: (status, reason, Retry-After).
async fn readiness(stack: &Stack) -> (u16, Option<String>, Option<String>) {
    let r = reqwest::get(format!("{}/readyz", stack.url)).await.unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = r.json().await.unwrap();
    (status, body["reason"].as_str().map(str::to_owned), retry)
}

/// How long a restarted Vault may go unnoticed: one poll interval of the
/// vault layer (5 s), plus slack for a loaded machine.
const ONE_POLL: Duration = Duration::from_secs(7);

/// Restarts OpenBao (a dev server forgets every token) and waits, with no
/// exchange, until `/readyz` says jobkey's token was refused.
async fn restart_and_see_refused(stack: &mut Stack) {
    stack.bao.restart();
    let t0 = Instant::now();
    loop {
        let (status, reason, retry) = readiness(stack).await;
        if status == 503 {
            assert_eq!(reason.as_deref(), Some("jobkey's token was refused"));
            assert_eq!(retry.as_deref(), Some("5"));
            break;
        }
        assert!(
            t0.elapsed() < ONE_POLL,
            "/readyz still {status} {reason:?} {:?} after the restart",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_vault_is_not_ready_without_traffic_and_a_static_token_stays_so() {
    let mut stack = Stack::start_with(Options {
        vault_auth: Some(Box::new(|bao: &OpenBao, dir: &std::path::Path| {
            bao.jobkey_token_auth(dir, "1h")
        })),
        ..Options::default()
    })
    .await;
    assert_eq!(readiness(&stack).await, (200, None, None));

    restart_and_see_refused(&mut stack).await;

    // The token file still holds the forgotten token: jobkey keeps trying
    // it (with back-off) and stays not ready, saying why.
    tokio::time::sleep(ONE_POLL).await;
    let (status, reason, _) = readiness(&stack).await;
    assert_eq!(
        (status, reason.as_deref()),
        (503, Some("jobkey's token was refused"))
    );
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let (status, body) = stack.exchange_status(&gh, "production").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("vault_unavailable")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_vault_is_not_ready_without_traffic_and_approle_recovers() {
    let role_id = format!("role-{}", random(12));
    let secret_id = format!("secret-{}", random(24));
    let (r, s) = (role_id.clone(), secret_id.clone());
    let mut stack = Stack::start_with(Options {
        vault_auth: Some(Box::new(move |bao: &OpenBao, dir: &std::path::Path| {
            bao.jobkey_approle("1h", "2h", &r, &s);
            std::fs::write(dir.join("role-id"), &r).unwrap();
            std::fs::write(dir.join("secret-id"), &s).unwrap();
            format!(
                "method = \"approle\"\nrole_id_file = \"{}\"\nsecret_id_file = \"{}\"",
                dir.join("role-id").display(),
                dir.join("secret-id").display()
            )
        })),
        ..Options::default()
    })
    .await;
    assert_eq!(readiness(&stack).await, (200, None, None));

    restart_and_see_refused(&mut stack).await;
    // The new server knows no AppRole yet: still not ready.
    let (status, reason, _) = readiness(&stack).await;
    assert_eq!(
        (status, reason.as_deref()),
        (503, Some("jobkey's token was refused"))
    );

    // Vault's operators restore jobkey's AppRole (and the secret):
    // jobkey logs in again by itself and is ready.
    stack.bao.jobkey_approle("1h", "2h", &role_id, &secret_id);
    stack.bao.put_deploy_db(&stack.db_password);
    assert!(
        eventually(Duration::from_secs(40), || async {
            readiness(&stack).await == (200, None, None)
        })
        .await,
        "jobkey did not log in again: {:?}",
        readiness(&stack).await
    );
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let (status, body) = stack.exchange_status(&gh, "production").await;
    assert_eq!(status, 200, "{body}");
}
