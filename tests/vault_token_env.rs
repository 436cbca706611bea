//! Token from an environment variable. A test binary of its own: the
//! variable is set with `set_var` before any other thread (tokio's included)
//! exists, which is the only time that is sound.

#[path = "support/openbao.rs"]
mod openbao;

use std::time::Duration;

use jobkey::vault::{Vault, VaultAuth, VaultConfig, VaultError};
use openbao::OpenBao;

const VAR: &str = "JOBKEY_TEST_VAULT_TOKEN";
const UNSET: &str = "JOBKEY_TEST_VAULT_TOKEN_UNSET";

#[test]
fn token_from_environment_variable() {
    let bao = OpenBao::start();
    bao.bao(&["kv", "put", "secret/ci/deploy", "key=k-81f0-value"]);
    // SAFETY: single-threaded at this point (see the module comment).
    unsafe {
        std::env::set_var(VAR, format!("  {}\n", bao.root_token()));
        std::env::remove_var(UNSET);
    }
    jobkey::tls::install_rustls_ring_provider();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cfg = |auth| VaultConfig {
            address: bao.url(),
            ca_file: None,
            auth,
            request_timeout: Duration::from_secs(2),
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
            !shown.contains(bao.root_token()) && !shown.contains("k-81f0"),
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
