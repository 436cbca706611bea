//! The audit log under attack and after accidents: a flood of junk
//! requests leaves it small; a full disk gives `503 audit_unavailable`
//! and appends resume without a restart; a torn last line is set aside at
//! start-up, kept beside the log, and recorded.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jobkey::Shape;
use serde_json::{Map, Value, json};

use crate::broker_support::{
    Broker, Process, audit_lines, config_text, eventually, free_port, post,
};
use crate::support::{Stack, random};

/// A JWT-shaped token for the GitHub stand-in's URL, every audited claim
/// stuffed with 600 bytes, and a signature that does not verify.
fn junk_token(stack: &Stack, i: usize) -> String {
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let stuffing = format!("{i}-{}", "x".repeat(600));
    let mut claims = Map::new();
    for name in [
        "sub",
        "jti",
        "repository",
        "repository_owner",
        "ref",
        "sha",
        "environment",
        "workflow_ref",
        "job_workflow_ref",
        "actor",
        "run_id",
    ] {
        claims.insert(name.into(), json!(stuffing));
    }
    claims.insert("iss".into(), json!(stack.github.url()));
    claims.insert("aud".into(), json!("jobkey"));
    format!(
        "{}.{}.{}",
        enc(json!({"alg": "RS256", "kid": "gh-1", "typ": "JWT"})),
        enc(Value::Object(claims)),
        URL_SAFE_NO_PAD.encode(random(256))
    )
}

/// A body just under the 64 KiB limit: a long environment and many
/// credential names.
fn big_body(i: usize) -> String {
    let names: Vec<String> = (0..200)
        .map(|n| format!("cred-{i}-{n}-{}", "n".repeat(150)))
        .collect();
    let body =
        json!({"environment": format!("env-{i}-{}", "e".repeat(25_000)), "credentials": names})
            .to_string();
    assert!((55_000..64 * 1024).contains(&body.len()), "{}", body.len());
    body
}

/// The refusal window of the flood test.
const WINDOW: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_tokens_and_handles_leaves_the_audit_log_small() {
    let stack = Stack::start().await;
    let broker = Broker::start(&stack, "flood", |cfg| {
        cfg.audit_settings.refusals.window = WINDOW;
    })
    .await;
    let started = Instant::now();
    const EXCHANGES: usize = 2000;
    const REVOCATIONS: usize = 1000;
    // Junk exchanges, 16 at a time.
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for i in 0..EXCHANGES {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (url, token, body) = (broker.url.clone(), junk_token(&stack, i), big_body(i));
        tasks.push(tokio::spawn(async move {
            let (status, _, resp) = post(&url, "/v1/exchange", &token, &body).await;
            drop(permit);
            (status, resp["error"].as_str().map(str::to_owned))
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), (401, Some("bad_signature".to_owned())));
    }
    // Revocations with made-up handles, each naming another exchange.
    for i in 0..REVOCATIONS {
        let (status, _, resp) = post(
            &broker.url,
            "/v1/revoke",
            &format!("jkr_{}", random(43)),
            &json!({"request_id": format!("{i}-{}", "r".repeat(100))}).to_string(),
        )
        .await;
        assert_eq!(
            (status, resp["error"].as_str()),
            (404, Some("unknown_exchange"))
        );
    }
    let flood_time = started.elapsed();

    // Small: per window, one full line and one summary per (source,
    // stage, code), however many requests came. Two keys here (the junk
    // tokens, the made-up handles); a window may have ended mid-flood.
    let windows = flood_time.as_secs() / WINDOW.as_secs() + 2;
    let bound = windows * 2 * 17 * 1024;
    let bytes = std::fs::metadata(&broker.audit_path).unwrap().len();
    let lines = audit_lines(&broker.audit_path);
    assert!(
        bytes < bound,
        "{} requests in {flood_time:?} left {bytes} bytes in {} lines (bound {bound})",
        EXCHANGES + REVOCATIONS,
        lines.len()
    );
    for l in &lines {
        assert!(l.to_string().len() < 16 * 1024, "a line is bounded: {l}");
    }
    let first = lines
        .iter()
        .find(|l| l["code"] == "bad_signature" && l["action"] == "exchange")
        .expect("the first refusal is written in full");
    assert_eq!(first["source"], "127.0.0.1");
    assert_eq!(first["identity"]["verified"], false);

    // After the window, every refusal is accounted for: written, or
    // counted in a summary.
    let path = broker.audit_path.clone();
    eventually("the summaries of the flood", 30, || {
        let path = path.clone();
        async move {
            let lines = audit_lines(&path);
            let total = |action: &str| -> u64 {
                lines
                    .iter()
                    .map(|l| match l["action"].as_str() {
                        Some(a) if a == action => 1,
                        Some("refusals_summarized") if l["summary"]["of"] == action => {
                            l["summary"]["count"].as_u64().unwrap()
                        }
                        _ => 0,
                    })
                    .sum()
            };
            let (x, r) = (total("exchange"), total("revoke"));
            if (x, r) == (EXCHANGES as u64, REVOCATIONS as u64) {
                Ok(())
            } else {
                Err(format!("{x} exchanges, {r} revocations accounted for"))
            }
        }
    })
    .await;
    let lines = audit_lines(&broker.audit_path);
    let summary = lines
        .iter()
        .find(|l| l["action"] == "refusals_summarized" && l["summary"]["of"] == "exchange")
        .unwrap();
    assert_eq!(
        (
            &summary["decision"],
            &summary["stage"],
            &summary["code"],
            &summary["source"]
        ),
        (
            &json!("deny"),
            &json!("token"),
            &json!("bad_signature"),
            &json!("127.0.0.1")
        )
    );
    assert!(summary["summary"]["first_request_id"].is_string());
    assert!(
        lines.len() as u64 <= (windows + 1) * 2 * 2,
        "a line and a summary per key and window: {}",
        lines.len()
    );
    let report = jobkey::verify_file(&broker.audit_path).unwrap();
    assert_eq!((report.lines as usize, report.torn), (lines.len(), None));

    // The broker still serves a real job.
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let (status, _, resp) = post(
        &broker.url,
        "/v1/exchange",
        &gh,
        &json!({"environment": "production"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
}

/// `prlimit` on a running process: its largest file size.
fn set_file_size_limit(pid: u32, limit: &str) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={limit}")])
        .status()
        .expect("prlimit (util-linux) is needed");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503_and_appends_resume_without_restart() {
    let stack = Stack::start().await;
    let port = free_port();
    let dir = stack.dir.path().join("full");
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let config = dir.join("jobkey.toml");
    std::fs::write(
        &config,
        config_text(&stack, port, &audit, "sync_interval = \"200ms\"", ""),
    )
    .unwrap();
    // The shell ignores SIGXFSZ, and jobkey inherits that: a write past the
    // file size limit fails with EFBIG instead of killing the process, as
    // a write to a full disk fails with ENOSPC. jobkey's own log is a file
    // under the same limit, as it would be on the same disk.
    let log = dir.join("jobkey.log");
    let jobkey = Process::start_logging_to(&config, port, "trap '' XFSZ;", Some(&log)).await;
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let body = json!({"environment": "production"}).to_string();
    let (status, _, resp) = post(&jobkey.url, "/v1/exchange", &gh, &body).await;
    assert_eq!(status, 200, "{resp}");
    let good = std::fs::metadata(&audit).unwrap().len();

    // The disk is "full" 100 bytes further: the next line is cut off.
    set_file_size_limit(jobkey.pid(), &format!("{}:unlimited", good + 100));
    for _ in 0..2 {
        let (status, retry, resp) = post(&jobkey.url, "/v1/exchange", &gh, &body).await;
        assert_eq!(
            (status, resp["error"].as_str()),
            (503, Some("audit_unavailable")),
            "{resp}"
        );
        assert!(resp.get("credentials").is_none());
        assert_eq!(retry.as_deref(), Some("5"));
    }
    assert_eq!(
        std::fs::metadata(&audit).unwrap().len(),
        good,
        "the file is cut back to its last good record"
    );
    let r = jobkey::verify_file(&audit).unwrap();
    assert_eq!((r.lines, r.torn), (1, None));
    let ready = reqwest::get(format!("{}/readyz", jobkey.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        (&ready["status"], &ready["audit"]),
        (&json!("not_ready"), &json!("unwritable"))
    );

    // Space again: the same process issues again, no restart.
    set_file_size_limit(jobkey.pid(), "unlimited:unlimited");
    let url = jobkey.url.clone();
    eventually("an exchange after the disk has room again", 10, || {
        let (url, gh, body) = (url.clone(), gh.clone(), body.clone());
        async move {
            match post(&url, "/v1/exchange", &gh, &body).await {
                (200, _, _) => Ok(()),
                (s, _, r) => Err(format!("{s} {r}")),
            }
        }
    })
    .await;
    let r = jobkey::verify_file(&audit).unwrap();
    assert_eq!(r.torn, None);
    let lines = audit_lines(&audit);
    assert_eq!(lines[0]["decision"], "allow");
    assert_eq!(lines[1]["action"], "log_resumed", "{lines:#?}");
    assert!(
        lines[1]["outage"]["refused"].as_u64().unwrap() >= 2,
        "{}",
        lines[1]
    );
    assert_eq!(lines.last().unwrap()["decision"], "allow");
    let ready = reqwest::get(format!("{}/readyz", jobkey.url))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let mut jobkey = jobkey;
    assert!(
        jobkey.child.try_wait().unwrap().is_none(),
        "the same process"
    );
}

/// Runs `jobkey <args>`: (exit code, stdout, stderr).
fn jobkey_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_restarts_cleanly_and_is_kept_beside_the_log() {
    let stack = Stack::start().await;
    let port = free_port();
    let dir = stack.dir.path().join("torn");
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let config = dir.join("jobkey.toml");
    std::fs::write(&config, config_text(&stack, port, &audit, "", "")).unwrap();
    let gh = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let body = json!({"environment": "production"}).to_string();

    let jobkey = Process::start(&config, port, "").await;
    assert_eq!(post(&jobkey.url, "/v1/exchange", &gh, &body).await.0, 200);
    jobkey.terminate();
    // A crash in the middle of the next line.
    let torn = br#"{"action":"exchange","decision":"allow","hash":"3f2a"#;
    let mut text = std::fs::read(&audit).unwrap();
    text.extend_from_slice(torn);
    std::fs::write(&audit, &text).unwrap();
    let audit_s = audit.to_str().unwrap();
    let (code, out, err) = jobkey_cli(&["audit", "verify", audit_s]);
    assert_eq!(code, 0, "{out}{err}");
    // The exchange, and the checkpoint that closed the log at shutdown.
    assert!(out.contains("2 records, chain intact"), "{out}");
    assert!(err.contains("line 3") && err.contains("torn"), "{err}");

    // It starts, sets the torn bytes aside, records that, and serves.
    let jobkey = Process::start(&config, port, "").await;
    let aside: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("audit.jsonl.torn-")
        })
        .collect();
    let [aside] = aside.as_slice() else {
        panic!("{aside:?}")
    };
    assert_eq!(
        std::fs::read(aside).unwrap(),
        torn,
        "the torn bytes are kept"
    );
    assert_eq!(post(&jobkey.url, "/v1/exchange", &gh, &body).await.0, 200);
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[1]["action"], "checkpoint");
    assert_eq!(lines[2]["action"], "log_recovered");
    assert_eq!(lines[2]["prev"], lines[1]["hash"]);
    assert_eq!(
        lines[2]["recovery"]["set_aside"],
        aside.file_name().unwrap().to_string_lossy().as_ref()
    );
    assert_eq!(lines[2]["recovery"]["bytes"], torn.len());
    assert_eq!(lines[3]["decision"], "allow");
    let (code, out, err) = jobkey_cli(&["audit", "verify", audit_s]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("4 records, chain intact") && err.is_empty(),
        "{out}{err}"
    );
    jobkey.terminate();

    // Damage before the last line is not a torn write: jobkey refuses to
    // start, and verify fails.
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(&audit, text.replacen("\"allow\"", "\"deny\"", 1)).unwrap();
    let (code, _, err) = jobkey_cli(&["audit", "verify", audit_s]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 1"), "{err}");
    let mut refused = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut status = None;
    for _ in 0..100 {
        status = refused.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(status) = status else {
        let _ = refused.kill();
        panic!("jobkey started on a log damaged before its last line");
    };
    assert!(!status.success());
}
