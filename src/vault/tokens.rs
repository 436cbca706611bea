//! Tokens jobkey hands to jobs (`vault_token` credentials), and the limit on
//! what they may carry.
//!
//! A policy file names the Vault policies of a `vault_token`; whoever writes
//! policy files must not be able to mint a token with any policy they like
//! (`admin`, a policy with `path "*"`). Two limits stand between them:
//!
//! - jobkey's configuration holds the allow-list ([`TokenRole`]): a policy
//!   set naming a policy outside it is refused when it is loaded, and
//!   [`Vault::create_token`] checks it again before any request leaves;
//! - the token is created through a Vault token role
//!   (`auth/token/create/<role>`) whose `allowed_policies`, `orphan` and
//!   `token_explicit_max_ttl` enforce the same list in Vault, so a jobkey
//!   that asks for more anyway (a bug, a compromised host) is refused by
//!   Vault. jobkey's own Vault policy has `update` on that one path and no
//!   `sudo` anywhere (`examples/vault/jobkey-policy.hcl`).

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use super::Vault;
use super::error::VaultError;
use super::http::{self, Nothing, ttl_param};
use super::kv::check_path;
use crate::secret::SecretString;

/// The Vault token role jobkey creates `vault_token` credentials through,
/// and the Vault policies such a token may carry. From the `[vault]`
/// `token_role` and `allowed_token_policies` keys of jobkey's config. The
/// role's own `allowed_policies` in Vault should be the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRole {
    /// The role's name, e.g. `jobkey-job` (`auth/token/roles/jobkey-job`).
    pub name: String,
    /// Lowercase Vault policy names; never empty, never `root`.
    pub allowed_policies: BTreeSet<String>,
}

/// A new token.
#[derive(Debug)]
pub struct NewToken {
    pub token: SecretString,
    pub accessor: String,
    pub ttl: Duration,
}

impl TokenRole {
    /// Checks that a token with `policies` may be created. Vault compares
    /// policy names without case, and so does this. `Err` is a message
    /// naming the first policy outside the list and the list itself.
    pub fn check(&self, policies: &[String]) -> Result<(), String> {
        if policies.is_empty() {
            return Err("a vault_token must name at least one Vault policy".into());
        }
        for p in policies {
            let name = p.trim().to_ascii_lowercase();
            if !self.allowed_policies.contains(&name) {
                return Err(format!(
                    "Vault policy `{p}` is not allowed for vault_token credentials; jobkey's config allows only {} ([vault] allowed_token_policies, token role `{}`)",
                    self.allowed_list(),
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// The allowed policies, comma-separated, for messages.
    pub fn allowed_list(&self) -> String {
        self.allowed_policies
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why `vault_token` credentials are refused when no role is configured.
pub(crate) const NO_TOKEN_ROLE: &str = "vault_token credentials are refused: jobkey's config names no Vault token role; set [vault] token_role = \"jobkey-job\" and allowed_token_policies = [\"deploy\", ...] (the token role jobkey creates job tokens through, and the Vault policies such tokens may carry)";

impl Vault {
    /// The token role of `vault_token` credentials, when configured.
    pub fn token_role(&self) -> Option<&TokenRole> {
        self.inner.token_role.as_ref()
    }

    /// `POST auth/token/create/<role>`: a token with these policies, not
    /// renewable, `explicit_max_ttl = ttl`.
    ///
    /// Refused with [`VaultError::NotAllowed`], before any request, when no
    /// token role is configured or a policy is not on its allow-list. The
    /// role (set up in Vault with `orphan = true`) makes the token an
    /// orphan, so that it does not die with jobkey's own token (which is
    /// replaced at every AppRole login), and its `allowed_policies` refuse
    /// any other policy even if jobkey asked for one.
    pub async fn create_token(
        &self,
        policies: &[String],
        ttl: Duration,
        num_uses: Option<u32>,
        display_name: &str,
    ) -> Result<NewToken, VaultError> {
        let role = self.token_role().ok_or_else(|| VaultError::NotAllowed {
            reason: NO_TOKEN_ROLE.into(),
        })?;
        role.check(policies)
            .map_err(|reason| VaultError::NotAllowed { reason })?;
        check_path("token role", &role.name)?;
        let path = format!("auth/token/create/{}", role.name);
        let body = json!({
            "policies": policies,
            "ttl": ttl_param(ttl),
            "explicit_max_ttl": ttl_param(ttl),
            "num_uses": num_uses.unwrap_or(0),
            "renewable": false,
            "display_name": display_name,
        });
        let what = path.clone();
        let env = self
            .run("create_token", |c| async move {
                http::call::<Nothing>(&c, Method::POST, &path, Some(&body), &what).await
            })
            .await?;
        let mut auth = env.auth.ok_or_else(|| VaultError::BadResponse {
            reason: "no auth in the answer for the token creation".into(),
        })?;
        Ok(NewToken {
            token: SecretString::new(std::mem::take(&mut auth.client_token)),
            accessor: std::mem::take(&mut auth.accessor),
            ttl: Duration::from_secs(auth.lease_duration),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(names: &[&str]) -> TokenRole {
        TokenRole {
            name: "jobkey-job".into(),
            allowed_policies: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_listed_policies_pass() {
        let r = role(&["deploy", "job-read"]);
        let ok: &[&[&str]] = &[
            &["deploy"],
            &["job-read", "deploy"],
            &["Deploy"],
            &[" deploy "],
        ];
        for p in ok {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            assert_eq!(r.check(&p), Ok(()), "{p:?}");
        }
        let refused: &[(&[&str], &str)] = &[
            (&["admin"], "`admin`"),
            (&["deploy", "admin"], "`admin`"),
            (&["root"], "`root`"),
            (&["ROOT"], "`ROOT`"),
            (&["deploy-admin"], "`deploy-admin`"),
            (&[], "at least one"),
        ];
        for (p, want) in refused {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            let e = r.check(&p).unwrap_err();
            assert!(e.contains(want), "{p:?}: {e}");
            if !p.is_empty() {
                assert!(
                    e.contains("deploy, job-read") && e.contains("jobkey-job"),
                    "names the list and the role: {e}"
                );
            }
        }
    }
}
