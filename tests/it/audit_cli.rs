//! `jobkey audit find` and `jobkey audit verify` through the binary: the
//! output formats and the exit statuses scripts rely on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use jobkey::{AuditLog, Event, Fingerprinter, IssuedCredential};
use serde_json::Value;

/// Runs `jobkey <args>` with `stdin`: (exit code, stdout, stderr).
fn jobkey(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before it reads stdin (a usage error).
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A log with one allowed exchange that issued `value`: (log, key).
fn log_with(dir: &Path, value: &str) -> (PathBuf, PathBuf) {
    let log = dir.join("audit.jsonl");
    let key = dir.join("audit.key");
    let fp = Fingerprinter::load_or_create(&key).unwrap();
    let issued = IssuedCredential {
        name: "deploy-db".into(),
        rule: "github-api-deploy".into(),
        kind: "kv".into(),
        ttl_s: 300,
        wrapped: false,
        fingerprints: [("password".to_owned(), fp.fingerprint(value))].into(),
    };
    AuditLog::open(&log)
        .unwrap()
        .append_blocking(&Event::exchange("rid-issued", "production", &[]).allow(vec![issued], 0))
        .unwrap();
    (log, key)
}

#[test]
fn audit_find_takes_format_json_and_exits_1_when_nothing_matches() {
    let dir = tempfile::tempdir().unwrap();
    let (log, key) = log_with(dir.path(), "s3cret-value-1234");
    let (log, key) = (log.to_str().unwrap(), key.to_str().unwrap());
    let find = |extra: &[&str], value: &str| {
        let mut args = vec!["audit", "find", "--log", log, "--key", key];
        args.extend_from_slice(extra);
        jobkey(&args, value)
    };

    // (extra arguments, value on stdin, exit status, stdout check)
    type Check = fn(&str) -> bool;
    let cases: [(&[&str], &str, i32, Check); 7] = [
        (&[], "s3cret-value-1234\n", 0, |o| o.contains("rid-issued")),
        (&["--format", "text"], "s3cret-value-1234", 0, |o| {
            o.contains("deploy-db.password")
        }),
        (&["--format", "json"], "s3cret-value-1234", 0, |o| {
            serde_json::from_str::<Value>(o).unwrap()[0]["request_id"] == "rid-issued"
        }),
        // The earlier flag still works (hidden).
        (&["--json"], "s3cret-value-1234", 0, |o| {
            serde_json::from_str::<Value>(o).unwrap()[0]["credential"] == "deploy-db"
        }),
        // Nothing issued it: status 1, in either format.
        (&[], "never-issued", 1, |o| {
            o.contains("no exchange issued this value")
        }),
        (&["--format", "json"], "never-issued", 1, |o| {
            serde_json::from_str::<Value>(o).unwrap() == serde_json::json!([])
        }),
        // Errors: status 2.
        (&[], "  \n", 2, str::is_empty),
    ];
    for (extra, value, status, check) in cases {
        let (code, out, err) = find(extra, value);
        assert_eq!(code, status, "{extra:?} {value:?}: {out}{err}");
        assert!(check(&out), "{extra:?} {value:?}: {out}");
    }
    let (code, _, err) = jobkey(
        &["audit", "find", "--log", log, "--key", "/nonexistent/key"],
        "x",
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/key"), "{err}");
    let (code, _, err) = find(&["--json", "--format", "json"], "x");
    assert_eq!(code, 2, "one way to say it: {err}");

    // --help documents --format and the statuses; --json stays hidden.
    let (code, help, _) = jobkey(&["audit", "find", "--help"], "");
    assert_eq!(code, 0);
    assert!(help.contains("--format <FORMAT>"), "{help}");
    assert!(!help.contains("--json"), "{help}");
    for status in [
        "0 when an exchange issued the value",
        "1 when none did",
        "2 on an error",
    ] {
        assert!(help.contains(status), "{status}: {help}");
    }
}

#[test]
fn audit_verify_accepts_a_torn_last_line_and_fails_on_earlier_damage() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = log_with(dir.path(), "v-123456789");
    AuditLog::open(&log)
        .unwrap()
        .append_blocking(&Event::exchange("rid-2", "staging", &[]).allow(Vec::new(), 0))
        .unwrap();
    let path = log.to_str().unwrap();
    let intact = std::fs::read_to_string(&log).unwrap();

    let (code, out, err) = jobkey(&["audit", "verify", path], "");
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    assert!(out.contains("2 records, chain intact"), "{out}");

    // A cut-off last line: the chain before it is intact.
    std::fs::write(&log, format!("{intact}{{\"seq\":3,\"prev\":\"ab")).unwrap();
    let (code, out, err) = jobkey(&["audit", "verify", path], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 records, chain intact"), "{out}");
    assert!(err.contains("line 3") && err.contains("torn"), "{err}");

    // The same damage on the first of two lines is not a torn write.
    let lines: Vec<&str> = intact.lines().collect();
    std::fs::write(&log, format!("{}\n{}\n", &lines[0][..30], lines[1])).unwrap();
    let (code, out, err) = jobkey(&["audit", "verify", path], "");
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("line 1"), "{err}");
}
