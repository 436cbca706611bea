//! Dynamic credentials: one typed method per engine endpoint, plus leases,
//! token accessors, PKI revocation and response wrapping. (Tokens for jobs
//! are in `tokens.rs`.)
//!
//! Every method checks the mount and role before they become part of a URL
//! ([`super::kv::check_path`]) and goes through [`Vault::run`], which keeps
//! the health and login bookkeeping of `read_kv`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Vault;
use super::error::VaultError;
use super::http::{self, Nothing, ttl_param};
use super::kv::check_path;
use crate::secret::SecretString;

/// Something jobkey must revoke when the job is done. Not secret (none of
/// these authenticates anyone), but not for logs either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocable {
    /// A secrets-engine lease (database, rabbitmq, kubernetes users).
    Lease { lease_id: String },
    /// A token, by accessor (vault_token credentials).
    Token { accessor: String },
    /// A PKI certificate, by serial number.
    Certificate { mount: String, serial: String },
    /// A response-wrapping token that may not have been unwrapped yet.
    Wrapping { accessor: String },
}

/// A username and password with a lease (database, rabbitmq).
#[derive(Debug)]
pub struct UserCreds {
    pub username: SecretString,
    pub password: SecretString,
    pub lease_id: String,
    /// The lease's actual duration, as Vault reports it.
    pub ttl: Duration,
}

/// An issued certificate.
#[derive(Debug)]
pub struct IssuedCert {
    pub certificate: String,
    pub private_key: SecretString,
    /// Issuing CA first.
    pub ca_chain: Vec<String>,
    pub serial_number: String,
    /// Unix seconds.
    pub expiration: u64,
}

/// A signed SSH public key.
#[derive(Debug)]
pub struct SignedSshKey {
    pub signed_key: String,
    pub serial_number: String,
}

/// A Kubernetes service-account token from the kubernetes engine.
#[derive(Debug)]
pub struct ServiceAccountToken {
    pub token: SecretString,
    pub service_account_name: String,
    pub lease_id: String,
    pub ttl: Duration,
}

/// A response-wrapping token.
#[derive(Debug)]
pub struct WrappingToken {
    pub token: SecretString,
    pub accessor: String,
    pub ttl: Duration,
}

#[derive(Deserialize)]
struct UserData {
    username: String,
    password: String,
}

#[derive(Deserialize)]
struct PkiData {
    certificate: String,
    private_key: String,
    #[serde(default)]
    ca_chain: Vec<String>,
    #[serde(default)]
    issuing_ca: String,
    serial_number: String,
    #[serde(default)]
    expiration: u64,
}

#[derive(Deserialize)]
struct SshData {
    signed_key: String,
    serial_number: String,
}

#[derive(Deserialize)]
struct K8sData {
    service_account_token: String,
    #[serde(default)]
    service_account_name: String,
}

fn segment(kind: &str, v: &str) -> Result<String, VaultError> {
    check_path(kind, v)?;
    Ok(v.trim_matches('/').to_owned())
}

fn missing(what: &str) -> VaultError {
    VaultError::BadResponse {
        reason: format!("no data in the answer for {what}"),
    }
}

/// The request body of `<kubernetes>/creds/<role>`.
pub(crate) fn kubernetes_creds_body(namespace: &str, ttl: Duration) -> serde_json::Value {
    json!({"kubernetes_namespace": namespace, "ttl": ttl_param(ttl)})
}

/// The request body of `<ssh>/sign/<role>`.
/// No `key_id`: roles refuse one unless `allow_user_key_ids` is set, and
/// Vault's default key id names jobkey's token.
pub(crate) fn ssh_sign_body(
    public_key: &str,
    principals: &[String],
    ttl: Duration,
) -> serde_json::Value {
    json!({
        "public_key": public_key,
        "valid_principals": principals.join(","),
        "ttl": ttl_param(ttl),
        "cert_type": "user",
    })
}

impl Vault {
    /// `GET <mount>/creds/<role>` of the database or rabbitmq engine: a new
    /// user. When the lease is longer than `ttl`, it is renewed with
    /// `increment = ttl`, which shortens it (and, for PostgreSQL, the
    /// user's `VALID UNTIL`); if that fails the user is revoked again.
    pub async fn user_creds(
        &self,
        mount: &str,
        role: &str,
        ttl: Duration,
    ) -> Result<UserCreds, VaultError> {
        let path = format!(
            "{}/creds/{}",
            segment("mount", mount)?,
            segment("role", role)?
        );
        let what = path.clone();
        let env = self
            .run("user_creds", |c| async move {
                http::call::<UserData>(&c, Method::GET, &path, None, &what).await
            })
            .await?;
        let data = env.data.ok_or_else(|| missing(mount))?;
        let UserData { username, password } = data;
        let creds = UserCreds {
            username: SecretString::new(username),
            password: SecretString::new(password),
            lease_id: env.lease_id,
            ttl: Duration::from_secs(env.lease_duration),
        };
        self.shorten(creds.lease_id.clone(), creds.ttl, ttl)
            .await
            .map(|ttl| UserCreds { ttl, ..creds })
    }

    /// Renews `lease_id` to `want` when its `have` is longer; revokes the
    /// lease when that fails. Returns the lease's duration.
    async fn shorten(
        &self,
        lease_id: String,
        have: Duration,
        want: Duration,
    ) -> Result<Duration, VaultError> {
        if lease_id.is_empty() || have <= want {
            return Ok(have);
        }
        let body = json!({"lease_id": lease_id, "increment": want.as_secs().max(1)});
        let res = self
            .run("lease_renew", |c| async move {
                http::call::<Nothing>(
                    &c,
                    Method::PUT,
                    "sys/leases/renew",
                    Some(&body),
                    "sys/leases/renew",
                )
                .await
            })
            .await;
        match res {
            Ok(env) => Ok(Duration::from_secs(env.lease_duration).min(have)),
            Err(e) => {
                let _ = self
                    .revoke(&Revocable::Lease {
                        lease_id: lease_id.clone(),
                    })
                    .await;
                Err(e)
            }
        }
    }

    /// `POST <mount>/issue/<role>`: a certificate and its private key.
    pub async fn pki_issue(
        &self,
        mount: &str,
        role: &str,
        common_name: &str,
        alt_names: &[String],
        exclude_cn_from_sans: bool,
        ttl: Duration,
    ) -> Result<IssuedCert, VaultError> {
        let path = format!(
            "{}/issue/{}",
            segment("mount", mount)?,
            segment("role", role)?
        );
        let body = json!({
            "common_name": common_name,
            "alt_names": alt_names.join(","),
            "ttl": ttl_param(ttl),
            "format": "pem",
            "private_key_format": "pem",
            "exclude_cn_from_sans": exclude_cn_from_sans,
        });
        let what = path.clone();
        let env = self
            .run("pki_issue", |c| async move {
                http::call::<PkiData>(&c, Method::POST, &path, Some(&body), &what).await
            })
            .await?;
        let d = env.data.ok_or_else(|| missing(mount))?;
        let mut ca_chain = d.ca_chain;
        if ca_chain.is_empty() && !d.issuing_ca.is_empty() {
            ca_chain.push(d.issuing_ca);
        }
        Ok(IssuedCert {
            certificate: d.certificate,
            private_key: SecretString::new(d.private_key),
            ca_chain,
            serial_number: d.serial_number,
            expiration: d.expiration,
        })
    }

    /// `POST <mount>/sign/<role>`: signs the job's SSH public key as a user
    /// certificate for `principals`.
    pub async fn ssh_sign(
        &self,
        mount: &str,
        role: &str,
        public_key: &str,
        principals: &[String],
        ttl: Duration,
    ) -> Result<SignedSshKey, VaultError> {
        let path = format!(
            "{}/sign/{}",
            segment("mount", mount)?,
            segment("role", role)?
        );
        let body = ssh_sign_body(public_key, principals, ttl);
        let what = path.clone();
        let env = self
            .run("ssh_sign", |c| async move {
                http::call::<SshData>(&c, Method::POST, &path, Some(&body), &what).await
            })
            .await?;
        let d = env.data.ok_or_else(|| missing(mount))?;
        Ok(SignedSshKey {
            signed_key: d.signed_key,
            serial_number: d.serial_number,
        })
    }

    /// `POST <mount>/creds/<role>` of the kubernetes secrets engine: a
    /// service-account token for `namespace`.
    pub async fn kubernetes_token(
        &self,
        mount: &str,
        role: &str,
        namespace: &str,
        ttl: Duration,
    ) -> Result<ServiceAccountToken, VaultError> {
        let path = format!(
            "{}/creds/{}",
            segment("mount", mount)?,
            segment("role", role)?
        );
        let body = kubernetes_creds_body(namespace, ttl);
        let what = path.clone();
        let env = self
            .run("kubernetes_token", |c| async move {
                http::call::<K8sData>(&c, Method::POST, &path, Some(&body), &what).await
            })
            .await?;
        let d = env.data.ok_or_else(|| missing(mount))?;
        let K8sData {
            service_account_token,
            service_account_name,
        } = d;
        Ok(ServiceAccountToken {
            token: SecretString::new(service_account_token),
            service_account_name,
            lease_id: env.lease_id,
            ttl: Duration::from_secs(env.lease_duration),
        })
    }

    /// `POST sys/wrapping/wrap`: puts `values` behind a single-use wrapping
    /// token valid for `ttl`.
    pub async fn wrap(
        &self,
        values: &BTreeMap<String, SecretString>,
        ttl: Duration,
    ) -> Result<WrappingToken, VaultError> {
        let mut body = serde_json::Value::Object(
            values
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::Value::String(v.expose_secret().to_owned()),
                    )
                })
                .collect(),
        );
        let info = self
            .run("wrap", |c| {
                let body = &body;
                async move {
                    http::call_wrapped(
                        &c,
                        Method::POST,
                        "sys/wrapping/wrap",
                        Some(body),
                        ttl,
                        "sys/wrapping/wrap",
                    )
                    .await
                }
            })
            .await;
        wipe(&mut body);
        let mut info = info?;
        Ok(WrappingToken {
            token: SecretString::new(std::mem::take(&mut info.token)),
            accessor: std::mem::take(&mut info.accessor),
            ttl: Duration::from_secs(info.ttl),
        })
    }

    /// Revokes one thing. Something already gone (expired, unwrapped,
    /// revoked) counts as revoked.
    pub async fn revoke(&self, r: &Revocable) -> Result<(), VaultError> {
        let (path, body, what) = match r {
            Revocable::Lease { lease_id } => (
                "sys/leases/revoke".to_owned(),
                json!({"lease_id": lease_id}),
                "sys/leases/revoke",
            ),
            Revocable::Token { accessor } | Revocable::Wrapping { accessor } => (
                "auth/token/revoke-accessor".to_owned(),
                json!({"accessor": accessor}),
                "auth/token/revoke-accessor",
            ),
            Revocable::Certificate { mount, serial } => (
                format!("{}/revoke", segment("mount", mount)?),
                json!({"serial_number": serial}),
                "PKI revoke",
            ),
        };
        let res = self
            .run("revoke", |c| async move {
                http::call::<Nothing>(&c, Method::PUT, &path, Some(&body), what).await
            })
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(VaultError::Rejected { errors, .. }) if already_gone(&errors) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Vault's answers for revoking something that no longer exists.
fn already_gone(errors: &[String]) -> bool {
    errors.iter().any(|e| {
        let e = e.to_ascii_lowercase();
        e.contains("invalid accessor")
            || e.contains("expired")
            || e.contains("not found")
            || e.contains("invalid lease")
    })
}

fn wipe(v: &mut serde_json::Value) {
    use zeroize::Zeroize;
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Object(m) => m.values_mut().for_each(wipe),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_creds_request_shape() {
        assert_eq!(
            kubernetes_creds_body("apps", Duration::from_secs(600)),
            json!({"kubernetes_namespace": "apps", "ttl": "600s"})
        );
    }

    #[test]
    fn ssh_sign_request_shape() {
        let b = ssh_sign_body(
            "ssh-ed25519 AAAA",
            &["deploy".into(), "ci-acme".into()],
            Duration::from_secs(90),
        );
        assert_eq!(
            b,
            json!({"public_key": "ssh-ed25519 AAAA", "valid_principals": "deploy,ci-acme",
                   "ttl": "90s", "cert_type": "user"})
        );
    }

    #[test]
    fn revocables_round_trip_as_tagged_json() {
        let all = vec![
            Revocable::Lease {
                lease_id: "database/creds/app/x".into(),
            },
            Revocable::Token {
                accessor: "a".into(),
            },
            Revocable::Certificate {
                mount: "pki".into(),
                serial: "1a:2b".into(),
            },
            Revocable::Wrapping {
                accessor: "w".into(),
            },
        ];
        let text = serde_json::to_string(&all).unwrap();
        assert!(text.contains(r#""kind":"certificate""#), "{text}");
        let back: Vec<Revocable> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, all);
    }

    #[test]
    fn gone_is_recognised() {
        assert!(already_gone(&[
            "1 error occurred:\n\t* invalid accessor\n\n".into()
        ]));
        assert!(!already_gone(&["permission denied".into()]));
    }
}
