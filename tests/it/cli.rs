//! The binary's commands, as a user runs them.

use crate::support::jobkey_cli;

#[test]
fn every_command_has_help() {
    for cmd in [
        vec![],
        vec!["serve"],
        vec!["check"],
        vec!["dev-issuer"],
        vec!["audit"],
        vec!["audit", "verify"],
        vec!["audit", "find"],
        vec!["fetch"],
        vec!["revoke"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let (code, out, _) = jobkey_cli(&args);
        assert_eq!(code, 0, "{cmd:?}");
        assert!(out.contains("Usage:"), "{cmd:?}: {out}");
    }
}

#[test]
fn check_validates_the_example_config_and_names_errors() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/jobkey.toml");
    let (code, out, err) = jobkey_cli(&["check", "--config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("production") && out.contains("staging"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(example)
            .unwrap()
            .replace("audiences", "audience"),
    )
    .unwrap();
    let (code, _, err) = jobkey_cli(&["check", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("bad.toml") && err.contains("audience"),
        "{err}"
    );
}

#[test]
fn audit_verify_reports_the_first_broken_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("audit.jsonl");
    let log = jobkey::AuditLog::open(&p).unwrap();
    for i in 0..3 {
        let event = jobkey::Event::exchange(&format!("r{i}"), "production", &[]);
        let event = if i == 1 {
            event.refused(jobkey::Refusal::deny(
                jobkey::Stage::Policy,
                "no_rule_matched",
                &serde_json::json!({}),
            ))
        } else {
            event.allow(Vec::new(), 0)
        };
        log.append_blocking(&event).unwrap();
    }
    let (code, out, _) = jobkey_cli(&["audit", "verify", p.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(out.contains("3 records"), "{out}");
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replacen("\"deny\"", "\"allow\"", 1);
    std::fs::write(&p, text).unwrap();
    let (code, _, err) = jobkey_cli(&["audit", "verify", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn the_dev_issuer_refuses_to_listen_beyond_loopback() {
    let key = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/issuer-a.pem"
    );
    let (code, _, err) = jobkey_cli(&["dev-issuer", "--listen", "0.0.0.0:0", "--key", key]);
    assert_eq!(code, 1);
    assert!(err.contains("loopback"), "{err}");
}
