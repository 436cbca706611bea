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

/// Why Vault is not healthy: a short fixed phrase for `/readyz`, and the
/// error for callers and logs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Unhealthy {
    pub(crate) reason: &'static str,
    pub(crate) error: VaultError,
}

/// Readiness reasons (see [`super::Readiness`]).
pub(crate) const SEALED: &str = "vault sealed";
pub(crate) const NOT_INITIALIZED: &str = "vault not initialized";
pub(crate) const UNREACHABLE: &str = "vault unreachable";
pub(crate) const UNAVAILABLE: &str = "vault unavailable";

impl From<Unhealthy> for VaultError {
    fn from(u: Unhealthy) -> VaultError {
        u.error
    }
}

/// Vault's health status codes (documented for `sys/health`):
/// 200 active, 429 unsealed standby, 472 DR secondary, 473 performance
/// standby, 501 not initialized, 503 sealed. A standby forwards requests to
/// the active node, so it counts as healthy.
pub(crate) async fn check(http: &reqwest::Client, base: &url::Url) -> Result<(), Unhealthy> {
    let url = base.join("v1/sys/health").map_err(|e| Unhealthy {
        reason: UNREACHABLE,
        error: VaultError::Config {
            reason: format!("cannot build the health URL from {base}: {e}"),
        },
    })?;
    let resp = http
        .get(url)
        .header("X-Vault-Request", "true")
        .send()
        .await
        .map_err(|e| Unhealthy {
            reason: UNREACHABLE,
            error: from_transport(&e),
        })?;
    let status = resp.status().as_u16();
    let body: Option<HealthBody> = resp.json().await.ok();
    interpret(status, body.as_ref())
}

fn interpret(status: u16, body: Option<&HealthBody>) -> Result<(), Unhealthy> {
    let sealed = || Unhealthy {
        reason: SEALED,
        error: VaultError::Unavailable {
            reason: "Vault is sealed".into(),
        },
    };
    let uninitialized = || Unhealthy {
        reason: NOT_INITIALIZED,
        error: VaultError::Unavailable {
            reason: "Vault is not initialized".into(),
        },
    };
    if let Some(b) = body {
        if b.sealed == Some(true) {
            return Err(sealed());
        }
        if b.initialized == Some(false) {
            return Err(uninitialized());
        }
    }
    match status {
        200 | 429 | 473 => Ok(()),
        503 => Err(sealed()),
        501 => Err(uninitialized()),
        other => Err(Unhealthy {
            reason: UNAVAILABLE,
            error: VaultError::Unavailable {
                reason: format!(
                    "sys/health answered HTTP {other}{}",
                    if body.and_then(|b| b.standby) == Some(true) {
                        " (standby)"
                    } else {
                        ""
                    }
                ),
            },
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
    fn sealed_uninitialized_and_errors_are_unavailable_with_a_reason() {
        let table = [
            (503, Some(body(true, true)), SEALED, "sealed"),
            // A 200 that says sealed is still sealed.
            (200, Some(body(true, true)), SEALED, "sealed"),
            (501, Some(body(false, true)), SEALED, "sealed"),
            (
                501,
                Some(body(false, false)),
                NOT_INITIALIZED,
                "not initialized",
            ),
            (501, None, NOT_INITIALIZED, "not initialized"),
            (500, None, UNAVAILABLE, "HTTP 500"),
            (472, None, UNAVAILABLE, "HTTP 472"),
        ];
        for (status, b, reason, text) in table {
            let u = interpret(status, b.as_ref()).unwrap_err();
            assert_eq!(u.reason, reason, "{status}");
            assert!(u.error.is_unavailable(), "{status}: {}", u.error);
            assert!(u.error.to_string().contains(text), "{status}: {}", u.error);
        }
    }
}
