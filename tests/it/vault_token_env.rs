//! Token from an environment variable. The variable must exist when the
//! process starts (setting it later needs `unsafe`, which jobkey forbids), so
//! the test runs itself again as a child process with the variable set: the
//! parent owns the OpenBao server, the child connects through the variable.

use std::time::Duration;

use crate::support::OpenBao;
use jobkey::{Vault, VaultAuth, VaultConfig, VaultError};

const VAR: &str = "JOBKEY_TEST_VAULT_TOKEN";
const UNSET: &str = "JOBKEY_TEST_VAULT_TOKEN_UNSET";
const ADDR: &str = "JOBKEY_TEST_VAULT_ADDR";

#[test]
fn token_from_environment_variable() {
    match std::env::var(ADDR) {
        Err(_) => parent(),
        Ok(addr) => child(&addr),
    }
}

/// Starts OpenBao, seeds a secret, and runs this test again with the token
/// in `VAR` (with surrounding whitespace, which must be trimmed).
fn parent() {
    let bao = OpenBao::start();
    bao.bao(&["kv", "put", "secret/ci/deploy", "key=k-81f0-value"]);
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "vault_token_env::token_from_environment_variable",
            "--nocapture",
        ])
        .env(ADDR, bao.addr())
        .env(VAR, format!("  {}\n", bao.root_token()))
        .env_remove(UNSET)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the child run failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
}

fn child(addr: &str) {
    let token = std::env::var(VAR).unwrap().trim().to_owned();
    jobkey::install_rustls_ring_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = |auth| VaultConfig {
            address: url::Url::parse(addr).unwrap(),
            ca_file: None,
            auth,
            request_timeout: Duration::from_secs(2),
            token_role: None,
        };
        let vault = Vault::connect(cfg(VaultAuth::TokenEnv(VAR.into())))
            .await
            .expect("connect");
        let m = vault.read_kv("secret", "ci/deploy", None).await.unwrap();
        assert_eq!(m["key"].expose_secret(), "k-81f0-value");
        let e = vault
            .read_kv("secret", "ci/deploy", Some(&["other".to_owned()]))
            .await
            .unwrap_err();
        assert!(matches!(&e, VaultError::NotFound { what } if what.contains("other")));
        let e = vault.read_kv("secret", "ci/none", None).await.unwrap_err();
        assert!(matches!(e, VaultError::NotFound { .. }), "{e:?}");
        let shown = format!("{vault:?} {m:?}");
        assert!(
            !shown.contains(&token) && !shown.contains("k-81f0"),
            "{shown}"
        );

        let e = Vault::connect(cfg(VaultAuth::TokenEnv(UNSET.into())))
            .await
            .unwrap_err();
        assert!(
            matches!(&e, VaultError::Config { reason } if reason.contains(UNSET)),
            "{e:?}"
        );
    });
}
