//! Abuse controls shared by replicas: three jobkeys on one Redis and one
//! OpenBao share revocation, single-use tokens, rate limits and policy
//! changes, each writing its own replica id in its audit log; and a
//! dedicated Redis stopped and started again shows what each feature does
//! while it is down (replay protection refuses, rate limits fall back to
//! each replica's own table, the exchange store refuses) and that all of
//! it recovers without a restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jobkey::Rate;
use jobkey::{Config, StateSettings};
use serde_json::{Value, json};

use crate::broker_support::{Broker, audit_lines, eventually, free_port, post};
use crate::support::{Stack, random};

/// A Redis of this test's own on a free port (never the shared one).
struct Redis {
    port: u16,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
        };
        r.restart();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it (again) on its port, empty, and waits until it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not listen on {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Three replicas on `redis` under `prefix`, named `<name>0..2`, each
/// with `edit` applied.
async fn replicas(
    stack: &Stack,
    redis: &Redis,
    name: &str,
    edit: impl Fn(&mut Config),
) -> Vec<Broker> {
    let mut out = Vec::new();
    for i in 0..3 {
        let id = format!("{name}{i}");
        out.push(
            Broker::start(stack, &id, |cfg| {
                cfg.state = Some(StateSettings {
                    redis_url: redis.url(),
                    key_prefix: format!("{name}:"),
                    timeout: Duration::from_secs(1),
                });
                cfg.replica_id = id.clone();
                edit(cfg);
            })
            .await,
        );
    }
    out
}

/// A fresh GitHub token of the production deploy (its own `jti`).
fn fresh(stack: &Stack) -> String {
    stack.github_token(json!({"jti": random(16)}))
}

async fn exchange(b: &Broker, token: &str) -> (u16, Option<String>, Value) {
    post(
        &b.url,
        "/v1/exchange",
        token,
        &json!({"environment": "production"}).to_string(),
    )
    .await
}

async fn revoke(b: &Broker, bearer: &str, request_id: &str) -> (u16, Option<String>, Value) {
    post(
        &b.url,
        "/v1/revoke",
        bearer,
        &json!({ "request_id": request_id }).to_string(),
    )
    .await
}

fn code(v: &Value) -> Option<&str> {
    v["error"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_revocation_single_use_limits_and_policy() {
    let policies = crate::support::revocable_policies();
    let stack = Stack::start_on(policies.path()).await;
    let redis = Redis::start();

    // Revocation and single use: limits off, GitHub tokens single-use.
    let a = replicas(&stack, &redis, "a", |cfg| {
        cfg.limits.single_use.insert("github".into());
    })
    .await;
    let t1 = fresh(&stack);
    let (status, _, body) = exchange(&a[0], &t1).await;
    assert_eq!(status, 200, "{body}");
    let rid = body["request_id"].as_str().unwrap().to_owned();
    let handle = body["revocation"]["handle"].as_str().unwrap().to_owned();
    let (status, _, body) = revoke(&a[1], &handle, &rid).await;
    assert_eq!(status, 200, "an exchange at a0 is revoked at a1: {body}");
    let (status, _, body) = revoke(&a[2], &handle, &rid).await;
    assert_eq!(
        (status, code(&body)),
        (404, Some("unknown_exchange")),
        "taken once, for every replica: {body}"
    );
    for b in &a {
        let (status, _, body) = exchange(b, &t1).await;
        assert_eq!(
            (status, code(&body)),
            (401, Some("token_replayed")),
            "spent at a0, refused everywhere: {body}"
        );
    }
    // Revoking with the job's own (spent) ID token still works: a
    // revocation spends nothing.
    let t2 = fresh(&stack);
    let (status, _, body) = exchange(&a[2], &t2).await;
    assert_eq!(status, 200, "{body}");
    let rid2 = body["request_id"].as_str().unwrap().to_owned();
    let (status, _, body) = revoke(&a[0], &t2, &rid2).await;
    assert_eq!(status, 200, "revoked with the spent token: {body}");
    // A token of an issuer without single_use can be exchanged twice.
    let gl = stack.gitlab_token();
    for b in &a[..2] {
        let (status, _, body) = post(
            &b.url,
            "/v1/exchange",
            &gl,
            &json!({"environment": "staging"}).to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    // Limits shared: 4 per minute per identity, spread over three replicas.
    let b = replicas(&stack, &redis, "b", |cfg| {
        cfg.limits.per_identity = Rate::parse("4/min", None).unwrap();
    })
    .await;
    let mut seen = Vec::new();
    for i in 0..6 {
        let (status, retry, body) = exchange(&b[i % 3], &fresh(&stack)).await;
        if status == 429 {
            assert_eq!(code(&body), Some("rate_limited"), "{body}");
            let secs: u64 = retry.expect("Retry-After").parse().unwrap();
            assert!((1..=15).contains(&secs), "whole seconds: {secs}");
        }
        seen.push(status);
    }
    assert_eq!(seen, [200, 200, 200, 200, 429, 429], "the limit is shared");
    // Per source, before the token is even looked at.
    let c = replicas(&stack, &redis, "c", |cfg| {
        cfg.limits.per_source = Rate::parse("3/min", None).unwrap();
    })
    .await;
    let mut seen = Vec::new();
    for i in 0..5 {
        let (status, _, body) = exchange(&c[i % 3], "not-a-token").await;
        seen.push((status, code(&body).map(str::to_owned)));
    }
    let malformed = seen[0].clone();
    assert_eq!(malformed.0, 401, "{seen:?}");
    let limited = (429, Some("rate_limited".to_owned()));
    assert_eq!(
        seen,
        [
            malformed.clone(),
            malformed.clone(),
            malformed,
            limited.clone(),
            limited
        ]
    );

    // Each replica's audit log names it on every line; the refusals are
    // audited at their stage.
    for (group, name) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        for (i, r) in group.iter().enumerate() {
            let lines = audit_lines(&r.audit_path);
            assert!(!lines.is_empty());
            for l in &lines {
                assert_eq!(l["replica"], format!("{name}{i}"), "{l}");
            }
        }
    }
    let a1 = audit_lines(&a[1].audit_path);
    assert!(
        a1.iter()
            .any(|l| l["code"] == "token_replayed" && l["stage"] == "replay"),
        "{a1:?}"
    );
    let limited_lines: Vec<Value> = b
        .iter()
        .chain(&c)
        .flat_map(|r| audit_lines(&r.audit_path))
        .filter(|l| l["code"] == "rate_limited")
        .collect();
    assert!(
        limited_lines.iter().all(|l| l["stage"] == "rate_limit"),
        "{limited_lines:?}"
    );
    assert!(
        limited_lines
            .iter()
            .any(|l| l["reason"]["limit"] == "identity")
    );
    assert!(
        limited_lines
            .iter()
            .any(|l| l["reason"]["limit"] == "source")
    );

    // A policy change reaches every replica (each watches the directory).
    let file = policies.path().join("production.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let release = original.replace("ref: refs/heads/main", "ref: refs/heads/release");
    assert_ne!(original, release);
    std::fs::write(&file, &release).unwrap();
    for r in &a {
        let stack = &stack;
        eventually("the policy change at every replica", 10, || async move {
            match exchange(r, &fresh(stack)).await {
                (403, _, _) => Ok(()),
                (s, _, body) => Err(format!("{s} {body}")),
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_refuses_single_use_limits_locally_and_recovers() {
    let stack = Stack::start_revocable().await;
    let mut redis = Redis::start();
    let r = Broker::start(&stack, "outage", |cfg| {
        cfg.state = Some(StateSettings {
            redis_url: redis.url(),
            key_prefix: "outage:".into(),
            timeout: Duration::from_secs(1),
        });
        cfg.limits.single_use.insert("github".into());
        cfg.limits.per_source = Rate::parse("8/min", None).unwrap();
    })
    .await;
    let (status, _, body) = exchange(&r, &fresh(&stack)).await;
    assert_eq!(status, 200, "{body}");
    let rid = body["request_id"].as_str().unwrap().to_owned();
    let handle = body["revocation"]["handle"].as_str().unwrap().to_owned();

    redis.stop();
    // Replay protection fails closed.
    let (status, retry, body) = exchange(&r, &fresh(&stack)).await;
    assert_eq!(
        (status, code(&body)),
        (503, Some("state_unavailable")),
        "{body}"
    );
    assert_eq!(retry.as_deref(), Some("5"));
    // The exchange store refuses (as before).
    let (status, _, body) = revoke(&r, &handle, &rid).await;
    assert_eq!(
        (status, code(&body)),
        (503, Some("lease_store_unavailable")),
        "{body}"
    );
    // Rate limits fail open, onto this replica's own table: the same
    // 8/min, counted here (two requests so far).
    for _ in 0..6 {
        let (status, _, body) = exchange(&r, "not-a-token").await;
        assert_eq!(status, 401, "not refused for want of Redis: {body}");
    }
    let (status, retry, body) = exchange(&r, "not-a-token").await;
    assert_eq!((status, code(&body)), (429, Some("rate_limited")), "{body}");
    assert!(retry.is_some());
    let lines = audit_lines(&r.audit_path);
    assert!(
        lines.iter().any(|l| l["code"] == "state_unavailable"
            && l["stage"] == "replay"
            && l["decision"] == "error"),
        "{lines:?}"
    );

    // Redis back (empty): everything works again without a restart.
    redis.restart();
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    {
        let (r, stack, last) = (&r, &stack, last.clone());
        eventually("exchanges after Redis is back", 30, move || {
            let last = last.clone();
            async move {
                let token = fresh(stack);
                match exchange(r, &token).await {
                    (200, _, body) => {
                        *last.lock().unwrap() = Some((token, body));
                        Ok(())
                    }
                    (s, _, body) => Err(format!("{s} {body}")),
                }
            }
        })
        .await;
    }
    let (token, body) = last.lock().unwrap().take().unwrap();
    let (status, _, replay) = exchange(&r, &token).await;
    assert_eq!(
        (status, code(&replay)),
        (401, Some("token_replayed")),
        "{replay}"
    );
    let (status, _, revoked) = revoke(
        &r,
        body["revocation"]["handle"].as_str().unwrap(),
        body["request_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{revoked}");
}
