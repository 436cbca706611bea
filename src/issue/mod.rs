//! Turning granted credentials into issued ones, all or nothing.
//!
//! [`issue_all`] issues every grant in order through [`Vault`]; when one
//! fails, everything already issued is revoked before the error is
//! returned, so a job never receives a partial set and nothing issued for a
//! failed exchange outlives it. [`revoke_all`] revokes an exchange's
//! [`Revocable`]s.
//!
//! Lifetimes: each credential is asked for `min(job's ttl, grant ttl)` (the
//! grant's TTL is already `min(credential, rule, environment max_ttl)`);
//! Vault may cap it further at the engine's or role's maximum, and the
//! reported TTL is what Vault answered (lease duration, token TTL,
//! certificate expiry).

mod kubeconfig;
mod ssh;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::policy::{CredentialSource, Grant, KubeUser, TemplateError};
use crate::secret::SecretString;
use crate::vault::{Revocable, Vault, VaultError};

/// What the exchange knows that issuing needs. Claims are the verified
/// token's; nothing here comes from the request body except `ttl` (only
/// ever lowers a TTL) and the SSH public key (only ever signed).
pub struct Context<'a> {
    pub claims: &'a Map<String, Value>,
    pub request_id: &'a str,
    pub requested_ttl: Option<Duration>,
    pub ssh_public_key: Option<&'a str>,
}

/// One issued credential.
#[derive(Debug)]
pub struct Issued {
    pub kind: &'static str,
    /// Secret fields (masked).
    pub values: BTreeMap<String, SecretString>,
    /// Non-secret fields (certificates, serials, accessors).
    pub info: BTreeMap<String, String>,
    /// The credential's actual lifetime from now.
    pub ttl: Duration,
    pub wrapped: bool,
    pub revocables: Vec<Revocable>,
}

/// Why a credential could not be issued. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// A name template needs a claim the token lacks or cannot use (403).
    #[error("{0}")]
    Claim(#[from] TemplateError),
    /// The request lacks something this credential needs, or it is
    /// malformed (400): the SSH public key.
    #[error("{0}")]
    Request(String),
}

/// Issues every grant, or nothing: on the first failure, revokes what was
/// issued and returns the failing credential's name with the error.
pub async fn issue_all(
    vault: &Vault,
    grants: &[Grant],
    ctx: &Context<'_>,
) -> Result<Vec<Issued>, (String, IssueError)> {
    let mut issued: Vec<Issued> = Vec::with_capacity(grants.len());
    for g in grants {
        let ttl = ctx.requested_ttl.map_or(g.ttl, |r| r.min(g.ttl));
        match issue(vault, &g.source, ttl, ctx).await {
            Ok(i) => issued.push(i),
            Err(e) => {
                let all: Vec<Revocable> =
                    issued.iter().flat_map(|i| i.revocables.clone()).collect();
                let (_, failed) = revoke_all(vault, &all).await;
                if !failed.is_empty() {
                    tracing::error!(
                        request_id = ctx.request_id,
                        left = failed.len(),
                        "rolling back a failed exchange left credentials unrevoked; they expire with their TTL"
                    );
                }
                return Err((g.credential.clone(), e));
            }
        }
    }
    Ok(issued)
}

/// Revokes each item; returns how many were revoked and the ones that
/// could not be (Vault unavailable or refusing).
pub async fn revoke_all(vault: &Vault, items: &[Revocable]) -> (usize, Vec<Revocable>) {
    let mut done = 0;
    let mut failed = Vec::new();
    for r in items {
        match vault.revoke(r).await {
            Ok(()) => done += 1,
            Err(e) => {
                tracing::warn!(error = %e, "revoking a credential failed");
                failed.push(r.clone());
            }
        }
    }
    (done, failed)
}

fn secret_map(pairs: Vec<(&str, SecretString)>) -> BTreeMap<String, SecretString> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn until(expiration_unix: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Duration::from_secs(expiration_unix.saturating_sub(now))
}

/// Issues one credential with `ttl` (already the minimum jobkey allows).
pub async fn issue(
    vault: &Vault,
    source: &CredentialSource,
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Issued, IssueError> {
    let kind = source.kind();
    let plain = |values, info, ttl, revocables| Issued {
        kind,
        values,
        info,
        ttl,
        wrapped: false,
        revocables,
    };
    match source {
        CredentialSource::Kv {
            mount,
            path,
            fields,
        } => {
            let values = vault.read_kv(mount, path, fields.as_deref()).await?;
            Ok(plain(values, BTreeMap::new(), ttl, Vec::new()))
        }
        CredentialSource::Database { mount, role } | CredentialSource::Rabbitmq { mount, role } => {
            let c = vault.user_creds(mount, role, ttl).await?;
            let revocables = vec![Revocable::Lease {
                lease_id: c.lease_id,
            }];
            let values = secret_map(vec![("username", c.username), ("password", c.password)]);
            Ok(plain(values, BTreeMap::new(), c.ttl, revocables))
        }
        CredentialSource::Certificate {
            mount,
            role,
            common_name,
            alt_names,
        } => {
            let cn = common_name.render(ctx.claims)?;
            let sans = alt_names
                .iter()
                .map(|t| t.render(ctx.claims))
                .collect::<Result<Vec<_>, _>>()?;
            let cert = vault.pki_issue(mount, role, &cn, &sans, false, ttl).await?;
            let revocables = vec![Revocable::Certificate {
                mount: mount.clone(),
                serial: cert.serial_number.clone(),
            }];
            let info = BTreeMap::from([
                ("certificate".to_owned(), cert.certificate),
                ("ca_chain".to_owned(), cert.ca_chain.join("\n")),
                ("serial_number".to_owned(), cert.serial_number),
            ]);
            let values = secret_map(vec![("private_key", cert.private_key)]);
            Ok(plain(values, info, until(cert.expiration), revocables))
        }
        CredentialSource::VaultToken { policies, num_uses } => {
            let t = vault
                .create_token(
                    policies,
                    ttl,
                    *num_uses,
                    &format!("jobkey-{}", ctx.request_id),
                )
                .await?;
            let revocables = vec![Revocable::Token {
                accessor: t.accessor.clone(),
            }];
            let info = BTreeMap::from([("accessor".to_owned(), t.accessor)]);
            Ok(plain(
                secret_map(vec![("token", t.token)]),
                info,
                t.ttl,
                revocables,
            ))
        }
        CredentialSource::SshCertificate {
            mount,
            role,
            valid_principals,
        } => {
            let key = ctx.ssh_public_key.ok_or_else(|| {
                IssueError::Request(
                    "this credential is an SSH certificate: send your public key as `ssh_public_key`"
                        .into(),
                )
            })?;
            ssh::check_public_key(key).map_err(IssueError::Request)?;
            let principals = valid_principals
                .iter()
                .map(|t| t.render(ctx.claims))
                .collect::<Result<Vec<_>, _>>()?;
            let s = vault.ssh_sign(mount, role, key, &principals, ttl).await?;
            let actual = ssh::valid_before(&s.signed_key).map_or(ttl, until);
            let info = BTreeMap::from([
                ("signed_key".to_owned(), s.signed_key),
                ("serial_number".to_owned(), s.serial_number),
            ]);
            // Nothing to revoke: the SSH engine has no revocation; the
            // certificate's validity window is its only limit.
            Ok(plain(BTreeMap::new(), info, actual, Vec::new()))
        }
        CredentialSource::Kubeconfig { cluster, user } => match (cluster, user) {
            (_, KubeUser::Kv { mount, path, field }) => {
                let values = vault
                    .read_kv(mount, path, Some(std::slice::from_ref(field)))
                    .await?;
                let kc = values.into_values().next().ok_or_else(|| {
                    IssueError::Vault(VaultError::NotFound {
                        what: format!("field {field:?}"),
                    })
                })?;
                Ok(plain(
                    secret_map(vec![("kubeconfig", kc)]),
                    BTreeMap::new(),
                    ttl,
                    Vec::new(),
                ))
            }
            (
                Some(cluster),
                KubeUser::ClientCertificate {
                    mount,
                    role,
                    common_name,
                },
            ) => {
                let cn = common_name.render(ctx.claims)?;
                let cert = vault.pki_issue(mount, role, &cn, &[], true, ttl).await?;
                let revocables = vec![Revocable::Certificate {
                    mount: mount.clone(),
                    serial: cert.serial_number.clone(),
                }];
                let kc = kubeconfig::with_client_certificate(
                    cluster,
                    &cert.certificate,
                    &cert.private_key,
                );
                let info = BTreeMap::from([
                    ("serial_number".to_owned(), cert.serial_number),
                    ("server".to_owned(), cluster.server.clone()),
                    ("user".to_owned(), cn),
                ]);
                Ok(plain(
                    secret_map(vec![("kubeconfig", kc)]),
                    info,
                    until(cert.expiration),
                    revocables,
                ))
            }
            (
                Some(cluster),
                KubeUser::ServiceAccount {
                    mount,
                    role,
                    namespace,
                },
            ) => {
                let t = vault.kubernetes_token(mount, role, namespace, ttl).await?;
                let revocables = vec![Revocable::Lease {
                    lease_id: t.lease_id,
                }];
                let kc = kubeconfig::with_token(cluster, &t.token);
                let info = BTreeMap::from([
                    ("server".to_owned(), cluster.server.clone()),
                    ("service_account".to_owned(), t.service_account_name),
                ]);
                Ok(plain(
                    secret_map(vec![("kubeconfig", kc)]),
                    info,
                    t.ttl,
                    revocables,
                ))
            }
            (None, _) => Err(IssueError::Vault(VaultError::Config {
                reason: "a composed kubeconfig needs its cluster".into(),
            })),
        },
        CredentialSource::Wrapped { wrap_ttl, source } => {
            let inner = Box::pin(issue(vault, source, ttl, ctx)).await?;
            let mut payload: BTreeMap<String, SecretString> = BTreeMap::new();
            let Issued {
                values,
                info,
                ttl: actual,
                mut revocables,
                ..
            } = inner;
            for (k, v) in info {
                payload.insert(k, SecretString::new(v));
            }
            payload.extend(values);
            let wrap_ttl = (*wrap_ttl).min(actual.max(Duration::from_secs(1)));
            let w = match vault.wrap(&payload, wrap_ttl).await {
                Ok(w) => w,
                Err(e) => {
                    let _ = revoke_all(vault, &revocables).await;
                    return Err(e.into());
                }
            };
            revocables.push(Revocable::Wrapping {
                accessor: w.accessor.clone(),
            });
            let info = BTreeMap::from([
                (
                    "vault_address".to_owned(),
                    vault.address().as_str().trim_end_matches('/').to_owned(),
                ),
                ("wrapping_accessor".to_owned(), w.accessor),
                ("wrap_ttl_seconds".to_owned(), w.ttl.as_secs().to_string()),
            ]);
            Ok(Issued {
                kind,
                values: secret_map(vec![("wrapping_token", w.token)]),
                info,
                ttl: actual,
                wrapped: true,
                revocables,
            })
        }
    }
}
