use serde_json::json;

use super::*;

fn ev(i: u64) -> Map<String, Value> {
    json!({"decision": "allow", "request_id": format!("r{i}")})
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn appends_chain_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sub/audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    log.append(ev(1)).await.unwrap();
    log.append(ev(2)).await.unwrap();
    drop(log);
    let log = AuditLog::open(&p).unwrap();
    log.append(ev(3)).await.unwrap();
    let r = verify_file(&p).unwrap();
    assert_eq!(r.lines, 3);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

#[test]
fn tampering_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    for i in 0..4 {
        log.append_blocking(ev(i)).unwrap();
    }
    drop(log);
    let good = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let edited = good.replace("\"allow\"", "\"deny\"");
    let removed = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
    let swapped = format!("{}\n{}\n{}\n{}\n", lines[0], lines[2], lines[1], lines[3]);
    let truncated = format!("{}\n{}", lines[0], &lines[1][..10]);
    for (name, text, line) in [
        ("edited", edited, 1),
        ("removed", removed, 2),
        ("swapped", swapped, 2),
        ("truncated", truncated, 2),
    ] {
        std::fs::write(&p, text).unwrap();
        match verify_file(&p) {
            Err(AuditError::Corrupt { line: l, .. }) => assert_eq!(l, line, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            AuditLog::open(&p).is_err(),
            "{name}: no writing after a tampered record"
        );
    }
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_fails_closed_for_every_later_append() {
    let log = AuditLog::open(std::path::Path::new("/dev/full")).unwrap();
    assert!(log.append_blocking(ev(1)).is_err());
    let again = log.append_blocking(ev(2)).unwrap_err().to_string();
    assert!(again.contains("earlier write failed"), "{again}");
}
