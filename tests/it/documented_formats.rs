//! The formats people write by hand are documented where they look: the
//! fixture file in `jobkey policy test --help`, the dev issuer's `POST
//! /mint` body in `jobkey dev-issuer --help`. Each example shown is run as
//! written, so the help cannot drift from what the parsers accept.

use base64::Engine as _;
use serde_json::Value;

use crate::support::{jobkey_cli, policy_test, rsa_key};

/// The lines of `help` from the one starting with `first` (after two
/// spaces of indentation) to the next blank line, without that indentation.
fn example(help: &str, first: &str) -> String {
    let lines: Vec<&str> = help.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("  {first}")))
        .unwrap_or_else(|| panic!("no example starting with {first:?} in:\n{help}"));
    lines[start..]
        .iter()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| format!("{}\n", l.strip_prefix("  ").unwrap_or(l)))
        .collect()
}

#[test]
fn policy_test_help_shows_the_fixture_format() {
    let (code, help, err) = jobkey_cli(&["policy", "test", "--help"]);
    assert_eq!(code, 0, "{err}");
    for field in [
        "templates:",
        "cases:",
        "environment:",
        "issuer:",
        "base:",
        "claims:",
        "token:",
        "credentials:",
        "expect: deny",
        "code:",
        "rule:",
    ] {
        assert!(help.contains(field), "{field} missing from:\n{help}");
    }
    // The example runs as a fixture of the shipped policies, and passes.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("help.yaml"), example(&help, "templates:")).expect("write");
    let (code, out, err) = policy_test(dir.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("PASS  a feature branch is refused"), "{out}");
}

#[tokio::test]
async fn dev_issuer_help_shows_the_mint_body() {
    let (code, help, err) = jobkey_cli(&["dev-issuer", "--help"]);
    assert_eq!(code, 0, "{err}");
    for text in [
        "POST /mint",
        "\"shape\"",
        "\"audience\"",
        "\"claims\"",
        "{\"token\":",
    ] {
        assert!(help.contains(text), "{text} missing from:\n{help}");
    }
    for shape in ["github", "gitlab", "buildkite"] {
        assert!(help.contains(shape), "{shape} missing from:\n{help}");
    }
    // The example body, sent to a dev issuer, mints what the help says.
    let body: Value =
        serde_json::from_str(&example(&help, "{\"shape\"")).expect("the body is JSON");
    jobkey::install_rustls_ring_provider();
    let issuer = jobkey::spawn_dev_issuer(
        "127.0.0.1:0".parse().expect("addr"),
        rsa_key("issuer-a", "help-1"),
    )
    .await
    .expect("dev issuer");
    let answer: Value = reqwest::Client::new()
        .post(format!("{}/mint", issuer.url()))
        .json(&body)
        .send()
        .await
        .expect("mint")
        .json()
        .await
        .expect("json");
    let token = answer["token"].as_str().expect("a token");
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("base64url"),
    )
    .expect("claims");
    assert_eq!(claims["iss"], issuer.url());
    assert_eq!(claims["aud"], "jobkey");
    assert_eq!(claims["ref"], "refs/heads/dev");
    assert!(claims.get("environment").is_none(), "{claims}");
    assert_eq!(claims["repository"], "acme/api");
}
