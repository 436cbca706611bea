//! The Vault layer against a real OpenBao dev server (see
//! `support/openbao.rs` for how `bao` is found or installed).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::support::OpenBao;
use jobkey::SecretString;
use jobkey::{Readiness, Vault, VaultAuth, VaultConfig, VaultError};

fn not_ready(reason: &'static str) -> Readiness {
    Readiness {
        ready: false,
        reason: Some(reason),
    }
}

fn config(bao: &OpenBao, auth: VaultAuth) -> VaultConfig {
    jobkey::install_rustls_ring_provider();
    VaultConfig {
        address: bao.url(),
        ca_file: None,
        auth,
        request_timeout: Duration::from_secs(2),
        token_role: None,
    }
}

/// A token file for `token` in the server's temp dir (with a trailing
/// newline, as `echo` or Kubernetes would write it).
fn token_file(bao: &OpenBao, token: &str) -> VaultAuth {
    VaultAuth::TokenFile(bao.write_file(
        &format!("token-{}", crate::support::random(12)),
        &format!("{token}\n"),
    ))
}

/// A Vault handle logged in with `token` (from a token file).
async fn connect(bao: &OpenBao, token: &str) -> Vault {
    Vault::connect(config(bao, token_file(bao, token)))
        .await
        .expect("connect")
}

fn exposed(m: &BTreeMap<String, SecretString>) -> BTreeMap<&str, &str> {
    m.iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect()
}

fn fields(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Writes the fixtures every reading test uses.
fn put_fixtures(bao: &OpenBao) {
    bao.bao(&[
        "kv",
        "put",
        "secret/app/db",
        "user=app",
        "password=pw-Xq7-secret",
    ]);
    bao.bao_stdin(
        &["kv", "put", "secret/app/json", "-"],
        Some(r#"{"port": 5432, "enabled": true, "hosts": ["a", "b"], "name": "db"}"#),
    );
}

/// The token-file test also checks every read case and Debug output.
#[tokio::test]
async fn token_file_reads_kv_v2() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    let cfg = config(&bao, token_file(&bao, bao.root_token()));
    let cfg_debug = format!("{cfg:?}");
    let vault = Vault::connect(cfg).await.expect("connect");
    assert_eq!(
        vault.readiness(),
        Readiness {
            ready: true,
            reason: None
        }
    );
    vault.health().await.expect("healthy");

    // All fields.
    let all = vault.read_kv("secret", "app/db", None).await.unwrap();
    assert_eq!(
        exposed(&all),
        BTreeMap::from([("password", "pw-Xq7-secret"), ("user", "app")])
    );

    // Selected fields.
    let some = vault
        .read_kv("secret", "app/db", Some(&fields(&["password"])))
        .await
        .unwrap();
    assert_eq!(
        exposed(&some),
        BTreeMap::from([("password", "pw-Xq7-secret")])
    );

    // Non-string values come back as JSON text.
    let json = vault.read_kv("secret", "/app/json/", None).await.unwrap();
    assert_eq!(
        exposed(&json),
        BTreeMap::from([
            ("enabled", "true"),
            ("hosts", r#"["a","b"]"#),
            ("name", "db"),
            ("port", "5432"),
        ])
    );

    // A missing field is NotFound and names the field, not the values.
    let e = vault
        .read_kv("secret", "app/db", Some(&fields(&["user", "api_key"])))
        .await
        .unwrap_err();
    match &e {
        VaultError::NotFound { what } => {
            assert!(
                what.contains("api_key") && what.contains("secret/app/db"),
                "{what}"
            )
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(!format!("{e} {e:?}").contains("pw-Xq7"), "{e:?}");

    // A missing path is NotFound.
    let e = vault.read_kv("secret", "app/nope", None).await.unwrap_err();
    assert!(
        matches!(&e, VaultError::NotFound { what } if what.contains("secret/app/nope")),
        "{e:?}"
    );
    assert!(!e.is_unavailable());

    // A path that tries to leave the mount never reaches Vault.
    let e = vault
        .read_kv("secret", "app/../../sys/health", None)
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::InvalidPath { .. }), "{e:?}");

    // Nothing prints the token or a secret value.
    let shown = format!("{vault:?} {cfg_debug} {all:?} {some:?}");
    assert!(!shown.contains(bao.root_token()), "{shown}");
    assert!(!shown.contains("pw-Xq7"), "{shown}");
    assert!(shown.contains(&bao.addr()), "{shown}");
}

/// AppRole with a 3 s token TTL and a 6 s max TTL: the background task must
/// renew the token (past 3 s) and log in again (past 6 s) so reads keep
/// working.
#[tokio::test]
async fn approle_login_renewal_and_relogin_keep_reads_working() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    bao.read_secrets_policy("read-secrets");
    let ids = bao.approle(&[
        "token_policies=read-secrets",
        "token_ttl=3s",
        "token_max_ttl=6s",
        "secret_id_ttl=0",
    ]);
    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id_file: ids.role_id_file.clone(),
        secret_id_file: ids.secret_id_file.clone(),
    };
    let vault = Vault::connect(config(&bao, auth)).await.expect("connect");
    let read = |v: Vault| async move {
        v.read_kv("secret", "app/db", Some(&fields(&["user"])))
            .await
            .map(|m| m["user"].expose_secret().to_owned())
    };
    assert_eq!(read(vault.clone()).await.unwrap(), "app");

    // Past the first TTL: only a renewal (or a new login) keeps it alive.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert_eq!(
        read(vault.clone()).await.expect("read after the first TTL"),
        "app"
    );
    assert!(vault.is_ready());

    // Past the max TTL: only a new login keeps it alive.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        read(vault.clone()).await.expect("read after the max TTL"),
        "app"
    );
    assert!(vault.is_ready());

    // Neither the secret_id nor any token shows up in Debug.
    let shown = format!("{vault:?}");
    assert!(
        !shown.contains(&ids.secret_id) && !shown.contains(&ids.role_id),
        "{shown}"
    );
}

#[tokio::test]
async fn bad_approle_secret_id_is_a_login_error() {
    let bao = OpenBao::start();
    let ids = bao.approle(&["token_ttl=60s"]);
    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id_file: ids.role_id_file,
        secret_id_file: bao.write_file("wrong_secret_id", "not-the-secret-id-7f3a"),
    };
    let e = Vault::connect(config(&bao, auth)).await.unwrap_err();
    assert!(matches!(e, VaultError::Login { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("7f3a"), "{e:?}");
}

#[tokio::test]
async fn token_without_policy_gets_permission_denied() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    let weak = bao.create_token(&["-policy=default", "-ttl=1h"]);
    let vault = connect(&bao, &weak).await;
    let e = vault.read_kv("secret", "app/db", None).await.unwrap_err();
    assert!(
        matches!(&e, VaultError::PermissionDenied { what } if what.contains("secret/app/db")),
        "{e:?}"
    );
    // jobkey's token itself is fine: still ready.
    assert!(vault.is_ready());
    let shown = format!("{e} {e:?} {vault:?}");
    assert!(!shown.contains(&weak), "{shown}");
}

/// A static token that Vault no longer accepts is a Login error (not the
/// job's PermissionDenied), and the handle stops being ready.
#[tokio::test]
async fn revoked_static_token_is_a_login_error_and_not_ready() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    let token = bao.create_token(&["-policy=root", "-ttl=1h"]);
    let vault = connect(&bao, &token).await;
    assert!(vault.read_kv("secret", "app/db", None).await.is_ok());
    bao.bao(&["token", "revoke", &token]);
    let e = vault.read_kv("secret", "app/db", None).await.unwrap_err();
    assert!(matches!(e, VaultError::Login { .. }), "{e:?}");
    assert_eq!(vault.readiness(), not_ready("jobkey's token was refused"));
    assert!(matches!(
        vault.health().await,
        Err(VaultError::Login { .. })
    ));
}

/// Nobody uses the handle: the background poll alone finds that Vault no
/// longer accepts the token, within one interval, and says so; `health()`
/// does the same check at once.
#[tokio::test]
async fn a_token_revoked_behind_jobkeys_back_is_seen_without_any_request() {
    let bao = OpenBao::start();
    let token = bao.jobkey_token("1h");
    let vault = Vault::connect(config(&bao, token_file(&bao, &token)))
        .await
        .expect("connect");
    assert!(vault.is_ready());
    bao.bao(&["token", "revoke", &token]);
    let t0 = Instant::now();
    while vault.is_ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(7),
            "still ready {:?} after the revocation",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(vault.readiness(), not_ready("jobkey's token was refused"));

    // The same, asked explicitly, on a second handle.
    let other = bao.jobkey_token("1h");
    let vault = Vault::connect(config(&bao, token_file(&bao, &other)))
        .await
        .expect("connect");
    bao.bao(&["token", "revoke", &other]);
    let e = vault.health().await.unwrap_err();
    assert!(matches!(e, VaultError::Login { .. }), "{e:?}");
    assert_eq!(vault.readiness(), not_ready("jobkey's token was refused"));
}

#[tokio::test]
async fn stopped_vault_is_unavailable_within_the_timeout_and_recovers() {
    let mut bao = OpenBao::start();
    put_fixtures(&bao);
    let vault = connect(&bao, bao.root_token()).await;
    assert!(vault.is_ready());

    bao.stop();
    let t0 = Instant::now();
    let e = vault.read_kv("secret", "app/db", None).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(e.is_unavailable(), "{e:?}");
    assert!(!vault.is_ready());
    assert!(vault.health().await.unwrap_err().is_unavailable());
    assert_eq!(vault.readiness(), not_ready("vault unreachable"));

    // Same port, same root token (dev mode forgot the secrets).
    bao.restart();
    put_fixtures(&bao);
    vault.health().await.expect("healthy again");
    assert!(vault.is_ready());
    let m = vault
        .read_kv("secret", "app/db", None)
        .await
        .expect("read again");
    assert_eq!(m["user"].expose_secret(), "app");
}

#[tokio::test]
async fn frozen_vault_times_out_as_unavailable() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    let vault = connect(&bao, bao.root_token()).await;
    bao.pause();
    let t0 = Instant::now();
    let e = vault.read_kv("secret", "app/db", None).await.unwrap_err();
    let took = t0.elapsed();
    bao.resume();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(!vault.is_ready());
}

#[tokio::test]
async fn sealed_vault_is_unavailable() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    let vault = connect(&bao, bao.root_token()).await;
    bao.bao(&["operator", "seal"]);
    let e = vault.read_kv("secret", "app/db", None).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    let e = vault.health().await.unwrap_err();
    assert!(
        e.is_unavailable() && e.to_string().contains("sealed"),
        "{e}"
    );
    assert_eq!(vault.readiness(), not_ready("vault sealed"));
    // And connecting to a sealed Vault says so.
    let e = Vault::connect(config(&bao, token_file(&bao, bao.root_token())))
        .await
        .unwrap_err();
    assert!(
        e.is_unavailable() && e.to_string().contains("sealed"),
        "{e}"
    );
}

#[tokio::test]
async fn configuration_errors_name_the_source_not_the_secret() {
    let bao = OpenBao::start();
    // Missing token file.
    let missing = bao.dir().join("no-such-token");
    let e = Vault::connect(config(&bao, VaultAuth::TokenFile(missing)))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, VaultError::Config { reason } if reason.contains("no-such-token")),
        "{e:?}"
    );
    // A token Vault does not know.
    let e = Vault::connect(config(&bao, token_file(&bao, "s.unknown-token-9c1e")))
        .await
        .unwrap_err();
    assert!(matches!(e, VaultError::Login { .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("9c1e"), "{e:?}");
    // An unreadable CA file for an https Vault.
    let mut cfg = config(&bao, token_file(&bao, bao.root_token()));
    cfg.address = format!("https://127.0.0.1:{}", bao.port()).parse().unwrap();
    cfg.ca_file = Some(bao.write_file("ca.pem", "not a certificate"));
    let e = Vault::connect(cfg).await.unwrap_err();
    assert!(
        matches!(&e, VaultError::Config { reason } if reason.contains("ca.pem")),
        "{e:?}"
    );
}

#[tokio::test]
async fn https_vault_with_a_custom_ca_file() {
    let bao = OpenBao::start_tls();
    put_fixtures(&bao);
    let mut cfg = config(&bao, token_file(&bao, bao.root_token()));
    assert_eq!(cfg.address.scheme(), "https");

    // Without the CA, the certificate is not trusted: no connection.
    // rustls names the reason: no configured root issued it.
    let e = Vault::connect(cfg.clone()).await.unwrap_err();
    assert!(
        matches!(&e, VaultError::Unavailable { reason }
            if reason.contains("invalid peer certificate: UnknownIssuer")),
        "{e:?}"
    );

    cfg.ca_file = Some(bao.ca_file());
    let vault = Vault::connect(cfg).await.expect("connect over TLS");
    let m = vault.read_kv("secret", "app/db", None).await.unwrap();
    assert_eq!(m["user"].expose_secret(), "app");
    vault.health().await.expect("healthy");
    assert!(vault.is_ready());
}

/// A static token is renewed while it can be; once it reaches its max TTL
/// the handle is not ready and says Login, until the token file holds a
/// working token again.
#[tokio::test]
async fn static_token_is_renewed_then_not_ready_at_max_ttl_then_reloaded() {
    let bao = OpenBao::start();
    put_fixtures(&bao);
    let short = bao.create_token(&["-policy=root", "-ttl=2s", "-explicit-max-ttl=4s"]);
    let file = bao.write_file("rotating-token", &short);
    let t0 = Instant::now();
    let vault = Vault::connect(config(&bao, VaultAuth::TokenFile(file.clone())))
        .await
        .expect("connect");

    // Past the first TTL: renewed.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    vault
        .read_kv("secret", "app/db", None)
        .await
        .expect("read after the first TTL");

    // Past the max TTL: dead, and the handle knows it.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed())).await;
    let e = vault.read_kv("secret", "app/db", None).await.unwrap_err();
    assert!(matches!(e, VaultError::Login { .. }), "{e:?}");
    assert!(!vault.is_ready());

    // A sidecar rotates the file: the background task picks it up.
    let fresh = bao.create_token(&["-policy=root", "-ttl=1h"]);
    std::fs::write(&file, &fresh).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !vault.is_ready() {
        assert!(Instant::now() < deadline, "token file not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(vault.read_kv("secret", "app/db", None).await.is_ok());
}
