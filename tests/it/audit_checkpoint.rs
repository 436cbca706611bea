//! Tamper evidence through the binary: `jobkey audit public-key`, and
//! `jobkey audit verify` with a checkpoint or a key kept off the host.

use std::path::Path;
use std::process::Command;

use jobkey::{AuditLog, AuditSettings, CheckpointSettings, Event};

fn jobkey(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 8 allows and a checkpoint after every 4 records: checkpoints at lines
/// 5 (of record 4) and 10 (of record 9); none at shutdown, as nothing was
/// written after the last.
fn write_log(dir: &Path) {
    let settings = AuditSettings {
        checkpoints: CheckpointSettings {
            every: 4,
            stdout: false,
            file: Some(dir.join("checkpoints.jsonl")),
            ..CheckpointSettings::default()
        },
        ..AuditSettings::default()
    };
    let log = AuditLog::open_with(&dir.join("audit.jsonl"), settings).unwrap();
    for i in 0..8 {
        log.append_blocking(
            &Event::exchange(&format!("r{i}"), "production", &[]).allow(Vec::new(), 0),
        )
        .unwrap();
    }
    log.flush_blocking().unwrap();
}

#[test]
fn a_cut_tail_is_named_against_the_kept_checkpoint_or_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path());
    let log = dir.path().join("audit.jsonl");
    let log_s = log.to_str().unwrap();
    let key_file = dir.path().join("audit.jsonl.checkpoint-key");
    let (code, public, err) = jobkey(&["audit", "public-key", "--key", key_file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let public = public.trim().to_owned();
    assert!(
        public.starts_with("ed25519:") && err.contains("key id"),
        "{public}{err}"
    );
    let sink = dir.path().join("checkpoints.jsonl");
    let sink_s = sink.to_str().unwrap();
    let last_line = std::fs::read_to_string(&sink)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();

    // Intact: every way of asking agrees.
    for args in [
        vec!["audit", "verify", log_s],
        vec!["audit", "verify", log_s, "--checkpoint", sink_s],
        vec!["audit", "verify", log_s, "--checkpoint", &last_line],
        vec![
            "audit",
            "verify",
            log_s,
            "--public-key",
            &public,
            "--min-seq",
            "10",
        ],
    ] {
        let (code, out, err) = jobkey(&args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
        assert!(out.contains("10 records, chain intact"), "{args:?}: {out}");
        assert!(out.contains("2 checkpoint(s) verified"), "{args:?}: {out}");
    }

    // The tail cut off after line 6: the chain alone still verifies...
    let text = std::fs::read_to_string(&log).unwrap();
    let cut: String = text.lines().take(6).map(|l| format!("{l}\n")).collect();
    std::fs::write(&log, cut).unwrap();
    let (code, out, _) = jobkey(&["audit", "verify", log_s]);
    assert_eq!(code, 0);
    assert!(out.contains("6 records, chain intact"), "{out}");
    // ...but not against what was kept off the host.
    for (args, want) in [
        (
            vec!["audit", "verify", log_s, "--checkpoint", sink_s],
            "truncated: the log ends at seq 6 but checkpoint seq 9 exists",
        ),
        (
            vec![
                "audit",
                "verify",
                log_s,
                "--public-key",
                &public,
                "--min-seq",
                "10",
            ],
            "truncated: the log ends at seq 6 but seq 10 is known to exist",
        ),
    ] {
        let (code, out, err) = jobkey(&args);
        assert_eq!(code, 1, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }

    // Another log's key is not this log's.
    let other = tempfile::tempdir().unwrap();
    write_log(other.path());
    let other_key = other.path().join("audit.jsonl.checkpoint-key");
    let (_, other_public, _) =
        jobkey(&["audit", "public-key", "--key", other_key.to_str().unwrap()]);
    let (code, _, err) = jobkey(&[
        "audit",
        "verify",
        log_s,
        "--public-key",
        other_public.trim(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("checkpoint at line 5: signed by key id") && err.contains("not a trusted key"),
        "{err}"
    );
    let (code, _, err) = jobkey(&["audit", "verify", log_s, "--public-key", "ed25519:AAAA"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--public-key: an Ed25519 public key is 32 bytes"),
        "{err}"
    );
}
