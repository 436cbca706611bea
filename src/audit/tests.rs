use std::path::{Path, PathBuf};

use serde_json::{Map, json};

use super::*;

fn ev(i: u64) -> Event {
    Event::exchange(&format!("r{i}"), "production", &[]).allow(Vec::new(), 0)
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
        log.append_blocking(&ev(i)).unwrap();
    }
    drop(log);
    let good = std::fs::read_to_string(&p).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let edited = good.replace("\"allow\"", "\"deny\"");
    let removed = format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3]);
    let swapped = format!("{}\n{}\n{}\n{}\n", lines[0], lines[2], lines[1], lines[3]);
    // Damage before the last line is never taken for a torn write.
    let cut_then_more = format!("{}\n{}\n{}\n", lines[0], &lines[1][..10], lines[2]);
    let edited_then_torn = format!(
        "{}\n{}\n{}",
        lines[0],
        lines[1].replace("\"allow\"", "\"deny\""),
        &lines[2][..10]
    );
    for (name, text, line) in [
        ("edited", edited, 1),
        ("removed", removed, 2),
        ("swapped", swapped, 2),
        ("cut, then more lines", cut_then_more, 2),
        ("edited, then a torn last line", edited_then_torn, 2),
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

/// The files beside the log whose name starts with `<log>.torn-`.
fn torn_files(p: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.torn-", p.file_name().unwrap().to_string_lossy());
    let mut found: Vec<PathBuf> = std::fs::read_dir(p.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .collect();
    found.sort();
    found
}

#[test]
fn a_torn_last_line_is_set_aside_and_the_chain_continues_from_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    for i in 0..3 {
        log.append_blocking(&ev(i)).unwrap();
    }
    drop(log);
    let good = std::fs::read(&p).unwrap();
    let text = String::from_utf8(good.clone()).unwrap();
    let last = text.lines().last().unwrap().to_owned();
    let two: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
    // (case, what follows the two good lines, why)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "cut off in the middle",
            last.as_bytes()[..40].to_vec(),
            "not a JSON object",
        ),
        (
            "complete but no newline",
            last.as_bytes().to_vec(),
            "no newline at its end",
        ),
        (
            "the last line edited",
            format!("{}\n", last.replace("\"allow\"", "\"deny\"")).into_bytes(),
            "does not match its hash",
        ),
        ("zeros after a crash", vec![0u8; 300], "not a JSON object"),
        ("an empty line", b"\n".to_vec(), "not a JSON object"),
    ];
    for (name, tail, why) in cases {
        for f in torn_files(&p) {
            std::fs::remove_file(f).unwrap();
        }
        let mut bytes = two.clone().into_bytes();
        bytes.extend_from_slice(&tail);
        std::fs::write(&p, &bytes).unwrap();
        let r = verify_file(&p).unwrap();
        let torn = r.torn.as_ref().unwrap_or_else(|| panic!("{name}: {r:?}"));
        assert_eq!((r.lines, torn.line), (2, 3), "{name}");
        assert!(torn.why.contains(why), "{name}: {}", torn.why);

        let log = AuditLog::open(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        log.append_blocking(&ev(9)).unwrap();
        drop(log);
        let [aside] = torn_files(&p)
            .try_into()
            .unwrap_or_else(|f| panic!("{name}: {f:?}"));
        assert_eq!(
            std::fs::read(&aside).unwrap(),
            tail,
            "{name}: kept as it was"
        );
        let r = verify_file(&p).unwrap();
        assert_eq!((r.lines, r.torn), (4, None), "{name}");
        let got = lines(&p);
        assert_eq!(
            got[..2],
            lines_of(&two)[..],
            "{name}: the good lines are untouched"
        );
        let rec = &got[2];
        assert_eq!(rec["action"], "log_recovered", "{name}");
        assert_eq!(rec["seq"], 3);
        assert_eq!(
            rec["prev"], got[1]["hash"],
            "{name}: chained to the last good line"
        );
        assert_eq!(
            rec["recovery"]["set_aside"],
            aside.file_name().unwrap().to_string_lossy().as_ref()
        );
        assert_eq!(rec["recovery"]["bytes"], tail.len());
        assert_eq!(rec["recovery"]["line"], 3);
        let digest = ring::digest::digest(&ring::digest::SHA256, &tail);
        assert_eq!(
            rec["recovery"]["sha256"],
            crate::random::hex(digest.as_ref())
        );
        assert!(rec.get("decision").is_none() && rec.get("request_id").is_none());
        assert_eq!(got[3]["request_id"], "r9");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&aside).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }
}

fn lines_of(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_fails_closed_until_the_log_accepts_writes_again() {
    let log = AuditLog::open(std::path::Path::new("/dev/full")).unwrap();
    assert!(log.is_writable());
    assert!(log.append_blocking(&ev(1)).is_err());
    assert!(!log.is_writable());
    let again = log.append_blocking(&ev(2)).unwrap_err().to_string();
    assert!(again.contains("appends have failed since"), "{again}");
    assert!(log.check_writable().is_err());
    // Still failing: the retry fails too, and the log stays down.
    assert!(log.tick_blocking(std::time::Instant::now()).is_err());
    assert!(!log.is_writable());
}

#[test]
fn appends_resume_after_a_failure_with_a_line_that_counts_the_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    log.append_blocking(&ev(1)).unwrap();
    // The file stops taking writes (a read-only handle stands in for a
    // full disk).
    let writable = std::mem::replace(&mut log.lock().file, std::fs::File::open(&p).unwrap());
    let e = log.append_blocking(&ev(2)).unwrap_err().to_string();
    assert!(!log.is_writable(), "{e}");
    assert!(log.check_writable().is_err(), "a request is refused");
    assert!(log.tick_blocking(std::time::Instant::now()).is_err());
    assert_eq!(
        verify_file(&p).unwrap().lines,
        1,
        "the file is at its last good record"
    );
    // The disk takes writes again: the next tick resumes, no reopening.
    log.lock().file = writable;
    log.tick_blocking(std::time::Instant::now()).unwrap();
    assert!(log.is_writable());
    log.append_blocking(&ev(3)).unwrap();
    let r = verify_file(&p).unwrap();
    assert_eq!((r.lines, r.torn), (3, None));
    let got = lines(&p);
    assert_eq!(got[1]["action"], "log_resumed");
    assert_eq!(
        got[1]["outage"]["refused"], 2,
        "the failed request and the one refused meanwhile"
    );
    assert!(got[1]["outage"]["since"].is_string() && got[1]["outage"]["error"].is_string());
    assert_eq!(got[2]["request_id"], "r3");
}

/// A token refusal from 192.0.2.7.
fn refusal(rid: &str) -> Event {
    let mut b = Event::exchange(rid, "production", &[]);
    b.source("192.0.2.7".parse().unwrap());
    b.refused(Refusal::deny(
        Stage::Token,
        "bad_signature",
        &json!({"code": "bad_signature"}),
    ))
}

#[test]
fn refusals_cost_no_sync_of_their_own_and_repeats_become_one_summary() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let settings = AuditSettings {
        refusals: RefusalSettings {
            window: std::time::Duration::from_secs(60),
            table_size: 16,
        },
        sync_interval: std::time::Duration::from_secs(1),
        // No checkpoint in this test's minute.
        checkpoints: CheckpointSettings {
            interval: std::time::Duration::from_secs(3600),
            stdout: false,
            ..CheckpointSettings::default()
        },
        rotation: RotateSettings::default(),
    };
    let log = AuditLog::open_with(&p, settings).unwrap();
    let synced = |log: &AuditLog| {
        let st = log.lock();
        st.written == st.synced
    };
    for i in 0..1000 {
        log.append_blocking(&refusal(&format!("r{i}"))).unwrap();
    }
    assert!(!synced(&log), "written, not synced");
    assert_eq!(lines(&p).len(), 1, "the first refusal only");
    // An allow is synced, and everything before it.
    log.append_blocking(&ev(1)).unwrap();
    assert!(synced(&log));
    log.append_blocking(&refusal("late")).unwrap();
    assert!(
        synced(&log) && lines(&p).len() == 2,
        "a counted refusal writes nothing"
    );
    // The window ends: the tick writes the summary and syncs.
    log.tick_blocking(std::time::Instant::now() + std::time::Duration::from_secs(61))
        .unwrap();
    assert!(synced(&log));
    let got = lines(&p);
    assert_eq!(got.len(), 3, "{got:#?}");
    let s = &got[2];
    assert_eq!(s["action"], "refusals_summarized");
    assert_eq!(s["summary"]["count"], 1000);
    assert_eq!(s["summary"]["first_request_id"], "r1");
    assert_eq!(s["summary"]["last_request_id"], "late");
    assert_eq!(s["source"], "192.0.2.7");
    assert_eq!(
        (&s["stage"], &s["code"]),
        (&json!("token"), &json!("bad_signature"))
    );
    assert_eq!(verify_file(&p).unwrap().lines, 3);
}

#[tokio::test]
async fn flush_writes_the_open_windows_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    for i in 0..3 {
        log.append(refusal(&format!("r{i}"))).await.unwrap();
    }
    log.flush().await.unwrap();
    let got = lines(&p);
    assert_eq!(got.len(), 3, "first refusal, summary, closing checkpoint");
    assert_eq!(got[1]["summary"]["count"], 2);
    assert_eq!(got[2]["action"], "checkpoint");
    assert_eq!(got[2]["checkpoint"]["seq"], 2);
    let st = log.lock();
    assert_eq!(st.written, st.synced);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/audit")
        .join(name)
}

/// Every line of the log at `p`, parsed.
pub(super) fn lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn claims(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// `tests/fixtures/audit/old.jsonl` was written by jobkey before the audit
/// record was a typed `Event` (commit a61f183): a temporary integration
/// test ran the in-process stack (`tests/it/support`) with the shipped
/// policies, made a GitHub allow of `deploy-db`, a GitLab allow of
/// `app-config`, a policy deny, a token refusal (`audience_mismatch`), a
/// revocation by handle and the same revocation again, then copied the
/// audit log, its fingerprint key and the two issued secret values (random
/// values of a throwaway dev OpenBao) next to it. Such a log must still
/// verify and be searchable.
#[test]
fn old_log_verifies_with_the_new_code() {
    let r = verify_file(&fixture("old.jsonl")).unwrap();
    assert_eq!(r.lines, 6);
    // And the chain continues from it.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    std::fs::copy(fixture("old.jsonl"), &p).unwrap();
    AuditLog::open(&p).unwrap().append_blocking(&ev(7)).unwrap();
    assert_eq!(verify_file(&p).unwrap().lines, 7);
}

/// The same old log (see `old_log_verifies_with_the_new_code`) reads back
/// line by line as `Event`s, with the defaults for what old lines lack.
#[test]
fn old_log_lines_read_as_events() {
    let events: Vec<Event> = lines(&fixture("old.jsonl"))
        .into_iter()
        .map(|l| serde_json::from_value(l).unwrap())
        .collect();
    type Line<'a> = (Action, Option<Decision>, Option<Stage>, Option<&'a str>);
    let summary: Vec<Line<'_>> = events
        .iter()
        .map(|e| (e.action(), e.decision(), e.stage(), e.environment()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                Action::Exchange,
                Some(Decision::Allow),
                None,
                Some("production")
            ),
            (
                Action::Exchange,
                Some(Decision::Allow),
                None,
                Some("staging")
            ),
            (
                Action::Exchange,
                Some(Decision::Deny),
                Some(Stage::Policy),
                Some("production")
            ),
            (
                Action::Exchange,
                Some(Decision::Deny),
                Some(Stage::Token),
                Some("production")
            ),
            (
                Action::Revoke,
                Some(Decision::Allow),
                None,
                Some("production")
            ),
            (
                Action::Revoke,
                Some(Decision::Deny),
                Some(Stage::Revoke),
                None
            ),
        ]
    );
    let id = events[0].identity().unwrap();
    assert!(id.is_verified(), "old identities were all verified");
    assert_eq!(id.issuer(), Some("github"));
    assert_eq!(id.claim("run_id").unwrap().to_text(), "9876543210");
    assert_eq!(events[0].credentials()[0].name, "deploy-db");
    assert!(events[3].identity().is_none());
    assert_eq!(events[4].exchange_owner().unwrap().run, "9876543210");
}

/// `jobkey audit find` in the same old log (see
/// `old_log_verifies_with_the_new_code`) finds who received each value.
#[test]
fn old_log_is_searchable_by_value() {
    let fp = Fingerprinter::load(&fixture("old.fingerprint-key")).unwrap();
    let password = std::fs::read_to_string(fixture("old.deploy-db-password")).unwrap();
    let found = find_value(&fixture("old.jsonl"), &fp, &format!("{password}\n")).unwrap();
    assert!(found.unreadable.is_empty());
    let [m] = found.matches.as_slice() else {
        panic!("{found:?}")
    };
    assert_eq!(
        (
            m.seq,
            m.credential.as_str(),
            m.field.as_str(),
            m.rule.as_str()
        ),
        (1, "deploy-db", "password", "github-api-deploy")
    );
    assert_eq!(m.environment, "production");
    let who = m.identity.as_ref().unwrap();
    assert_eq!(who.claim("repository").unwrap().to_text(), "acme/api");

    let key = std::fs::read_to_string(fixture("old.app-config-api-key")).unwrap();
    let found = find_value(&fixture("old.jsonl"), &fp, &key).unwrap();
    assert_eq!(found.matches.len(), 1);
    assert_eq!(found.matches[0].seq, 2);
    assert_eq!(
        found.matches[0]
            .identity
            .as_ref()
            .unwrap()
            .claim("project_id")
            .unwrap()
            .to_text(),
        "4242"
    );
    let none = find_value(&fixture("old.jsonl"), &fp, "never-issued").unwrap();
    assert!(none.matches.is_empty());
}

#[test]
fn find_reports_lines_it_cannot_read_and_skips_revocations() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let keyfile = dir.path().join("key");
    let fp = Fingerprinter::load_or_create(&keyfile).unwrap();
    let issued = IssuedCredential {
        name: "db".into(),
        rule: "r".into(),
        kind: "kv".into(),
        ttl_s: 60,
        wrapped: false,
        fingerprints: [("password".to_owned(), fp.fingerprint("s3cret-value"))].into(),
    };
    let log = AuditLog::open(&p).unwrap();
    log.append_blocking(&Event::exchange("r1", "production", &[]).allow(vec![issued], 0))
        .unwrap();
    drop(log);
    let mut text = std::fs::read_to_string(&p).unwrap();
    text.push_str("{\"cut off");
    std::fs::write(&p, text).unwrap();
    let found = find_value(&p, &fp, "s3cret-value").unwrap();
    assert_eq!(found.matches.len(), 1);
    assert_eq!(found.unreadable, vec![2]);
}

/// A GitHub-shaped verified token's claims.
fn github_claims() -> Map<String, Value> {
    claims(json!({
        "iss": "https://token.actions.githubusercontent.com",
        "sub": "repo:acme/api:environment:production",
        "repository": "acme/api",
        "run_id": "9876543210",
        "ref": "refs/heads/main",
        "aud": ["jobkey"],
        "nested": {"a": 1},
        "build_number": 12,
        "ref_protected": true,
    }))
}

const NAMES: &[&str] = &[
    "iss",
    "sub",
    "repository",
    "run_id",
    "ref",
    "build_number",
    "ref_protected",
    "nested",
];

#[test]
fn an_allow_line_has_its_fields_and_fingerprints_only() {
    let dir = tempfile::tempdir().unwrap();
    let fp = Fingerprinter::load_or_create(&dir.path().join("k")).unwrap();
    let mut b = Event::exchange("rid1", "production", &["deploy-db".to_owned()]);
    b.identity(Identity::verified("github", &github_claims()));
    let issued = IssuedCredential {
        name: "deploy-db".into(),
        rule: "github-api-deploy".into(),
        kind: "database".into(),
        ttl_s: 300,
        wrapped: false,
        fingerprints: [("password".to_owned(), fp.fingerprint("pw-value-123"))].into(),
    };
    let line = b.allow(vec![issued], 1).to_map().unwrap();
    let line = Value::Object(line);
    assert_eq!(line["action"], "exchange");
    assert_eq!(line["decision"], "allow");
    assert_eq!(line["environment"], "production");
    assert_eq!(line["requested"], json!(["deploy-db"]));
    assert_eq!(line["revocable"], 1);
    assert_eq!(
        line["identity"],
        json!({
            "issuer": "github",
            "verified": true,
            "iss": "https://token.actions.githubusercontent.com",
            "sub": "repo:acme/api:environment:production",
            "repository": "acme/api",
            "run_id": "9876543210",
            "ref": "refs/heads/main",
            "aud": ["jobkey"],
            "nested": {"a": 1},
            "build_number": 12,
            "ref_protected": true,
        }),
        "every claim of a verified token, arrays and objects as sent"
    );
    assert_eq!(line["credentials"][0]["name"], "deploy-db");
    assert!(
        line["credentials"][0]["fingerprints"]["password"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:")
    );
    assert!(!line.to_string().contains("pw-value-123"));
    for absent in ["stage", "code", "reason", "exchange", "auth", "revoked"] {
        assert!(line.get(absent).is_none(), "{absent}: {line}");
    }
}

#[test]
fn a_refusal_says_which_decision_stage_and_code() {
    for (refusal, decision, stage) in [
        (
            Refusal::deny(
                Stage::Token,
                "token_expired",
                &json!({"code": "token_expired"}),
            ),
            "deny",
            "token",
        ),
        (
            Refusal::error(
                Stage::Vault,
                "vault_unavailable",
                &json!({"credential": "db"}),
            ),
            "error",
            "vault",
        ),
        (
            Refusal::error(Stage::Store, "lease_store_unavailable", &json!({})),
            "error",
            "lease_store",
        ),
    ] {
        let code = refusal.clone();
        let line = Value::Object(
            Event::exchange("r", "production", &[])
                .refused(refusal)
                .to_map()
                .unwrap(),
        );
        assert_eq!(line["decision"], decision);
        assert_eq!(line["stage"], stage);
        assert_eq!(line["action"], "exchange");
        assert!(line["code"].is_string(), "{line}");
        assert!(line.get("credentials").is_none());
        assert_eq!(code.decision().eq(&Decision::Deny), decision == "deny");
    }
}

#[test]
fn a_revocation_line_is_told_apart_by_its_action() {
    let mut b = Event::revoke("r2", "rid1");
    b.auth(Auth::Handle);
    let owner = crate::exchanges::Owner {
        issuer: "github".into(),
        sub: "repo:acme/api".into(),
        run: "1".into(),
    };
    b.exchange_found("production", Some(&owner));
    let line = Value::Object(b.revocation_done(2).to_map().unwrap());
    assert_eq!(
        (
            &line["action"],
            &line["decision"],
            &line["auth"],
            &line["revoked"]
        ),
        (
            &json!("revoke"),
            &json!("allow"),
            &json!("handle"),
            &json!(2)
        )
    );
    assert_eq!(line["environment"], "production");
    assert_eq!(line["exchange"], "rid1");
    assert_eq!(line["exchange_owner"]["run"], "1");
    assert!(line.get("credentials").is_none() && line.get("requested").is_none());

    // A failed one keeps the environment when the exchange was found.
    let mut b = Event::revoke("r3", "rid1");
    b.exchange_found("production", None);
    b.revoked(1);
    let line = Value::Object(
        b.refused(Refusal::error(
            Stage::Vault,
            "revoke_incomplete",
            &json!({}),
        ))
        .to_map()
        .unwrap(),
    );
    assert_eq!(
        (&line["decision"], &line["environment"], &line["revoked"]),
        (&json!("error"), &json!("production"), &json!(1))
    );
}

#[test]
fn caller_strings_are_bounded() {
    let long = "x".repeat(5000);
    let many: Vec<String> = (0..1000).map(|i| format!("{long}{i}")).collect();
    let line = Value::Object(
        Event::exchange("r", &long, &many)
            .refused(Refusal::deny(Stage::Token, "token_expired", &json!({})))
            .to_map()
            .unwrap(),
    );
    let env = line["environment"].as_str().unwrap();
    assert!(env.len() <= MAX_STRING_BYTES, "{env}");
    assert!(env.starts_with("<5000 bytes, sha256:"), "{env}");
    assert_eq!(line["requested"].as_array().unwrap().len(), MAX_REQUESTED);
    assert_eq!(line["requested_omitted"], 1000 - MAX_REQUESTED);
    assert!(
        line.to_string().len() < 8 * 1024,
        "{}",
        line.to_string().len()
    );
    let rev = Value::Object(
        Event::revoke("r", &long)
            .refused(Refusal::deny(Stage::Revoke, "unknown_exchange", &json!({})))
            .to_map()
            .unwrap(),
    );
    assert!(rev["exchange"].as_str().unwrap().len() <= MAX_STRING_BYTES);
}

#[test]
fn bounded_keeps_short_strings_and_marks_long_ones() {
    let exact = "a".repeat(MAX_STRING_BYTES);
    let cases: Vec<(String, String)> = vec![
        (String::new(), String::new()),
        ("production".into(), "production".into()),
        (exact.clone(), exact.clone()),
        (
            "a".repeat(MAX_STRING_BYTES + 1),
            // printf 'a%.0s' $(seq 129) | sha256sum | cut -c1-16
            "<129 bytes, sha256:c12cb024a2e5551c>".into(),
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(bounded(&input), expected, "{} bytes", input.len());
    }
    // Same long input, same marker; another, another.
    let a = "é".repeat(100);
    assert_eq!(bounded(&a), bounded(&a));
    assert_ne!(bounded(&a), bounded(&"è".repeat(100)));
}

#[test]
fn an_unverified_identity_is_marked_bounded_and_limited_to_the_names() {
    let mut c = github_claims();
    c.insert("repository".into(), json!("r".repeat(1000)));
    let id = Identity::unverified(&c, NAMES);
    let v = serde_json::to_value(&id).unwrap();
    assert_eq!(v["verified"], false);
    assert!(v.get("issuer").is_none(), "no configured issuer is claimed");
    assert_eq!(v["sub"], "repo:acme/api:environment:production");
    assert!(
        v["repository"]
            .as_str()
            .unwrap()
            .starts_with("<1000 bytes, sha256:")
    );
    assert!(v.get("nested").is_none() && v.get("aud").is_none());
    // Many names, many claims: at most MAX_IDENTITY_CLAIMS are kept.
    let names: Vec<String> = (0..500).map(|i| format!("c{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c: Map<String, Value> = names.iter().map(|n| (n.clone(), json!("v"))).collect();
    let id = serde_json::to_value(Identity::unverified(&c, &refs)).unwrap();
    assert_eq!(id.as_object().unwrap().len(), MAX_IDENTITY_CLAIMS + 1);
    // A claim named like the identity's own fields cannot pose as them.
    let c = claims(json!({"verified": true, "issuer": "github", "sub": "x"}));
    let id =
        serde_json::to_value(Identity::unverified(&c, &["verified", "issuer", "sub"])).unwrap();
    assert_eq!(id, json!({"verified": false, "sub": "x"}));
}

/// The two `jq` filters of the README's "The audit log" section, as
/// written there.
const JQ_PRODUCTION_LAST_HOUR: &str = r#"select(.action != "revoke" and .decision == "allow" and .environment == "production" and (.time[:19] + "Z" | fromdate) > now - 3600) | {time, request_id, issuer: .identity.issuer, who: (.identity.repository // .identity.project_path // .identity.sub), run: (.identity.run_id // .identity.pipeline_id // .identity.build_number), credentials: [.credentials[].name]}"#;
const JQ_REFUSED: &str = r#"select(.decision == "deny") | {time, action, environment, stage, code, verified: .identity.verified, who: (.identity.repository // .identity.project_path // .identity.sub), exchange, why: .reason}"#;

/// The README's filters read fields that real lines have: lines written
/// through `AuditLog` by the same builders the server uses, read back from
/// the file.
#[test]
fn the_readme_jq_filters_read_fields_real_lines_have() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for filter in [JQ_PRODUCTION_LAST_HOUR, JQ_REFUSED] {
        assert!(readme.contains(filter), "the README shows: {filter}");
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let fp = Fingerprinter::load_or_create(&dir.path().join("k")).unwrap();
    let log = AuditLog::open(&p).unwrap();
    let mut allow = Event::exchange("r1", "production", &[]);
    allow.identity(Identity::verified("github", &github_claims()));
    let issued = IssuedCredential {
        name: "deploy-db".into(),
        rule: "rule".into(),
        kind: "kv".into(),
        ttl_s: 60,
        wrapped: false,
        fingerprints: [("password".to_owned(), fp.fingerprint("v"))].into(),
    };
    log.append_blocking(&allow.allow(vec![issued], 0)).unwrap();
    let mut deny = Event::exchange("r2", "production", &[]);
    deny.identity(Identity::unverified(&github_claims(), NAMES));
    log.append_blocking(&deny.refused(Refusal::deny(
        Stage::Token,
        "audience_mismatch",
        &json!({"code": "audience_mismatch", "message": "…"}),
    )))
    .unwrap();
    let mut revoke = Event::revoke("r3", "r1");
    revoke.auth(Auth::Handle);
    log.append_blocking(&revoke.refused(Refusal::deny(
        Stage::Revoke,
        "unknown_exchange",
        &json!({"code": "unknown_exchange"}),
    )))
    .unwrap();
    drop(log);
    let got = lines(&p);
    let (allow, deny, revoke) = (&got[0], &got[1], &got[2]);

    // Who got production credentials in the last hour.
    assert_eq!(allow["action"], "exchange");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["environment"], "production");
    let time = allow["time"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(&format!("{}Z", &time[..19])).is_ok(),
        "`.time[:19] + \"Z\"` is what jq's fromdate reads: {time}"
    );
    assert!(allow["request_id"].is_string());
    assert_eq!(allow["identity"]["issuer"], "github");
    assert_eq!(allow["identity"]["repository"], "acme/api");
    assert_eq!(allow["identity"]["run_id"], "9876543210");
    assert_eq!(allow["credentials"][0]["name"], "deploy-db");

    // Who was refused and why.
    for line in [deny, revoke] {
        assert_eq!(line["decision"], "deny");
        for field in ["time", "action", "stage", "code", "reason"] {
            assert!(line.get(field).is_some(), "{field}: {line}");
        }
    }
    assert_eq!(deny["environment"], "production");
    assert_eq!(deny["identity"]["verified"], false);
    assert_eq!(
        deny["identity"]["sub"],
        "repo:acme/api:environment:production"
    );
    assert_eq!(revoke["exchange"], "r1");
}

#[test]
fn concurrent_allows_share_one_sync_and_each_returns_only_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    let before = log.sync_count();
    const N: u64 = 16;
    let returned = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        // A sync is under way (held here) while 16 decisions arrive.
        let leader = log.common.sync_lock.lock().unwrap();
        for i in 0..N {
            let (log, returned) = (&log, &returned);
            s.spawn(move || {
                log.append_blocking(&ev(i)).unwrap();
                returned.fetch_add(1, Ordering::SeqCst);
            });
        }
        while log.lock().written.seq < N {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            returned.load(Ordering::SeqCst),
            0,
            "written, not synced: no append has returned"
        );
        assert!(log.lock().synced.seq < N);
        drop(leader);
    });
    assert_eq!(returned.load(Ordering::SeqCst), N);
    assert_eq!(
        log.sync_count() - before,
        1,
        "one fdatasync for all {N} appends"
    );
    let st = log.lock();
    assert_eq!(st.synced, st.written);
    drop(st);
    let r = verify_file(&p).unwrap();
    assert_eq!((r.lines, r.torn), (N, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_appends_use_fewer_syncs_than_appends_and_all_verify() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    let before = log.sync_count();
    const N: u64 = 200;
    let mut tasks = Vec::new();
    for i in 0..N {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(ev(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let syncs = log.sync_count() - before;
    assert!(syncs < N, "{syncs} syncs for {N} appends");
    let r = verify_file(&p).unwrap();
    assert_eq!(r.lines, N);
    let st = log.lock();
    assert_eq!(st.synced, st.written);
}

/// A token's own `issuer` or `verified` claim cannot pose as the
/// identity's fields (which jobkey sets): they are not recorded.
#[test]
fn claims_named_like_identity_fields_are_not_recorded() {
    let c = claims(json!({"sub": "s", "verified": false, "issuer": "evil", "aud": ["a", "b"]}));
    let id = Identity::verified("github", &c);
    let v = serde_json::to_value(&id).unwrap();
    assert_eq!(
        v,
        json!({"issuer": "github", "verified": true, "sub": "s", "aud": ["a", "b"]})
    );
    let back: Identity = serde_json::from_value(v).unwrap();
    assert_eq!(back, id, "arrays read back as they were written");
}

/// The allows in flight while a sync is held up, as tasks.
fn spawn_allows(
    log: &AuditLog,
    ids: std::ops::Range<u64>,
) -> Vec<tokio::task::JoinHandle<Result<(), AuditError>>> {
    ids.map(|i| {
        let log = log.clone();
        tokio::spawn(async move { log.append(ev(i)).await })
    })
    .collect()
}

/// Waits until `seq` lines are written, blocking this thread (it may
/// hold `sync_lock`; the tasks run on the runtime's other threads).
fn until_written(log: &AuditLog, seq: u64) {
    while log.lock().written.seq < seq {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_allows_in_flight_share_one_sync_of_the_syncer_thread() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    assert!(
        log.lock().syncer.is_none(),
        "no thread until an async append"
    );
    let before = log.sync_count();
    const N: u64 = 16;
    let leader = log.common.sync_lock.lock().unwrap();
    let tasks = spawn_allows(&log, 0..N);
    until_written(&log, N);
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "written, not synced: no append has returned"
    );
    drop(leader);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(log.sync_count() - before, 1, "one fdatasync for all {N}");
    let st = log.lock();
    assert_eq!(st.synced, st.written);
    drop(st);
    assert_eq!(verify_file(&p).unwrap().lines, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_sync_fails_every_async_allow_waiting_for_it_until_the_log_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    log.append(ev(0)).await.unwrap();
    // The next sync fails (fdatasync of /dev/null is EINVAL), with 8
    // allows written and waiting for it.
    let good = std::mem::replace(
        &mut log.lock().sync_file,
        Arc::new(File::open("/dev/null").unwrap()),
    );
    let leader = log.common.sync_lock.lock().unwrap();
    let tasks = spawn_allows(&log, 1..9);
    until_written(&log, 9);
    drop(leader);
    for t in tasks {
        let e = t.await.unwrap().unwrap_err().to_string();
        assert!(e.contains("appends have failed since"), "{e}");
    }
    assert!(!log.is_writable());
    let r = verify_file(&p).unwrap();
    assert_eq!(
        (r.lines, r.torn),
        (1, None),
        "cut back to the last synced record"
    );
    assert!(log.append(ev(9)).await.is_err(), "down: refused");
    // The disk syncs again: the next tick resumes, and allows work.
    log.lock().sync_file = good;
    log.tick_blocking(std::time::Instant::now()).unwrap();
    log.append(ev(10)).await.unwrap();
    let got = lines(&p);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1]["action"], "log_resumed");
    assert_eq!(got[1]["outage"]["refused"], 2, "{}", got[1]);
    assert_eq!(got[2]["request_id"], "r10");
}

#[tokio::test]
async fn a_waiter_whose_syncer_died_gets_an_error_and_the_next_allow_starts_another() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&p).unwrap();
    log.append(ev(1)).await.unwrap();
    log.lock().syncer.as_ref().unwrap().kill();
    let e = log.append(ev(2)).await.unwrap_err().to_string();
    assert!(e.contains("has stopped"), "{e}");
    log.append(ev(3)).await.unwrap();
    assert!(log.lock().syncer.as_ref().unwrap().is_running());
    let r = verify_file(&p).unwrap();
    assert_eq!((r.lines, r.torn), (3, None));
}

#[tokio::test]
async fn the_syncer_thread_ends_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut probes = Vec::new();
    for i in 0..100 {
        let log = AuditLog::open(&dir.path().join(format!("{i}.jsonl"))).unwrap();
        let clone = log.clone();
        clone.append(ev(i)).await.unwrap();
        let probe = log.lock().syncer.as_ref().unwrap().probe();
        assert!(!probe.thread_ended());
        probes.push(probe);
        // Both handles go: the thread must not keep the log (or itself).
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while probes.iter().any(|p| !p.thread_ended()) {
        assert!(
            std::time::Instant::now() < deadline,
            "a syncer thread outlived its log"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[test]
fn a_line_is_its_canonical_record_serialized_once_with_hash_last() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = AuditLog::open_as(&p, AuditSettings::default(), Some("r-1")).unwrap();
    log.append_blocking(&ev(1)).unwrap();
    log.append_blocking(&ev(2)).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let mut prev = chain::GENESIS.to_owned();
    for line in text.lines() {
        let (body, tail) = line.split_at(line.len() - r#","hash":""}"#.len() - 64);
        let hash = &tail[9..73];
        assert_eq!(tail, format!(r#","hash":"{hash}"}}"#), "{line}");
        let Value::Object(map) = serde_json::from_str::<Value>(line).unwrap() else {
            panic!("{line}");
        };
        let mut record = map.clone();
        record.remove("hash");
        let canonical = chain::canonical(&record).unwrap();
        assert_eq!(format!("{body}}}").as_bytes(), canonical, "sorted, compact");
        assert_eq!(chain::hash_bytes(&prev, &canonical), hash);
        assert_eq!(chain::hash(&prev, &record).unwrap(), hash);
        assert_eq!(map["replica"], "r-1");
        prev = hash.to_owned();
    }
    assert_eq!(verify_file(&p).unwrap().lines, 2);
}

#[test]
fn seal_adds_hash_to_an_object_only() {
    let cases: [(&[u8], Option<&str>); 4] = [
        (b"{}", Some("{\"hash\":\"ab\"}\n")),
        (b"{\"a\":1}", Some("{\"a\":1,\"hash\":\"ab\"}\n")),
        (b"[1]", None),
        (b"", None),
    ];
    for (canonical, want) in cases {
        let got = chain::seal(canonical.to_vec(), "ab").ok();
        assert_eq!(got.as_deref(), want.map(str::as_bytes), "{canonical:?}");
    }
}
