//! The `vault_token` credentials of a policy set, against the allow-list in
//! jobkey's config.
//!
//! A policy file alone must not decide which Vault policies a token carries:
//! a policy writer could otherwise hand jobs an `admin` token. Every load of
//! a policy set (start-up, `jobkey check`, hot reload) therefore also runs
//! [`PolicySet::check_token_policies`] with the config's
//! [`TokenRole`]; a set that fails is refused like any other invalid set.

use super::error::PolicyError;
use super::{CredentialSource, PolicySet};
use crate::vault::{NO_TOKEN_ROLE, TokenRole};

impl PolicySet {
    /// Refuses the set when a `vault_token` credential (wrapped or not)
    /// names a Vault policy outside `role`'s allow-list, or when there is a
    /// `vault_token` credential and no role is configured (`None`). The
    /// error names the file, the credential and the allowed list.
    pub fn check_token_policies(&self, role: Option<&TokenRole>) -> Result<(), PolicyError> {
        for name in self.environments() {
            let Some(env) = self.env(name) else { continue };
            for credential in &env.credential_order {
                let Some(c) = env.credentials.get(credential) else {
                    continue;
                };
                let Some(policies) = token_policies(&c.source) else {
                    continue;
                };
                let refused = match role {
                    None => Some(NO_TOKEN_ROLE.to_owned()),
                    Some(role) => role.check(policies).err(),
                };
                if let Some(message) = refused {
                    return Err(PolicyError::InvalidCredential {
                        file: env.file.clone(),
                        line: None,
                        column: None,
                        credential: credential.clone(),
                        message,
                    });
                }
            }
        }
        Ok(())
    }
}

/// The policies of a `vault_token` source, looking through wrapping.
fn token_policies(source: &CredentialSource) -> Option<&[String]> {
    match source {
        CredentialSource::VaultToken { policies, .. } => Some(policies),
        CredentialSource::Wrapped { source, .. } => token_policies(source),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "rules:\n  - name: r\n    issuer: github\n    claims: {repository: acme/api}\n    grant: [db, t]\n";

    fn set(token: &str) -> PolicySet {
        let text = format!(
            "credentials:\n  db:\n    database: {{role: app}}\n    ttl: 5m\n  t:\n{token}    ttl: 5m\n{RULES}"
        );
        crate::policy::test_support::compile(&[("prod.yaml", &text)], &["github".into()])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn role() -> TokenRole {
        TokenRole {
            name: "jobkey-job".into(),
            allowed_policies: ["deploy".to_owned(), "job-read".to_owned()].into(),
        }
    }

    #[test]
    fn token_policies_must_be_on_the_configured_list() {
        // (the credential, the configured role, what the error must say)
        type Case = (
            &'static str,
            Option<TokenRole>,
            Option<&'static [&'static str]>,
        );
        let table: &[Case] = &[
            (
                "    vault_token: {policies: [deploy]}\n",
                Some(role()),
                None,
            ),
            (
                "    vault_token: {policies: [job-read, deploy]}\n    wrap: true\n",
                Some(role()),
                None,
            ),
            (
                "    vault_token: {policies: [admin]}\n",
                Some(role()),
                Some(&[
                    "prod.yaml: ",
                    "credential `t`",
                    "`admin`",
                    "deploy, job-read",
                ]),
            ),
            (
                "    vault_token: {policies: [deploy, admin]}\n    wrap: true\n",
                Some(role()),
                Some(&["credential `t`", "`admin`", "deploy, job-read"]),
            ),
            (
                "    vault_token: {policies: [deploy]}\n",
                None,
                Some(&[
                    "prod.yaml: ",
                    "credential `t`",
                    "token_role",
                    "allowed_token_policies",
                ]),
            ),
        ];
        for (token, role, want) in table {
            let r = set(token).check_token_policies(role.as_ref());
            match want {
                None => assert!(r.is_ok(), "{token}: {r:?}"),
                Some(parts) => {
                    let e = r.unwrap_err().to_string();
                    for p in *parts {
                        assert!(e.contains(p), "{token}: missing {p:?} in {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn sets_without_vault_tokens_need_no_role() {
        let text = format!(
            "credentials:\n  db:\n    database: {{role: app}}\n    ttl: 5m\n  t:\n    kv: {{mount: secret, path: x}}\n    ttl: 5m\n{RULES}"
        );
        let s =
            PolicySet::from_sources(&[("prod.yaml".to_owned(), text)], &["github".into()]).unwrap();
        assert!(s.check_token_policies(None).is_ok());
    }
}
