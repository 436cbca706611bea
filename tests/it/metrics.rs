//! `/metrics` against the real binary (its registry is the process's own):
//! the series after real exchanges, a bounded number of series whatever
//! environments jobs name, a real Prometheus scraping jobkey and answering
//! queries, the separate `[metrics] listen` listener, and `/readyz` with the
//! exchange store.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

use crate::broker_support::{Process, config_text, eventually, free_port};
use crate::support::{Options, Stack, random};

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(format!("{url}/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    resp.text().await.unwrap()
}

/// Each series' name and labels, without its value.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned())
        .collect()
}

/// The value of the series `name` exactly (name and labels).
fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_are_counted_and_random_environments_add_no_series() {
    let stack = Stack::start_with(Options {
        subprocess: true,
        redis_prefix: Some(format!("jobkey-test-{}:", random(8))),
        ..Options::default()
    })
    .await;
    let token = stack.github_token(json!({}));
    let (status, _) = stack.exchange_status(&token, "production").await;
    assert_eq!(status, 200);
    let (status, _) = stack.exchange_status(&token, "no-such-env").await;
    assert_eq!(status, 403);
    let text = scrape(&stack.url).await;
    for want in [
        (
            "jobkey_exchanges_total{environment=\"production\",decision=\"allow\",code=\"ok\"}",
            1.0,
        ),
        (
            "jobkey_exchanges_total{environment=\"unknown\",decision=\"deny\",code=\"unknown_environment\"}",
            1.0,
        ),
        (
            "jobkey_vault_requests_total{kind=\"kv_read\",outcome=\"success\"}",
            1.0,
        ),
        (
            "jobkey_jwks_fetches_total{issuer=\"github\",outcome=\"success\"}",
            1.0,
        ),
        ("jobkey_audit_appends_total{outcome=\"success\"}", 2.0),
        ("jobkey_exchange_duration_seconds_count", 2.0),
        ("jobkey_requests_in_flight", 1.0),
    ] {
        let got = value(&text, want.0);
        assert!(
            got.is_some_and(|v| v >= want.1),
            "{} = {got:?}, want at least {}\n{text}",
            want.0,
            want.1
        );
    }
    assert!(value(&text, "jobkey_policy_loaded_timestamp_seconds").unwrap() > 1.0e9);
    // The KV value's hints were computed once (a miss) and are kept; the
    // same value in the next exchange is a hit.
    let misses = "jobkey_mask_cache_lookups_total{result=\"miss\"}";
    assert!(value(&text, misses).is_some_and(|v| v >= 1.0), "{text}");
    assert!(value(&text, "jobkey_mask_cache_bytes").is_some_and(|v| v > 0.0));
    let (status, _) = stack.exchange_status(&token, "production").await;
    assert_eq!(status, 200);
    let text = scrape(&stack.url).await;
    let hits = "jobkey_mask_cache_lookups_total{result=\"hit\"}";
    assert!(value(&text, hits).is_some_and(|v| v >= 1.0), "{text}");
    // The environment a job names is a label only when a policy names it.
    assert!(!text.contains("no-such-env"), "{text}");

    let before = series(&text);
    for _ in 0..1000 {
        let env = format!("env-{}", random(12));
        let (status, _) = stack.exchange_status(&token, &env).await;
        assert_eq!(status, 403);
    }
    let text = scrape(&stack.url).await;
    let after = series(&text);
    let added: Vec<_> = after.difference(&before).collect();
    assert!(added.is_empty(), "new series: {added:?}");
    let denied = "jobkey_exchanges_total{environment=\"unknown\",decision=\"deny\",code=\"unknown_environment\"}";
    assert!(value(&text, denied).unwrap() >= 1001.0, "{text}");

    // /readyz names the exchange store (Redis here) as ready.
    let (status, ready) = stack.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["store"], "ready", "{ready}");
}

/// A Prometheus on a free loopback port, scraping `target` every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let binary = std::env::var("JOBKEY_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: jobkey\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {binary} ({e}): run scripts/ensure-prometheus.sh (make test does), or set JOBKEY_PROMETHEUS")
            });
        let url = format!("http://127.0.0.1:{port}");
        let p = Prometheus {
            child,
            url,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", p.url);
        eventually("Prometheus is ready", 30, || {
            let ready = ready.clone();
            async move {
                match reqwest::get(&ready).await {
                    Ok(r) if r.status() == 200 => Ok(()),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await;
        p
    }

    /// The query's result vector.
    async fn query(&self, q: &str) -> Vec<Value> {
        let resp: Value = reqwest::Client::new()
            .get(format!(
                "{}/api/v1/query?query={}",
                self.url,
                percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(resp["status"], "success", "{resp}");
        resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_metrics_listener() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let config = dir.path().join("jobkey.toml");
    let text = config_text(
        &stack,
        port,
        &dir.path().join("audit.jsonl"),
        "",
        &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let jobkey = Process::start(&config, port, "").await;
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    // /metrics moved to its own listener: the main one no longer has it.
    let main = reqwest::get(format!("{}/metrics", jobkey.url))
        .await
        .unwrap();
    assert_eq!(main.status(), 404);
    scrape(&metrics_url).await;

    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics_port}")).await;
    let token = stack.github_token(json!({}));
    for env in ["production", "production", "staging-nope"] {
        let (status, _, _) = crate::broker_support::post(
            &jobkey.url,
            "/v1/exchange",
            &token,
            &json!({"environment": env}).to_string(),
        )
        .await;
        assert!(status == 200 || status == 403, "{status}");
    }
    let q = "jobkey_exchanges_total{environment=\"production\",decision=\"allow\"}";
    eventually("Prometheus has the exchanges", 30, || async {
        let result = prometheus.query(q).await;
        match result.first().map(|r| r["value"][1].clone()) {
            Some(Value::String(v)) if v == "2" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let up = prometheus.query("up{job=\"jobkey\"}").await;
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    let unknown = prometheus
        .query("jobkey_exchanges_total{environment=\"unknown\"}")
        .await;
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    let histogram = prometheus
        .query("jobkey_exchange_duration_seconds_count")
        .await;
    assert_eq!(histogram[0]["value"][1], "3", "{histogram:?}");
    drop(jobkey);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_when_the_exchange_store_stops_answering() {
    let stack = Stack::start().await;
    let port = free_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}");
    let mut connected = false;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            connected = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(connected, "redis-server did not start");
    let broker = crate::broker_support::Broker::start(&stack, "store", |cfg| {
        cfg.state = Some(jobkey::StateSettings {
            redis_url: url.clone(),
            key_prefix: "jobkey-ready:".into(),
            timeout: std::time::Duration::from_secs(1),
        });
    })
    .await;
    let readyz = format!("{}/readyz", broker.url);
    let (status, body) = get(&readyz).await;
    assert_eq!(
        (status, body["store"].as_str()),
        (200, Some("ready")),
        "{body}"
    );
    let _ = redis.kill();
    let _ = redis.wait();
    eventually("/readyz reports the store", 20, || async {
        let (status, body) = get(&readyz).await;
        if status == 503
            && body["store"] == "not_ready"
            && body["reason"] == "the exchange store does not answer"
        {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
}

async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url).await.unwrap();
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}
