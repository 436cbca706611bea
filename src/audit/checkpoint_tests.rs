//! Tamper evidence beyond the chain: checkpoints, the second sink, and
//! what `verify_with` names for each kind of damage.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

fn ev(i: u64) -> Event {
    Event::exchange(&format!("r{i}"), "production", &[]).allow(Vec::new(), 0)
}

fn settings(sink: &Path) -> AuditSettings {
    AuditSettings {
        checkpoints: CheckpointSettings {
            every: 5,
            interval: std::time::Duration::from_secs(3600),
            key_file: None,
            stdout: false,
            file: Some(sink.to_path_buf()),
        },
        ..AuditSettings::default()
    }
}

/// 12 allows with a checkpoint after every 5 records and one at shutdown:
/// allows at 1-5, checkpoint 6 (of 5), allows 7-11, checkpoint 12 (of 11),
/// allows 13-14, checkpoint 15 (of 14). Returns the log, the sink and the
/// log's public key.
fn written(dir: &Path) -> (PathBuf, PathBuf, PublicKey) {
    let p = dir.join("audit.jsonl");
    let sink = dir.join("checkpoints.jsonl");
    let log = AuditLog::open_with(&p, settings(&sink)).unwrap();
    for i in 1..=12 {
        log.append_blocking(&ev(i)).unwrap();
    }
    log.flush_blocking().unwrap();
    let key = log.public_key();
    (p, sink, key)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write_lines(p: &Path, lines: &[String]) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(p, body).unwrap();
}

/// What someone who can write the log but has no key can do: recompute
/// every `seq`, `prev` and `hash` after an edit, and sign each checkpoint
/// with their own key (naming it, or pretending to be `pretend`: its id
/// and public key, with their own signature).
fn rechain(lines: &[String], key: &CheckpointKey, pretend: Option<&PublicKey>) -> Vec<String> {
    let mut prev = chain::GENESIS.to_owned();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut obj = match serde_json::from_str::<Value>(l).unwrap() {
            Value::Object(o) => o,
            _ => unreachable!(),
        };
        obj.remove("hash");
        let seq = i as u64 + 1;
        obj.insert("seq".into(), seq.into());
        obj.insert("prev".into(), prev.clone().into());
        if obj["action"] == "checkpoint" {
            let mut cp = key.sign(seq - 1, &prev);
            if let Some(k) = pretend {
                cp.key_id = k.id();
                cp.public_key = k.to_text().trim_start_matches("ed25519:").to_owned();
            }
            obj.insert("checkpoint".into(), serde_json::to_value(cp).unwrap());
        }
        let h = chain::hash(&prev, &obj).unwrap();
        obj.insert("hash".into(), h.clone().into());
        prev = h;
        out.push(Value::Object(obj).to_string());
    }
    out
}

#[test]
fn checkpoints_are_written_every_n_records_and_at_shutdown_and_sent_to_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink, key) = written(dir.path());
    let got = lines(&p);
    assert_eq!(got.len(), 15);
    let at: Vec<(usize, u64)> = got
        .iter()
        .enumerate()
        .filter_map(|(i, l)| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["action"] == "checkpoint").then(|| (i + 1, v["checkpoint"]["seq"].as_u64().unwrap()))
        })
        .collect();
    assert_eq!(at, vec![(6, 5), (12, 11), (15, 14)]);
    for l in &got {
        let v: Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["version"], VERSION, "every record says its version");
    }
    // The sink holds the same three checkpoints, each one verifying.
    let sent = lines(&sink);
    assert_eq!(sent.len(), 3);
    for (l, seq) in sent.iter().zip([5, 11, 14]) {
        let cp = Checkpoint::from_arg(l).unwrap();
        assert_eq!(cp.seq, seq);
        cp.check(std::slice::from_ref(&key)).unwrap();
    }
    let r = verify_with(
        &p,
        &VerifyOptions {
            trusted: vec![key.clone()],
            checkpoint: Some(Checkpoint::from_arg(sink.to_str().unwrap()).unwrap()),
            min_seq: Some(15),
        },
    )
    .unwrap();
    assert_eq!((r.lines, r.checkpoints, r.since_checkpoint), (15, 3, 0));
    // Reopened, the log goes on from where it was, with the same key.
    let log = AuditLog::open_with(&p, settings(&sink)).unwrap();
    assert_eq!(log.public_key(), key);
    log.append_blocking(&ev(13)).unwrap();
    assert_eq!(verify_file(&p).unwrap().since_checkpoint, 1);
}

#[test]
fn each_kind_of_tampering_is_caught_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (p, sink, key) = written(dir.path());
    let good = lines(&p);
    let external = Checkpoint::from_arg(sink.to_str().unwrap()).unwrap();
    assert_eq!(external.seq, 14);
    let other = CheckpointKey::load_or_create(&dir.path().join("other.key")).unwrap();
    let edit = |mut ls: Vec<String>, at: usize| {
        ls[at - 1] = ls[at - 1].replace("production", "staging");
        ls
    };
    let no_key = VerifyOptions::default();
    let by_key = VerifyOptions {
        trusted: vec![key.clone()],
        ..VerifyOptions::default()
    };
    let by_checkpoint = VerifyOptions {
        checkpoint: Some(external.clone()),
        ..VerifyOptions::default()
    };
    let by_min_seq = VerifyOptions {
        trusted: vec![key.clone()],
        min_seq: Some(14),
        ..VerifyOptions::default()
    };
    let mut deleted = good.clone();
    deleted.remove(2);
    let mut reordered = good.clone();
    reordered.swap(2, 3);
    let truncated: Vec<String> = good[..10].to_vec();
    let resigned_want = format!(
        "checkpoint at line 6: signed by key id {}, which is not a trusted key",
        other.public_key().id()
    );
    let pretend_want = format!(
        "checkpoint at line 6: signature does not verify with key id {}",
        key.id()
    );
    let cases: Vec<(&str, Vec<String>, &VerifyOptions, &str)> = vec![
        (
            "an edited record",
            edit(good.clone(), 7),
            &by_key,
            "line 7: the line's content does not match its hash",
        ),
        (
            "a deleted record",
            deleted,
            &by_key,
            "line 3: expected seq 3 (a line was removed or reordered)",
        ),
        (
            "two records swapped",
            reordered,
            &by_key,
            "line 3: expected seq 3",
        ),
        (
            "the tail cut off, against the kept checkpoint",
            truncated.clone(),
            &by_checkpoint,
            "truncated: the log ends at seq 10 but checkpoint seq 14 exists",
        ),
        (
            "the tail cut off, against the key and a known seq",
            truncated,
            &by_min_seq,
            "truncated: the log ends at seq 10 but seq 14 is known to exist",
        ),
        (
            "edited, rechained and re-signed with another key",
            rechain(&edit(good.clone(), 7), &other, None),
            &by_key,
            &resigned_want,
        ),
        (
            "re-signed with another key, naming the trusted key",
            rechain(&edit(good.clone(), 7), &other, Some(&key)),
            &by_key,
            &pretend_want,
        ),
        (
            "re-signed with another key, naming the trusted key, no key given",
            rechain(&edit(good.clone(), 7), &other, Some(&key)),
            &no_key,
            &pretend_want,
        ),
        (
            "edited and rechained, against the kept checkpoint",
            rechain(&edit(good.clone(), 7), &other, None),
            &by_checkpoint,
            "checkpoint at line 6: signed by key id",
        ),
    ];
    for (name, ls, opts, want) in cases {
        write_lines(&p, &ls);
        let e = verify_with(&p, opts).unwrap_err().to_string();
        assert!(e.contains(want), "{name}: {e}");
    }

    // Without outside knowledge, a cut tail still verifies: that is what
    // the kept checkpoint is for.
    write_lines(&p, &good[..10]);
    assert_eq!(verify_file(&p).unwrap().lines, 10);
}

#[test]
fn a_checkpoint_that_signs_another_place_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _, _) = written(dir.path());
    let good = lines(&p);
    // The first checkpoint record moved after record 7 (rechained, so only
    // the checkpoint's own `seq` and `head` tell).
    let mut moved = good[..12].to_vec();
    let cp = moved.remove(5);
    moved.insert(7, cp);
    let mut prev = chain::GENESIS.to_owned();
    let moved: Vec<String> = moved
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut obj: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            obj.remove("hash");
            obj.insert("seq".into(), (i as u64 + 1).into());
            obj.insert("prev".into(), prev.clone().into());
            let h = chain::hash(&prev, &obj).unwrap();
            obj.insert("hash".into(), h.clone().into());
            prev = h;
            Value::Object(obj).to_string()
        })
        .collect();
    write_lines(&p, &moved);
    let e = verify_file(&p).unwrap_err().to_string();
    assert!(
        e.contains("line 8: its checkpoint signs seq 5 but follows seq 7"),
        "{e}"
    );
}

#[test]
fn public_keys_and_sink_lines_are_parsed_strictly() {
    for (input, want) in [
        ("ed25519:AAAA", "32 bytes; this one is 3"),
        ("ed25519:!!", "`ed25519:` and base64"),
    ] {
        assert!(
            PublicKey::parse(input).unwrap_err().contains(want),
            "{input}"
        );
    }
    for (input, want) in [
        ("{", "one JSON line"),
        ("{\"audit_checkpoint\":{\"seq\":1}}", "not a checkpoint"),
        (
            "{\"seq\":1,\"head\":\"h\",\"time\":\"t\",\"key_id\":\"k\",\"public_key\":\"p\",\"signature\":\"s\",\"extra\":1}",
            "unknown field",
        ),
    ] {
        assert!(
            Checkpoint::from_arg(input).unwrap_err().contains(want),
            "{input}"
        );
    }
}

#[test]
fn the_signing_key_is_private_to_its_owner_and_elided_in_debug() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let key = CheckpointKey::load_or_create(&path).unwrap();
    let again = CheckpointKey::load_or_create(&path).unwrap();
    assert_eq!(
        key.public_key(),
        again.public_key(),
        "read back, not replaced"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(!format!("{key:?}").contains(&format!("{bytes:?}")));
    assert!(format!("{key:?}").contains("redacted"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    std::fs::write(&path, b"not a key").unwrap();
    assert!(
        CheckpointKey::load(&path)
            .unwrap_err()
            .to_string()
            .contains("not an Ed25519 key")
    );
}
