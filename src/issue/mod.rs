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

pub(crate) mod kubeconfig;
mod ssh;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::policy::{CredentialSource, Grant, KubeCluster, KubeUser, Template, TemplateError};
use crate::secret::SecretString;
use crate::vault::{Revocable, Vault, VaultError};

/// What the exchange knows that issuing needs. Claims are the verified
/// token's; nothing here comes from the request body except `ttl` (only
/// ever lowers a TTL) and the SSH public key (only ever signed).
pub(crate) struct Context<'a> {
    pub claims: &'a Map<String, Value>,
    pub request_id: &'a str,
    pub requested_ttl: Option<Duration>,
    pub ssh_public_key: Option<&'a str>,
}

/// One issued credential.
#[derive(Debug)]
pub(crate) struct Issued {
    pub kind: &'static str,
    /// Secret fields (masked).
    pub values: BTreeMap<String, SecretString>,
    /// Non-secret fields (certificates, serials, accessors).
    pub info: BTreeMap<String, String>,
    /// The credential's actual lifetime from now.
    pub ttl: Duration,
    pub wrapped: bool,
    pub revocables: Vec<Revocable>,
    /// The same values go to every job that asks, until they change in
    /// Vault (`CredentialSource::is_stable`: a KV read, not wrapped): their
    /// mask hints may be kept (`src/mask/cache.rs`).
    pub stable: bool,
}

/// Why a credential could not be issued. Never carries a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
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
pub(crate) async fn issue_all(
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
                roll_back(vault, &issued, ctx.request_id).await;
                return Err((g.credential.clone(), e));
            }
        }
    }
    Ok(issued)
}

/// Revokes what a failed exchange had issued so far.
async fn roll_back(vault: &Vault, issued: &[Issued], request_id: &str) {
    let all: Vec<Revocable> = issued.iter().flat_map(|i| i.revocables.clone()).collect();
    let (_, failed) = revoke_all(vault, &all).await;
    if !failed.is_empty() {
        tracing::error!(
            request_id,
            left = failed.len(),
            "rolling back a failed exchange left credentials unrevoked; they expire with their TTL"
        );
    }
}

/// Revokes each item; returns how many were revoked and the ones that
/// could not be (Vault unavailable or refusing).
pub(crate) async fn revoke_all(vault: &Vault, items: &[Revocable]) -> (usize, Vec<Revocable>) {
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

/// Issues one credential with `ttl` (already the minimum jobkey allows):
/// one step per kind of source.
pub(crate) async fn issue(
    vault: &Vault,
    source: &CredentialSource,
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Issued, IssueError> {
    let parts = match source {
        CredentialSource::Kv {
            mount,
            path,
            fields,
        } => kv(vault, mount, path, fields.as_deref(), ttl).await?,
        CredentialSource::Database { mount, role } | CredentialSource::Rabbitmq { mount, role } => {
            user(vault, mount, role, ttl).await?
        }
        CredentialSource::Certificate {
            mount,
            role,
            common_name,
            alt_names,
        } => certificate(vault, mount, role, common_name, alt_names, ttl, ctx).await?,
        CredentialSource::VaultToken { policies, num_uses } => {
            vault_token(vault, policies, *num_uses, ttl, ctx).await?
        }
        CredentialSource::SshCertificate {
            mount,
            role,
            valid_principals,
        } => ssh_certificate(vault, mount, role, valid_principals, ttl, ctx).await?,
        CredentialSource::Kubeconfig { cluster, user } => {
            kubeconfig(vault, cluster.as_ref(), user, ttl, ctx).await?
        }
        CredentialSource::Wrapped { wrap_ttl, source } => {
            let inner = Box::pin(issue(vault, source, ttl, ctx)).await?;
            wrapped(vault, inner, *wrap_ttl).await?
        }
    };
    Ok(parts.into_issued(source.kind(), source.is_stable()))
}

/// What one step issued; [`issue`] adds the kind.
struct Parts {
    values: BTreeMap<String, SecretString>,
    info: BTreeMap<String, String>,
    ttl: Duration,
    revocables: Vec<Revocable>,
    wrapped: bool,
}

impl Parts {
    fn new(
        values: Vec<(&str, SecretString)>,
        info: Vec<(&str, String)>,
        ttl: Duration,
        revocables: Vec<Revocable>,
    ) -> Parts {
        Parts {
            values: values.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            info: info.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ttl,
            revocables,
            wrapped: false,
        }
    }

    fn into_issued(self, kind: &'static str, stable: bool) -> Issued {
        Issued {
            kind,
            stable,
            values: self.values,
            info: self.info,
            ttl: self.ttl,
            wrapped: self.wrapped,
            revocables: self.revocables,
        }
    }
}

fn until(expiration_unix: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Duration::from_secs(expiration_unix.saturating_sub(now))
}

/// A KV v2 read: the fields as they are, for the grant's TTL (nothing to
/// revoke).
async fn kv(
    vault: &Vault,
    mount: &str,
    path: &str,
    fields: Option<&[String]>,
    ttl: Duration,
) -> Result<Parts, IssueError> {
    let values = vault.read_kv(mount, path, fields).await?;
    Ok(Parts {
        values,
        ..Parts::new(vec![], vec![], ttl, vec![])
    })
}

/// A fresh database or RabbitMQ user, revoked through its lease.
async fn user(vault: &Vault, mount: &str, role: &str, ttl: Duration) -> Result<Parts, IssueError> {
    let c = vault.user_creds(mount, role, ttl).await?;
    Ok(Parts::new(
        vec![("username", c.username), ("password", c.password)],
        vec![],
        c.ttl,
        vec![Revocable::Lease {
            lease_id: c.lease_id,
        }],
    ))
}

/// A PKI certificate whose names come from the claims; revoked by serial.
async fn certificate(
    vault: &Vault,
    mount: &str,
    role: &str,
    common_name: &Template,
    alt_names: &[Template],
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Parts, IssueError> {
    let cn = common_name.render(ctx.claims)?;
    let sans = alt_names
        .iter()
        .map(|t| t.render(ctx.claims))
        .collect::<Result<Vec<_>, _>>()?;
    let cert = vault.pki_issue(mount, role, &cn, &sans, false, ttl).await?;
    let revocables = vec![Revocable::Certificate {
        mount: mount.to_owned(),
        serial: cert.serial_number.clone(),
    }];
    Ok(Parts::new(
        vec![("private_key", cert.private_key)],
        vec![
            ("certificate", cert.certificate),
            ("ca_chain", cert.ca_chain.join("\n")),
            ("serial_number", cert.serial_number),
        ],
        until(cert.expiration),
        revocables,
    ))
}

/// An orphan Vault token named after the request; revoked by accessor.
async fn vault_token(
    vault: &Vault,
    policies: &[String],
    num_uses: Option<u32>,
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Parts, IssueError> {
    let name = format!("jobkey-{}", ctx.request_id);
    let t = vault.create_token(policies, ttl, num_uses, &name).await?;
    let revocables = vec![Revocable::Token {
        accessor: t.accessor.clone(),
    }];
    Ok(Parts::new(
        vec![("token", t.token)],
        vec![("accessor", t.accessor)],
        t.ttl,
        revocables,
    ))
}

/// The job's SSH public key, signed for principals from the claims.
/// Nothing to revoke: the SSH engine has no revocation; the certificate's
/// validity window is its only limit.
async fn ssh_certificate(
    vault: &Vault,
    mount: &str,
    role: &str,
    valid_principals: &[Template],
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Parts, IssueError> {
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
    Ok(Parts::new(
        vec![],
        vec![
            ("signed_key", s.signed_key),
            ("serial_number", s.serial_number),
        ],
        actual,
        vec![],
    ))
}

/// A kubeconfig: read whole from KV, or composed from the cluster and a
/// PKI client certificate or a service-account token.
async fn kubeconfig(
    vault: &Vault,
    cluster: Option<&KubeCluster>,
    user: &KubeUser,
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Parts, IssueError> {
    let cluster = || {
        cluster.ok_or_else(|| {
            IssueError::Vault(VaultError::Config {
                reason: "a composed kubeconfig needs its cluster".into(),
            })
        })
    };
    match user {
        KubeUser::Kv { mount, path, field } => {
            kubeconfig_from_kv(vault, mount, path, field, ttl).await
        }
        KubeUser::ClientCertificate {
            mount,
            role,
            common_name,
        } => {
            kubeconfig_with_certificate(vault, cluster()?, mount, role, common_name, ttl, ctx).await
        }
        KubeUser::ServiceAccount {
            mount,
            role,
            namespace,
        } => kubeconfig_with_service_account(vault, cluster()?, mount, role, namespace, ttl).await,
    }
}

/// A whole kubeconfig kept in one KV field.
async fn kubeconfig_from_kv(
    vault: &Vault,
    mount: &str,
    path: &str,
    field: &str,
    ttl: Duration,
) -> Result<Parts, IssueError> {
    let wanted = [field.to_owned()];
    let values = vault.read_kv(mount, path, Some(&wanted)).await?;
    let kc = values.into_values().next().ok_or_else(|| {
        IssueError::Vault(VaultError::NotFound {
            what: format!("field {field:?}"),
        })
    })?;
    Ok(Parts::new(vec![("kubeconfig", kc)], vec![], ttl, vec![]))
}

/// A kubeconfig whose user is a PKI client certificate (CN from the
/// claims); revoked by serial.
async fn kubeconfig_with_certificate(
    vault: &Vault,
    cluster: &KubeCluster,
    mount: &str,
    role: &str,
    common_name: &Template,
    ttl: Duration,
    ctx: &Context<'_>,
) -> Result<Parts, IssueError> {
    let cn = common_name.render(ctx.claims)?;
    let cert = vault.pki_issue(mount, role, &cn, &[], true, ttl).await?;
    let revocables = vec![Revocable::Certificate {
        mount: mount.to_owned(),
        serial: cert.serial_number.clone(),
    }];
    let kc = kubeconfig::with_client_certificate(cluster, &cert.certificate, &cert.private_key);
    Ok(Parts::new(
        vec![("kubeconfig", kc)],
        vec![
            ("serial_number", cert.serial_number),
            ("server", cluster.server.clone()),
            ("user", cn),
        ],
        until(cert.expiration),
        revocables,
    ))
}

/// A kubeconfig whose user is a service-account token from the kubernetes
/// secrets engine; revoked through its lease.
async fn kubeconfig_with_service_account(
    vault: &Vault,
    cluster: &KubeCluster,
    mount: &str,
    role: &str,
    namespace: &str,
    ttl: Duration,
) -> Result<Parts, IssueError> {
    let t = vault.kubernetes_token(mount, role, namespace, ttl).await?;
    let kc = kubeconfig::with_token(cluster, &t.token);
    Ok(Parts::new(
        vec![("kubeconfig", kc)],
        vec![
            ("server", cluster.server.clone()),
            ("service_account", t.service_account_name),
        ],
        t.ttl,
        vec![Revocable::Lease {
            lease_id: t.lease_id,
        }],
    ))
}

/// `inner`, response-wrapped: its values and info go into one wrapping
/// token valid for at most the credential's TTL. If wrapping fails, what
/// `inner` issued is revoked.
async fn wrapped(vault: &Vault, inner: Issued, wrap_ttl: Duration) -> Result<Parts, IssueError> {
    let Issued {
        values,
        info,
        ttl,
        mut revocables,
        ..
    } = inner;
    let mut payload: BTreeMap<String, SecretString> = info
        .into_iter()
        .map(|(k, v)| (k, SecretString::new(v)))
        .collect();
    payload.extend(values);
    let wrap_ttl = wrap_ttl.min(ttl.max(Duration::from_secs(1)));
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
    let address = vault.address().as_str().trim_end_matches('/').to_owned();
    Ok(Parts {
        wrapped: true,
        ..Parts::new(
            vec![("wrapping_token", w.token)],
            vec![
                ("vault_address", address),
                ("wrapping_accessor", w.accessor),
                ("wrap_ttl_seconds", w.ttl.as_secs().to_string()),
            ],
            ttl,
            revocables,
        )
    })
}
