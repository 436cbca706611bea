//! What each dependency's outage does, against the real parts: OpenBao
//! killed during a load run, an issuer's JWKS endpoint down (past
//! `max_key_age`), a dedicated Redis stopped and restarted, and SIGTERM to
//! the real binary during load. Nothing may be issued without its audit
//! line and its exchange record. Every load loop is bounded in count and
//! time, and all traffic stays on loopback.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobkey::Shape;
use serde_json::{Map, Value, json};

use crate::broker_support::{Broker, Process, audit_lines, config_text, free_port, post};
use crate::support::{Options, Stack, engines, random};

/// Two credentials per exchange: a database user (a Vault lease) and a KV
/// secret, so a partial set would show.
const CREDENTIALS: &str = "  db:\n    database: {role: app}\n    ttl: 10m\n  cfg:\n    kv: {mount: secret, path: production/deploy-db}\n    ttl: 10m\n";

fn seed(bao: &crate::support::OpenBao) {
    engines::database(bao);
    bao.put_deploy_db("from-the-reseed");
}

async fn start_with_leases(redis_prefix: Option<String>) -> Stack {
    Stack::start_with(Options {
        setup: Some(Box::new(|bao| {
            engines::database(bao);
            engines::policy_dir(bao.dir(), CREDENTIALS)
        })),
        redis_prefix,
        ..Default::default()
    })
    .await
}

fn body() -> String {
    json!({"environment": "production", "credentials": ["db", "cfg"], "ttl": "5m"}).to_string()
}

/// A 200's credential set is whole: both credentials, each with values.
fn assert_whole(resp: &Value) {
    let creds = resp["credentials"].as_object().unwrap();
    let mut names: Vec<&str> = creds.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["cfg", "db"], "a whole set: {names:?}");
    assert!(creds["db"]["values"]["password"].is_string());
    assert!(creds["cfg"]["values"]["password"].is_string());
}

/// The allow lines of an audit log, by request id.
fn allowed_ids(path: &Path) -> Vec<String> {
    audit_lines(path)
        .iter()
        .filter(|l| l["action"] == "exchange" && l["decision"] == "allow")
        .map(|l| l["request_id"].as_str().unwrap().to_owned())
        .collect()
}

/// `redis-cli -p PORT GET key`: the value, if any.
fn redis_get(port: u16, key: &str) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "GET", key])
        .output()
        .unwrap();
    assert!(out.status.success(), "redis-cli on :{port}");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!text.is_empty()).then_some(text)
}

/// The exchange record of `request_id` holds exactly one database lease.
fn assert_recorded(port: u16, prefix: &str, request_id: &str) {
    let key = format!("{prefix}exchange:{request_id}");
    let rec = redis_get(port, &key).unwrap_or_else(|| panic!("no record {key}"));
    let rec: Value = serde_json::from_str(&rec).unwrap();
    let revocables = rec["revocables"].as_array().unwrap();
    assert_eq!(revocables.len(), 1, "{rec}");
    assert!(
        revocables[0].to_string().contains("database/creds/app/"),
        "{rec}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_killed_during_load_answers_200_or_503_and_nothing_is_issued_unaudited() {
    let prefix = format!("jobkey-fault-{}:", random(10));
    let mut stack = start_with_leases(Some(prefix.clone())).await;
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, jwt) = (stack.url.clone(), stack.github_token(json!({})));
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            // At most 40 requests or 6 s per client.
            for _ in 0..40 {
                if started.elapsed() > Duration::from_secs(6) {
                    break;
                }
                answers.push(post(&url, "/v1/exchange", &jwt, &body()).await);
            }
            answers
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.bao.stop();
    let mut answers = Vec::new();
    for c in clients {
        answers.extend(c.await.unwrap());
    }
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(s, _, _)| *s == 200)
        .map(|(_, _, v)| v)
        .collect();
    let unavailable = answers.iter().filter(|(s, _, _)| *s == 503).count();
    assert!(!ok.is_empty(), "exchanges succeeded before the kill");
    assert!(unavailable > 0, "exchanges failed after the kill");
    for (status, retry, resp) in &answers {
        match status {
            200 => assert_whole(resp),
            503 => {
                assert_eq!(retry.as_deref(), Some("5"), "{resp}");
                assert_eq!(resp["error"], "vault_unavailable", "{resp}");
                assert!(resp.get("credentials").is_none());
            }
            other => panic!("{other}: {resp}"),
        }
    }
    // Each 200 has its allow line and its lease in the exchange store.
    let allowed = allowed_ids(&stack.audit_path);
    for resp in &ok {
        let id = resp["request_id"].as_str().unwrap();
        assert!(allowed.iter().any(|a| a == id), "{id} has no allow line");
        assert_recorded(6379, &prefix, id);
    }
    assert_eq!(allowed.len(), ok.len(), "no allow line without its 200");
    jobkey::verify_file(&stack.audit_path).unwrap();

    // OpenBao back (a dev server starts empty: seed it again); the same
    // jobkey serves again, without a restart.
    stack.bao.restart();
    seed(&stack.bao);
    let jwt = stack.github_token(json!({}));
    let mut recovered = None;
    for _ in 0..80 {
        let (status, _, resp) = post(&stack.url, "/v1/exchange", &jwt, &body()).await;
        if status == 200 {
            recovered = Some(resp);
            break;
        }
        assert_eq!(
            (status, resp["error"].as_str()),
            (503, Some("vault_unavailable"))
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let resp = recovered.expect("exchanges succeed again after OpenBao is back");
    assert_whole(&resp);
    assert_eq!(
        resp["credentials"]["cfg"]["values"]["password"],
        "from-the-reseed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_keys_serve_through_a_jwks_outage_past_max_key_age() {
    let stack = Stack::start().await;
    let broker = Broker::start(&stack, "jwks-down", |cfg| {
        cfg.fetch.max_key_age = Duration::from_secs(2);
        cfg.fetch.min_refetch_interval = Duration::from_millis(200);
    })
    .await;
    let body = json!({"environment": "production", "credentials": ["deploy-db"]}).to_string();
    let token = |stack: &Stack| stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let (status, _, resp) = post(&broker.url, "/v1/exchange", &token(&stack), &body).await;
    assert_eq!(status, 200, "{resp}");

    stack.github.set_jwks_failing(true);
    let fetches = stack.github.jwks_fetches();
    // Well past max_key_age (2 s): refreshes were tried and failed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        stack.github.jwks_fetches() > fetches,
        "refreshes were tried"
    );
    // A token signed with a cached key is still served.
    let (status, _, resp) = post(&broker.url, "/v1/exchange", &token(&stack), &body).await;
    assert_eq!(status, 200, "cached keys keep serving: {resp}");
    // A key the issuer published during the outage cannot be learnt: its
    // tokens are refused as signed with an unknown key.
    let old = crate::support::rsa_key("issuer-a", "gh-1");
    let new = crate::support::rsa_key("issuer-b", "gh-2");
    stack.github.publish(vec![new, old]);
    let rotated = token(&stack);
    let (status, _, resp) = post(&broker.url, "/v1/exchange", &rotated, &body).await;
    assert_eq!(
        (status, resp["error"].as_str()),
        (401, Some("unknown_key")),
        "{resp}"
    );
    // A jobkey started during the outage has no keys: 503 with Retry-After.
    let cold = Broker::start(&stack, "jwks-down-cold", |_| {}).await;
    let (status, retry, resp) = post(&cold.url, "/v1/exchange", &token(&stack), &body).await;
    assert_eq!(
        (status, retry.as_deref(), resp["error"].as_str()),
        (503, Some("5"), Some("issuer_unavailable")),
        "{resp}"
    );

    // The endpoint back: the new key is fetched on its first use (its kid
    // was never found missing by a fetch that succeeded).
    stack.github.set_jwks_failing(false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, resp) = post(&broker.url, "/v1/exchange", &rotated, &body).await;
    assert_eq!(status, 200, "the new key is fetched on first use: {resp}");
}

/// A redis-server of this test's own, on a free port, persisting to `dir`.
fn redis_server(port: u16, dir: &Path) -> Redis {
    let redis = Redis(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..100 {
        let ping = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&ping.stdout).trim() == "PONG" {
            return redis;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-server on :{port} did not start");
}

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_503_lease_store_unavailable_with_nothing_left_unrecorded() {
    let stack = start_with_leases(None).await;
    let port = free_port();
    let redis_dir = tempfile::tempdir().unwrap();
    let mut redis = redis_server(port, redis_dir.path());
    let prefix = "jobkey-fault:";
    let state = format!(
        "[state]\nredis_url = \"redis://127.0.0.1:{port}\"\nkey_prefix = \"{prefix}\"\ntimeout = \"1s\"\n"
    );
    let broker = Broker::start_with_tables(&stack, "redis-down", &state, |_| {}).await;
    let jwt = stack.github_token(json!({}));
    let (status, _, before) = post(&broker.url, "/v1/exchange", &jwt, &body()).await;
    assert_eq!(status, 200, "{before}");

    let _ = redis.0.kill();
    let _ = redis.0.wait();
    for _ in 0..3 {
        let (status, retry, resp) = post(&broker.url, "/v1/exchange", &jwt, &body()).await;
        assert_eq!(
            (status, retry.as_deref(), resp["error"].as_str()),
            (503, Some("5"), Some("lease_store_unavailable")),
            "{resp}"
        );
        assert!(resp.get("credentials").is_none());
    }
    // What those exchanges issued was revoked: the only lease under the
    // role is the one recorded before the outage.
    assert_eq!(
        stack.bao.leases("database/creds/app").len(),
        1,
        "the failed exchanges' leases are revoked"
    );
    let lines = audit_lines(&broker.audit_path);
    let store_errors = lines
        .iter()
        .filter(|l| l["stage"] == "lease_store" && l["code"] == "lease_store_unavailable")
        .count();
    assert!(store_errors >= 1, "the outage is audited: {lines:?}");

    // Redis back on the same port (its append-only file kept the record):
    // the same jobkey serves again.
    redis = redis_server(port, redis_dir.path());
    let mut after = None;
    for _ in 0..40 {
        let (status, _, resp) = post(&broker.url, "/v1/exchange", &jwt, &body()).await;
        if status == 200 {
            after = Some(resp);
            break;
        }
        assert_eq!(resp["error"], "lease_store_unavailable", "{resp}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = after.expect("exchanges succeed again after Redis is back");
    for resp in [&before, &after] {
        assert_whole(resp);
        assert_recorded(port, prefix, resp["request_id"].as_str().unwrap());
    }
    assert_eq!(stack.bao.leases("database/creds/app").len(), 2);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_finishes_what_is_in_flight_and_exits_promptly() {
    let stack = Stack::start().await;
    let port = free_port();
    let audit = stack.dir.path().join("sigterm/audit.jsonl");
    let config = stack.dir.path().join("sigterm.toml");
    std::fs::write(&config, config_text(&stack, port, &audit, "", "")).unwrap();
    let mut process = Process::start(&config, port, "").await;
    let body = json!({"environment": "production", "credentials": ["deploy-db"]}).to_string();

    // Eight exchanges held in flight: OpenBao is frozen while they run.
    stack.bao.pause();
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, jwt, body) = (
            process.url.clone(),
            stack.github_token(json!({})),
            body.clone(),
        );
        clients.push(tokio::spawn(async move {
            post(&url, "/v1/exchange", &jwt, &body).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &process.pid().to_string()])
            .status()
            .unwrap()
            .success()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "no new connection after SIGTERM"
    );
    stack.bao.resume();
    for c in clients {
        let (status, _, resp) = c.await.unwrap();
        assert_eq!(status, 200, "the exchange in flight finishes: {resp}");
        assert!(resp["credentials"]["deploy-db"]["values"]["password"].is_string());
    }
    let exited = loop {
        if let Some(status) = process.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exited.success(), "{exited:?}: {}", process.log());
    let took = signalled.elapsed();
    eprintln!("jobkey exited {took:?} after SIGTERM");
    let verified = jobkey::verify_file(&audit).unwrap();
    // Eight allow lines and the signed checkpoint written at shutdown.
    assert_eq!(
        verified.lines, 9,
        "eight allow lines and a checkpoint, chained"
    );
    assert_eq!(allowed_ids(&audit).len(), 8);
}
