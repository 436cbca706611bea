//! `GET /v1/sys/health`, done by hand.
//!
//! vaultrs' `sys::health` fails to parse OpenBao's answer, so this is a plain
//! GET through the same reqwest client vaultrs uses (same CA, same timeout).
//! The endpoint needs no token and none is sent.

use serde::Deserialize;

use super::error::{VaultError, from_transport};

/// The part of the health answer jobkey looks at.
#[derive(Debug, Deserialize)]
struct HealthBody {
    #[serde(default)]
    initialized: Option<bool>,
    #[serde(default)]
    sealed: Option<bool>,
    #[serde(default)]
    standby: Option<bool>,
}

/// Vault's health status codes (documented for `sys/health`):
/// 200 active, 429 unsealed standby, 472 DR secondary, 473 performance
/// standby, 501 not initialized, 503 sealed. A standby forwards requests to
/// the active node, so it counts as healthy.
pub(crate) async fn check(http: &reqwest::Client, base: &url::Url) -> Result<(), VaultError> {
    let url = base.join("v1/sys/health").map_err(|e| VaultError::Config {
        reason: format!("cannot build the health URL from {base}: {e}"),
    })?;
    let resp = http
        .get(url)
        .header("X-Vault-Request", "true")
        .send()
        .await
        .map_err(|e| from_transport(&e))?;
    let status = resp.status().as_u16();
    let body: Option<HealthBody> = resp.json().await.ok();
    interpret(status, body.as_ref())
}

fn interpret(status: u16, body: Option<&HealthBody>) -> Result<(), VaultError> {
    if let Some(b) = body {
        if b.sealed == Some(true) {
            return Err(VaultError::Unavailable {
                reason: "Vault is sealed".into(),
            });
        }
        if b.initialized == Some(false) {
            return Err(VaultError::Unavailable {
                reason: "Vault is not initialized".into(),
            });
        }
    }
    match status {
        200 | 429 | 473 => Ok(()),
        503 => Err(VaultError::Unavailable {
            reason: "Vault is sealed".into(),
        }),
        501 => Err(VaultError::Unavailable {
            reason: "Vault is not initialized".into(),
        }),
        other => Err(VaultError::Unavailable {
            reason: format!(
                "sys/health answered HTTP {other}{}",
                if body.and_then(|b| b.standby) == Some(true) {
                    " (standby)"
                } else {
                    ""
                }
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(initialized: bool, sealed: bool) -> HealthBody {
        HealthBody {
            initialized: Some(initialized),
            sealed: Some(sealed),
            standby: Some(false),
        }
    }

    #[test]
    fn active_and_standby_are_healthy() {
        assert_eq!(interpret(200, Some(&body(true, false))), Ok(()));
        assert_eq!(interpret(429, None), Ok(()));
        assert_eq!(interpret(473, None), Ok(()));
    }

    #[test]
    fn sealed_uninitialized_and_errors_are_unavailable() {
        let e = interpret(503, Some(&body(true, true))).unwrap_err();
        assert!(
            e.is_unavailable() && e.to_string().contains("sealed"),
            "{e}"
        );
        let e = interpret(501, Some(&body(false, true))).unwrap_err();
        assert!(e.is_unavailable(), "{e}");
        assert!(interpret(500, None).unwrap_err().is_unavailable());
        assert!(interpret(472, None).unwrap_err().is_unavailable());
        // A 200 that says sealed is still sealed.
        assert!(interpret(200, Some(&body(true, true))).is_err());
    }
}
