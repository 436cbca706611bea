//! Rotation (`rotate.rs`), verification over a rotated set and several
//! replicas (`verify_set.rs`), and the readers over them (`query.rs`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::query::LogSet;
use super::super::tests::lines;
use super::super::{
    AuditError, AuditLog, AuditSettings, Checkpoint, CheckpointSettings, Event, SetOptions,
    VerifyOptions, verify_log, verify_set,
};
use super::*;

fn ev(i: u64) -> Event {
    Event::exchange(&format!("r{i}"), "production", &[]).allow(Vec::new(), 0)
}

fn settings(max_bytes: Option<u64>, max_age: Option<Duration>) -> AuditSettings {
    AuditSettings {
        checkpoints: CheckpointSettings {
            stdout: false,
            ..CheckpointSettings::default()
        },
        rotation: RotateSettings { max_bytes, max_age },
        ..AuditSettings::default()
    }
}

/// The log's rotated files, oldest first, then the log.
fn set_of(log: &Path) -> Vec<PathBuf> {
    let mut files = rotated_files(log);
    files.sort();
    files.push(log.to_owned());
    files
}

/// A log rotated by size (1 KiB) after `n` allows, closed.
fn rotated_log(dir: &Path, name: &str, replica: Option<&str>, n: u64) -> PathBuf {
    let p = dir.join(name);
    let log = AuditLog::open_as(&p, settings(Some(1024), None), replica).unwrap();
    for i in 0..n {
        log.append_blocking(&ev(i)).unwrap();
    }
    p
}

fn verify(files: &[PathBuf], archived: bool) -> super::super::SetReport {
    let opts = SetOptions {
        archived,
        ..SetOptions::default()
    };
    verify_set(files, &opts).unwrap()
}

#[test]
fn rotation_by_size_continues_the_chain_in_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = rotated_log(dir.path(), "audit.jsonl", None, 12);
    let files = set_of(&p);
    assert!(files.len() >= 3, "{files:?}");
    let mut next_seq = 1;
    let mut prev = chain::GENESIS.to_owned();
    for (i, f) in files.iter().enumerate() {
        let got = lines(f);
        if got.is_empty() {
            assert_eq!(i + 1, files.len(), "only the live file waits for a record");
            continue;
        }
        assert_eq!(
            got[0]["seq"], next_seq,
            "{f:?} starts where the one before ended"
        );
        assert_eq!(got[0]["prev"], prev.as_str(), "{f:?}");
        let last = got.last().unwrap();
        if i + 1 < files.len() {
            assert_eq!(
                last["action"], "checkpoint",
                "{f:?} is closed by a checkpoint"
            );
            assert!(
                std::fs::metadata(f).unwrap().len() >= 1024,
                "{f:?} was rotated at its size"
            );
        }
        next_seq = last["seq"].as_u64().unwrap() + 1;
        prev = last["hash"].as_str().unwrap().to_owned();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(f).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f:?}");
        }
    }
    let set = verify(&files, false);
    assert_eq!(set.chains.len(), 1);
    let c = &set.chains[0];
    assert!(c.outcome.is_ok(), "{:?}", c.outcome);
    assert_eq!((c.first_seq(), c.last_seq()), (1, next_seq - 1));
    assert_eq!(
        c.files.len() + set.empty.len(),
        files.len(),
        "every file in the chain, but an empty live file"
    );
    // The names say the order: each rotated name is `<log>.<UTC time>`.
    for f in &files[..files.len() - 1] {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(rotated_rank("audit.jsonl", &name).is_some(), "{name}");
    }
}

#[test]
fn the_review_pages_chain_covers_the_rotated_files() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.jsonl");
    std::fs::write(&fresh, "").unwrap();
    assert_eq!(verify_log(&fresh).unwrap().lines, 0);
    let p = rotated_log(dir.path(), "audit.jsonl", None, 12);
    let whole = verify(&set_of(&p), false);
    let r = verify_log(&p).unwrap();
    assert_eq!(
        (r.first_seq, r.last_seq(), r.checkpoints),
        (1, whole.chains[0].last_seq(), whole.chains[0].checkpoints())
    );
    // The oldest file gone: the page says the chain is incomplete.
    std::fs::remove_file(&set_of(&p)[0]).unwrap();
    let e = verify_log(&p).unwrap_err().to_string();
    assert!(e.contains("not at seq 1"), "{e}");
}

#[test]
fn rotation_by_age_happens_on_tick_and_a_young_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open_with(&p, settings(None, Some(Duration::from_secs(3600)))).unwrap();
    log.append_blocking(&ev(1)).unwrap();
    let now = Instant::now();
    log.tick_blocking(now).unwrap();
    assert!(rotated_files(&p).is_empty(), "not an hour old yet");
    log.tick_blocking(now + Duration::from_secs(3601)).unwrap();
    assert_eq!(rotated_files(&p).len(), 1, "an hour old: rotated");
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        0,
        "the new file waits for its first record"
    );
    // An empty live file is not rotated, however old.
    log.tick_blocking(now + Duration::from_secs(10 * 3600))
        .unwrap();
    assert_eq!(rotated_files(&p).len(), 1);
    log.append_blocking(&ev(2)).unwrap();
    let got = lines(&p);
    assert_eq!(got[0]["seq"], 3, "seq goes on after the closing checkpoint");
    let set = verify(&set_of(&p), false);
    assert!(set.is_intact(), "{:?}", set.chains[0].outcome);
}

#[test]
fn an_old_live_file_is_rotated_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    // Written a day ago: the file's age comes from its first record.
    let old = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() - Duration::from_secs(24 * 3600),
    )
    .to_string();
    let log = AuditLog::open(&p).unwrap();
    log.append_blocking(&ev(1)).unwrap();
    drop(log);
    let mut first = lines(&p)[0].clone();
    first["time"] = Value::from(old);
    let mut map = first.as_object().unwrap().clone();
    map.remove("hash");
    let hash = chain::hash(chain::GENESIS, &map).unwrap();
    map.insert("hash".into(), Value::from(hash));
    std::fs::write(&p, format!("{}\n", Value::Object(map))).unwrap();
    let log = AuditLog::open_with(&p, settings(None, Some(Duration::from_secs(3600)))).unwrap();
    log.tick_blocking(Instant::now()).unwrap();
    assert_eq!(rotated_files(&p).len(), 1);
}

#[test]
fn after_a_crash_between_rename_and_first_line_the_chain_goes_on_from_the_rotated_file() {
    // The live file: gone, empty, or only a torn first line.
    for (case, live) in [
        ("missing", None),
        ("empty", Some("")),
        ("torn", Some("{\"seq\":")),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let p = rotated_log(dir.path(), "audit.jsonl", None, 4);
        let log = AuditLog::open_with(&p, settings(Some(1024), None)).unwrap();
        while std::fs::metadata(&p).unwrap().len() > 0 {
            log.append_blocking(&ev(9)).unwrap();
        }
        drop(log);
        let before = verify(&set_of(&p), false).chains[0].last_seq();
        match live {
            None => std::fs::remove_file(&p).unwrap(),
            Some(text) => std::fs::write(&p, text).unwrap(),
        }
        let log = AuditLog::open_with(&p, settings(Some(1024), None)).unwrap();
        log.append_blocking(&ev(10)).unwrap();
        let got = lines(&p);
        let first = got.iter().find(|l| l["action"] != "log_recovered").unwrap();
        assert_eq!(got[0]["seq"], before + 1, "{case}: not back at genesis");
        assert_eq!(first["request_id"], "r10", "{case}");
        let set = verify(&set_of(&p), false);
        assert!(set.is_intact(), "{case}: {:?}", set.chains[0].outcome);
    }
}

#[test]
fn a_live_file_that_does_not_continue_the_rotated_one_is_not_written_to() {
    let dir = tempfile::tempdir().unwrap();
    let p = rotated_log(dir.path(), "audit.jsonl", None, 12);
    if std::fs::metadata(&p).unwrap().len() == 0 {
        let log = AuditLog::open_with(&p, settings(Some(1024), None)).unwrap();
        log.append_blocking(&ev(99)).unwrap();
    }
    // The live file's first line claims to follow, but its `prev` is not
    // the rotated file's last hash.
    let text = std::fs::read_to_string(&p).unwrap();
    let first = text.lines().next().unwrap();
    let mut map: serde_json::Map<String, Value> = serde_json::from_str(first).unwrap();
    map.remove("hash");
    map.insert("prev".into(), Value::from("ab".repeat(32)));
    let hash = chain::hash(&"ab".repeat(32), &map).unwrap();
    map.insert("hash".into(), Value::from(hash));
    std::fs::write(&p, format!("{}\n", Value::Object(map))).unwrap();
    let e = AuditLog::open_with(&p, settings(Some(1024), None))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("does not continue the newest rotated file"),
        "{e}"
    );
    // With the older files archived away, the live file is the start.
    for f in rotated_files(&p) {
        std::fs::remove_file(f).unwrap();
    }
    AuditLog::open_with(&p, settings(Some(1024), None)).unwrap();
}

#[test]
fn a_failed_rotation_loses_no_record_and_is_tried_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("a");
    let away = dir.path().join("b");
    std::fs::create_dir(&here).unwrap();
    let p = here.join("audit.jsonl");
    let log = AuditLog::open_with(&p, settings(Some(1024), None)).unwrap();
    // The directory moves away under the open file: the rename fails.
    std::fs::rename(&here, &away).unwrap();
    for i in 0..10 {
        log.append_blocking(&ev(i)).unwrap();
    }
    assert!(log.is_writable());
    let moved = away.join("audit.jsonl");
    let only = verify(std::slice::from_ref(&moved), false);
    assert!(only.is_intact(), "{:?}", only.chains[0].outcome);
    assert!(
        only.chains[0].records() > 10,
        "every record went on into the old file"
    );
    std::fs::rename(&away, &here).unwrap();
    // Not tried again at once...
    log.append_blocking(&ev(10)).unwrap();
    assert!(rotated_files(&p).is_empty());
    // ...but after the retry delay.
    log.tick_blocking(Instant::now() + RETRY_AFTER + Duration::from_secs(1))
        .unwrap();
    assert_eq!(rotated_files(&p).len(), 1);
    log.append_blocking(&ev(11)).unwrap();
    let set = verify(&set_of(&p), false);
    assert!(set.is_intact(), "{:?}", set.chains[0].outcome);
    let ids: Vec<String> = set_of(&p)
        .iter()
        .flat_map(|f| lines(f))
        .filter_map(|l| l["request_id"].as_str().map(str::to_owned))
        .collect();
    let want: Vec<String> = (0..12).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, want);
}

/// A copy of `files` in a new directory, changed by `change`.
fn tampered(
    files: &[PathBuf],
    change: impl FnOnce(&Path, &mut Vec<PathBuf>),
) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let mut copies: Vec<PathBuf> = files
        .iter()
        .map(|f| {
            let to = dir.path().join(f.file_name().unwrap());
            std::fs::copy(f, &to).unwrap();
            to
        })
        .collect();
    change(dir.path(), &mut copies);
    (dir, copies)
}

#[test]
fn a_broken_set_is_named_by_file_and_seq() {
    let dir = tempfile::tempdir().unwrap();
    let p = rotated_log(dir.path(), "audit.jsonl", None, 16);
    let files = set_of(&p);
    assert!(files.len() >= 4, "{files:?}");
    let other = tempfile::tempdir().unwrap();
    let q = rotated_log(other.path(), "audit.jsonl", None, 16);
    let foreign = set_of(&q);
    let name = |f: &Path| f.file_name().unwrap().to_string_lossy().into_owned();
    let seq_of = |f: &Path| lines(f)[0]["seq"].as_u64().unwrap();
    // (case, the set, archived, the file named, words the error has)
    type Change = Box<dyn FnOnce(&Path, &mut Vec<PathBuf>)>;
    let cases: Vec<(&str, Change, bool, usize, &str)> = vec![
        (
            "a middle file removed",
            Box::new(|_: &Path, fs: &mut Vec<PathBuf>| {
                std::fs::remove_file(fs.remove(1)).unwrap();
            }),
            false,
            1,
            "are missing",
        ),
        (
            "the first file removed",
            Box::new(|_: &Path, fs: &mut Vec<PathBuf>| {
                std::fs::remove_file(fs.remove(0)).unwrap();
            }),
            false,
            0,
            "not at seq 1",
        ),
        (
            "a middle file's tail cut",
            Box::new(|_: &Path, fs: &mut Vec<PathBuf>| {
                let text = std::fs::read_to_string(&fs[1]).unwrap();
                let kept: Vec<&str> = text.lines().collect();
                let kept = kept[..kept.len() - 1].join("\n") + "\n";
                std::fs::write(&fs[1], kept).unwrap();
            }),
            false,
            2,
            "are missing",
        ),
        (
            "two rotated files' names swapped",
            Box::new(|dir: &Path, fs: &mut Vec<PathBuf>| {
                let tmp = dir.join("swap");
                std::fs::rename(&fs[0], &tmp).unwrap();
                std::fs::rename(&fs[1], &fs[0]).unwrap();
                std::fs::rename(&tmp, &fs[1]).unwrap();
                fs.swap(0, 1);
            }),
            false,
            1,
            "renamed?",
        ),
        (
            "a file of another chain spliced in",
            Box::new(move |_: &Path, fs: &mut Vec<PathBuf>| {
                let at = seq_of(&fs[1]);
                let from = foreign
                    .iter()
                    .find(|f| seq_of(f) == at)
                    .unwrap_or(&foreign[1]);
                std::fs::copy(from, &fs[1]).unwrap();
            }),
            false,
            1,
            "",
        ),
    ];
    for (case, change, archived, named, words) in cases {
        let (_dir, set) = tampered(&files, change);
        let report = verify(&set, archived);
        let broken: Vec<&AuditError> = report
            .chains
            .iter()
            .filter_map(|c| c.outcome.as_ref().err())
            .collect();
        let e = broken
            .first()
            .unwrap_or_else(|| panic!("{case}: not caught"))
            .to_string();
        let want = name(&set[named.min(set.len() - 1)]);
        assert!(e.contains(&want) && e.contains(words), "{case}: {e}");
        assert!(e.contains("seq") || e.contains("line"), "{case}: {e}");
    }
    // The first file removed is fine when the older files were archived.
    let (_dir, set) = tampered(&files, |_, fs| {
        std::fs::remove_file(fs.remove(0)).unwrap();
    });
    assert!(verify(&set, true).is_intact());
}

#[test]
fn what_is_known_from_outside_is_checked_over_the_whole_set() {
    let dir = tempfile::tempdir().unwrap();
    let p = rotated_log(dir.path(), "audit.jsonl", None, 12);
    let files = set_of(&p);
    // The first rotated file's closing checkpoint, as the second sink
    // kept it.
    let closing: Checkpoint =
        serde_json::from_value(lines(&files[0]).last().unwrap()["checkpoint"].clone()).unwrap();
    let end = verify(&files, false).chains[0].last_seq();
    let check = |files: &[PathBuf], known: VerifyOptions| {
        let opts = SetOptions {
            known,
            ..SetOptions::default()
        };
        verify_set(files, &opts).unwrap().chains.remove(0).outcome
    };
    let with = |cp: Option<Checkpoint>, min: Option<u64>| VerifyOptions {
        checkpoint: cp,
        min_seq: min,
        ..VerifyOptions::default()
    };
    check(&files, with(Some(closing.clone()), Some(end))).unwrap();
    // The newest files removed: the chain alone still verifies...
    let cut = &files[..1];
    assert!(check(cut, with(None, None)).is_ok());
    // ...but not against a known seq.
    match check(cut, with(None, Some(end))) {
        Err(AuditError::Truncated { ends_at, .. }) => assert!(ends_at < end),
        other => panic!("{other:?}"),
    }
    // A checkpoint before the files given: they cannot say.
    let later = &files[1..];
    let opts = SetOptions {
        known: with(Some(closing), None),
        archived: true,
        ..SetOptions::default()
    };
    let r = verify_set(later, &opts).unwrap().chains.remove(0).outcome;
    assert!(matches!(r, Err(AuditError::Incomplete { .. })), "{r:?}");
}

#[test]
fn several_replicas_are_verified_as_a_chain_each_and_read_merged_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.jsonl");
    let b = dir.path().join("b.jsonl");
    let la = AuditLog::open_as(&a, settings(Some(1024), None), Some("ci-a")).unwrap();
    let lb = AuditLog::open_as(&b, settings(Some(1024), None), Some("ci-b")).unwrap();
    for i in 0..8 {
        la.append_blocking(&ev(2 * i)).unwrap();
        lb.append_blocking(&ev(2 * i + 1)).unwrap();
    }
    let set = LogSet::new(&[dir.path().to_owned()]).unwrap();
    assert!(set.files().len() >= 4, "{:?}", set.files());
    let report = verify(set.files(), false);
    let names: Vec<String> = report.chains.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["replica ci-a", "replica ci-b"]);
    assert!(report.is_intact());
    // Read back: every record once, by time, each naming its replica.
    let mut records = set.records().unwrap();
    let mut last_time = 0;
    let mut seen = Vec::new();
    let mut seqs: std::collections::BTreeMap<String, u64> = Default::default();
    while let Some(r) = records.next_record().unwrap() {
        assert!(r.time_ms >= last_time, "in time order");
        last_time = r.time_ms;
        let replica = match r.event() {
            Some(e) => e.replica().unwrap().to_owned(),
            None => continue,
        };
        let seq = r.seq.unwrap();
        let before = seqs.insert(replica.clone(), seq).unwrap_or(0);
        assert!(seq > before, "{replica}: its own records in order");
        if let Some(id) = r.event().map(|e| e.request_id().to_owned())
            && !id.is_empty()
        {
            seen.push(id);
        }
    }
    seen.sort();
    let mut want: Vec<String> = (0..16).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(seen, want, "each record once");
    // A rotated set read from its live path: the same records.
    let rotated = LogSet::rotated(&a).unwrap();
    assert_eq!(rotated.files().len(), set_of(&a).len());
}

#[test]
fn a_chain_whose_replica_id_changed_is_followed_across_the_change() {
    let dir = tempfile::tempdir().unwrap();
    let p = rotated_log(dir.path(), "audit.jsonl", Some("old-name"), 6);
    let log = AuditLog::open_as(&p, settings(Some(1024), None), Some("new-name")).unwrap();
    for i in 0..6 {
        log.append_blocking(&ev(i)).unwrap();
    }
    let report = verify(&set_of(&p), false);
    let names: Vec<String> = report.chains.iter().map(|c| c.name()).collect();
    assert_eq!(names, ["replica old-name, then new-name"]);
    assert!(report.is_intact(), "{:?}", report.chains[0].outcome);
}

#[test]
fn hostile_first_lines_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    for first in [
        format!(r#"{{"seq":{},"prev":"x","hash":"y"}}"#, u64::MAX),
        format!(r#"{{"seq":{},"prev":"x","hash":"y"}}"#, u64::MAX - 1),
        r#"{"seq":0,"prev":"x","hash":"y"}"#.to_owned(),
        r#"{"seq":-3,"prev":7,"hash":null}"#.to_owned(),
        r#"[1,2,3]"#.to_owned(),
    ] {
        std::fs::write(&p, format!("{first}\n{first}\n")).unwrap();
        let report = verify(std::slice::from_ref(&p), true);
        assert!(
            report.chains.iter().any(|c| c.outcome.is_err()),
            "{first}: {report:?}"
        );
        assert!(AuditLog::open(&p).is_err(), "{first}");
    }
}

#[test]
fn rotated_names_are_told_from_other_files() {
    for (name, want) in [
        (
            "audit.jsonl.20261201T171500Z",
            Some(("20261201T171500Z", 0)),
        ),
        (
            "audit.jsonl.20261201T171500Z-12",
            Some(("20261201T171500Z", 12)),
        ),
        ("audit.jsonl", None),
        ("audit.jsonl.1", None),
        ("audit.jsonl.20261201T171500Z-", None),
        ("audit.jsonl.20261201T1715Z", None),
        ("audit.jsonl.torn-20261201T171500Z", None),
        ("audit.jsonl.checkpoint-key", None),
        ("other.jsonl.20261201T171500Z", None),
    ] {
        let got = rotated_rank("audit.jsonl", name);
        assert_eq!(got, want.map(|(s, n)| (s.to_owned(), n)), "{name}");
    }
}

/// A rotation that cannot write its closing checkpoint, with async allows
/// waiting for the sync it comes before: each of them fails (their records
/// are cut off with the checkpoint) rather than wait for a rotation that
/// keeps failing; the file is at its last synced record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_rotation_fails_the_async_allows_waiting_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open_with(&p, settings(Some(1024), None)).unwrap();
    log.append(ev(0)).await.unwrap();
    let leader = log.common.sync_lock.lock().unwrap();
    let tasks: Vec<_> = (1..9)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(ev(i)).await })
        })
        .collect();
    while log.lock().written.seq < 9 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(log.lock().written.len >= 1024, "the rotation is due");
    // The file stops taking writes (a read-only handle).
    let writable = std::mem::replace(&mut log.lock().file, std::fs::File::open(&p).unwrap());
    drop(leader);
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert!(!log.is_writable());
    assert_eq!(
        log.lock().written.seq,
        1,
        "cut back to the last synced record"
    );
    assert!(rotated_files(&p).is_empty(), "not rotated");
    // Writable again: the tick resumes (the file is cut back first), the
    // rotation happens, allows work.
    log.lock().file = writable;
    log.tick_blocking(Instant::now()).unwrap();
    log.append(ev(9)).await.unwrap();
    let files = set_of(&p);
    let r = verify(&files, false);
    assert!(r.is_intact(), "{r:?}");
    let ids: Vec<Value> = files
        .iter()
        .flat_map(|f| lines(f))
        .map(|l| l["request_id"].clone())
        .filter(|id| !id.is_null())
        .collect();
    assert_eq!(ids, ["r0", "r9"], "the cut-off allows are not in the log");
}
