//! A rotated audit log from a real server run: `[audit] rotate_bytes` at
//! its smallest, then `jobkey audit verify` and `audit query` over the
//! rotated set through the binary, and tampering across its files.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{Options, Stack, jobkey_cli};

/// The live log's rotated files (`<log>.<UTC time>[-N]`), oldest first,
/// then the live log.
fn rotated_set(log: &Path) -> Vec<PathBuf> {
    let name = log.file_name().unwrap().to_string_lossy().into_owned();
    let mut files: Vec<PathBuf> = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            n.strip_prefix(&format!("{name}.2")).is_some()
        })
        .collect();
    files.sort_by_key(|f| first_seq(f));
    files.push(log.to_owned());
    files
}

fn first_seq(f: &Path) -> u64 {
    let text = std::fs::read_to_string(f).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    first["seq"].as_u64().unwrap()
}

/// A copy of the rotated set in a new directory, with the same names.
fn copy_of(files: &[PathBuf]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let copies = files
        .iter()
        .map(|f| {
            let to = dir.path().join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect();
    (dir, copies)
}

fn name(f: &Path) -> String {
    f.file_name().unwrap().to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_log_verifies_and_reads_as_one_and_tampering_across_files_is_named() {
    let stack = Stack::start_with(Options {
        audit_keys: Some(
            "rotate_bytes = \"1KiB\"\nreplica_id = \"ci-a\"\ncheckpoint_stdout = false".into(),
        ),
        ..Options::default()
    })
    .await;
    let gh = stack.github_token(json!({}));
    let mut allowed = Vec::new();
    for _ in 0..6 {
        let (status, body) = stack
            .exchange(&gh, json!({"environment": "production"}))
            .await;
        assert_eq!(status, 200, "{body}");
        allowed.push(body["request_id"].as_str().unwrap().to_owned());
    }
    let dev = stack.github_token(json!({"ref": "refs/heads/dev"}));
    let (status, _) = stack.exchange_status(&dev, "production").await;
    assert_eq!(status, 403);
    let log = stack.audit_path.clone();
    let files = rotated_set(&log);
    assert!(files.len() >= 4, "an allow line is over 1 KiB: {files:?}");
    let log_s = log.to_str().unwrap();

    // verify: the live path stands for the set; one chain, every file.
    let (code, out, err) = jobkey_cli(&["audit", "verify", log_s]);
    assert_eq!(code, 0, "{out}{err}");
    // The live file may be empty: the last line rotated it.
    let holding = files
        .iter()
        .filter(|f| std::fs::metadata(f).unwrap().len() > 0)
        .count();
    assert!(
        out.contains(&format!("replica ci-a: {holding} file(s), seq 1 to"))
            && out.contains("chain intact"),
        "{out}"
    );
    for f in &files {
        assert!(out.contains(&name(f)), "{}: {out}", name(f));
    }

    // query: the set through --config, each allow once, in order, with
    // its replica.
    let cfg = stack.config_path.to_str().unwrap();
    let (code, out, err) = jobkey_cli(&[
        "audit",
        "query",
        "--config",
        cfg,
        "--decision",
        "allow",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event"]["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, allowed);
    assert!(
        rows.iter().all(|r| r["event"]["replica"] == "ci-a"),
        "{out}"
    );
    let logs: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r["log"].as_str().unwrap()).collect();
    assert!(
        logs.len() > 1,
        "the allows came from several files: {logs:?}"
    );
    let (code, out, _) = jobkey_cli(&["audit", "query", log.parent().unwrap().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().contains("REPLICA"), "{out}");
    assert!(
        out.lines().skip(1).all(|l| l.contains(" ci-a ")),
        "every row names its replica: {out}"
    );

    // find: the leaked password, in every file of the set.
    let mut find = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(["audit", "find", "--config", cfg, "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    find.stdin
        .take()
        .unwrap()
        .write_all(stack.db_password.as_bytes())
        .unwrap();
    let found = find.wait_with_output().unwrap();
    assert!(found.status.success());
    let matches: Vec<Value> = serde_json::from_slice(&found.stdout).unwrap();
    let found_ids: Vec<&str> = matches
        .iter()
        .map(|m| m["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(found_ids, allowed, "each exchange once, in time order");
    assert!(matches.iter().all(|m| m["replica"] == "ci-a"));

    // Tampering across the files: (case, change, arguments, the file the
    // error names, words in it).
    let other = tempfile::tempdir().unwrap();
    let foreign = foreign_set(other.path(), first_seq(&files[1]));
    type Change = Box<dyn Fn(&mut Vec<PathBuf>)>;
    let cases: Vec<(&str, Change, &[&str], usize, &str)> = vec![
        (
            "a middle file removed",
            Box::new(|fs| std::fs::remove_file(fs.remove(1)).unwrap()),
            &[],
            1,
            "are missing",
        ),
        (
            "the oldest file removed",
            Box::new(|fs| std::fs::remove_file(fs.remove(0)).unwrap()),
            &[],
            0,
            "not at seq 1",
        ),
        (
            "a line edited in a rotated file",
            Box::new(|fs| {
                let text = std::fs::read_to_string(&fs[1]).unwrap();
                std::fs::write(&fs[1], text.replacen("production", "producti0n", 1)).unwrap();
            }),
            &[],
            1,
            "line",
        ),
        (
            "a file of another chain in a rotated file's place",
            Box::new(move |fs| {
                std::fs::copy(&foreign[1], &fs[1]).unwrap();
            }),
            &[],
            1,
            "seq",
        ),
    ];
    for (case, change, extra, named, words) in cases {
        let (_dir, mut copies) = copy_of(&files);
        change(&mut copies);
        let live = copies.last().unwrap().to_str().unwrap().to_owned();
        let mut args = vec!["audit", "verify", live.as_str()];
        args.extend(extra);
        let (code, out, err) = jobkey_cli(&args);
        assert_eq!(code, 1, "{case}: {out}{err}");
        assert!(
            err.contains(&name(&copies[named])) && err.contains(words),
            "{case}: {err}"
        );
    }
    // The oldest file archived away: fine when the auditor says so.
    let (_dir, mut copies) = copy_of(&files);
    std::fs::remove_file(copies.remove(0)).unwrap();
    let live = copies.last().unwrap().to_str().unwrap().to_owned();
    let (code, out, err) = jobkey_cli(&["audit", "verify", &live, "--archived"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("--archived"), "{out}");
    // The newest files removed: caught by a seq known to exist.
    let (_dir, mut copies) = copy_of(&files);
    for f in copies.drain(1..) {
        std::fs::remove_file(f).unwrap();
    }
    let kept = copies[0].to_str().unwrap().to_owned();
    let known = first_seq(&files[1]).to_string();
    let (code, _, err) = jobkey_cli(&["audit", "verify", &kept, "--min-seq", &known]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("truncated"), "{err}");
}

/// Another chain whose second file starts at seq `at`: its names and seqs
/// look like the server's, its hashes do not. (Rotated by age, on a tick
/// an hour ahead, so the join falls exactly there.)
fn foreign_set(dir: &Path, at: u64) -> Vec<PathBuf> {
    let log = dir.join("audit.jsonl");
    let settings = jobkey::AuditSettings {
        checkpoints: jobkey::CheckpointSettings {
            stdout: false,
            ..jobkey::CheckpointSettings::default()
        },
        rotation: jobkey::RotateSettings {
            max_bytes: None,
            max_age: Some(std::time::Duration::from_secs(3600)),
        },
        ..jobkey::AuditSettings::default()
    };
    let w = jobkey::AuditLog::open_as(&log, settings, Some("ci-a")).unwrap();
    let event =
        |i: u64| jobkey::Event::exchange(&format!("x{i}"), "production", &[]).allow(Vec::new(), 0);
    // Records 1 to at - 2, the closing checkpoint at - 1, then the next file.
    for i in 0..at - 2 {
        w.append_blocking(&event(i)).unwrap();
    }
    w.tick_blocking(std::time::Instant::now() + std::time::Duration::from_secs(7200))
        .unwrap();
    w.append_blocking(&event(at)).unwrap();
    let set = rotated_set(&log);
    assert_eq!(first_seq(&set[1]), at);
    set
}
