//! The `credentials:` section: the raw kinds as written, and their
//! compilation into [`CredentialSource`].
//!
//! Every kind but `kv` is dynamic: Vault creates it for the exchange and it
//! expires (or is revoked) on its own. Engine mounts default to the engine's
//! usual path (`database`, `pki`, `ssh`, `rabbitmq`, `kubernetes`).

use std::time::Duration;

use serde::Deserialize;

use super::parse::RawCredential;
use super::template::{NameKind, Template};

/// `database: {mount: database, role: app}`: a fresh database user per
/// exchange from the database secrets engine.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDatabase {
    #[serde(default)]
    pub mount: Option<String>,
    pub role: String,
}

/// `certificate: {mount: pki, role: deploy, common_name: "...", alt_names: [...]}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertificate {
    #[serde(default)]
    pub mount: Option<String>,
    pub role: String,
    pub common_name: String,
    #[serde(default)]
    pub alt_names: Vec<String>,
}

/// `kubeconfig:`: the cluster (server URL and CA) plus exactly one user
/// credential source.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubeconfig {
    #[serde(default)]
    pub server: Option<String>,
    /// PEM of the CA that signed the API server's certificate.
    #[serde(default)]
    pub certificate_authority: Option<String>,
    #[serde(default)]
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub client_certificate: Option<RawKubeClientCert>,
    #[serde(default)]
    pub service_account: Option<RawKubeServiceAccount>,
    #[serde(default)]
    pub kv: Option<RawKubeKv>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubeClientCert {
    #[serde(default)]
    pub mount: Option<String>,
    pub role: String,
    /// The Kubernetes user name (certificate CN), e.g. `repo:{repository}`.
    pub common_name: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubeServiceAccount {
    #[serde(default)]
    pub mount: Option<String>,
    pub role: String,
    /// The namespace the token is for (`kubernetes_namespace`).
    pub namespace: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubeKv {
    pub mount: String,
    pub path: String,
    #[serde(default)]
    pub field: Option<String>,
}

/// `vault_token: {policies: [deploy], num_uses: 10}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVaultToken {
    pub policies: Vec<String>,
    #[serde(default)]
    pub num_uses: Option<u32>,
}

/// `ssh_certificate: {mount: ssh, role: deploy, valid_principals: [deploy]}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    #[serde(default)]
    pub mount: Option<String>,
    pub role: String,
    pub valid_principals: Vec<String>,
}

/// `rabbitmq: {mount: rabbitmq, role: app}`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRabbitmq {
    #[serde(default)]
    pub mount: Option<String>,
    pub role: String,
}

pub(crate) const KINDS: &str =
    "kv, database, certificate, kubeconfig, vault_token, ssh_certificate, rabbitmq";

/// Default response-wrapping TTL for `wrap: true`.
pub(crate) const DEFAULT_WRAP_TTL: Duration = Duration::from_secs(300);

fn name(field: &str, v: &str) -> Result<String, String> {
    let t = v.trim();
    if t.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    if !t
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        || t.split('/').any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "`{field}` {t:?} may hold letters, digits, `-`, `_`, `.` and `/` only"
        ));
    }
    Ok(t.to_owned())
}

fn mount(v: Option<String>, default: &str) -> Result<String, String> {
    name("mount", v.as_deref().unwrap_or(default))
}

fn template(field: &str, text: &str, kind: NameKind) -> Result<Template, String> {
    Template::parse(text, kind).map_err(|e| format!("`{field}`: {e}"))
}

/// Compiles the one kind given (taking it out of `k`) into a source;
/// errors are messages for the policy author (the caller adds file, line
/// and credential name).
pub(crate) fn compile_kind(k: &mut RawCredential) -> Result<CredentialSource, String> {
    let given = [
        k.kv.is_some(),
        k.database.is_some(),
        k.certificate.is_some(),
        k.kubeconfig.is_some(),
        k.vault_token.is_some(),
        k.ssh_certificate.is_some(),
        k.rabbitmq.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given == 0 {
        return Err(format!("no credential kind; add exactly one of: {KINDS}"));
    }
    if given > 1 {
        return Err(format!(
            "more than one credential kind; keep exactly one of: {KINDS}"
        ));
    }
    if let Some(kv) = k.kv.take() {
        if kv.mount.trim().is_empty() || kv.path.trim().is_empty() {
            return Err("kv `mount` and `path` must not be empty".into());
        }
        if kv.fields.as_ref().is_some_and(Vec::is_empty) {
            return Err("kv `fields: []` reads nothing; omit `fields` to read every field".into());
        }
        return Ok(CredentialSource::Kv {
            mount: kv.mount,
            path: kv.path,
            fields: kv.fields,
        });
    }
    if let Some(d) = k.database.take() {
        return Ok(CredentialSource::Database {
            mount: mount(d.mount, "database")?,
            role: name("role", &d.role)?,
        });
    }
    if let Some(r) = k.rabbitmq.take() {
        return Ok(CredentialSource::Rabbitmq {
            mount: mount(r.mount, "rabbitmq")?,
            role: name("role", &r.role)?,
        });
    }
    if let Some(c) = k.certificate.take() {
        return Ok(CredentialSource::Certificate {
            mount: mount(c.mount, "pki")?,
            role: name("role", &c.role)?,
            common_name: template("common_name", &c.common_name, NameKind::Dns)?,
            alt_names: c
                .alt_names
                .iter()
                .map(|a| template("alt_names", a, NameKind::Dns))
                .collect::<Result<_, _>>()?,
        });
    }
    if let Some(t) = k.vault_token.take() {
        if t.policies.is_empty() {
            return Err("vault_token `policies` must name at least one Vault policy".into());
        }
        let mut policies = Vec::new();
        for p in &t.policies {
            let p = name("policies", p)?;
            if p == "root" {
                return Err("vault_token must not grant the `root` policy".into());
            }
            policies.push(p);
        }
        if t.num_uses == Some(0) {
            return Err("vault_token `num_uses: 0` means unlimited; omit it instead".into());
        }
        return Ok(CredentialSource::VaultToken {
            policies,
            num_uses: t.num_uses,
        });
    }
    if let Some(s) = k.ssh_certificate.take() {
        if s.valid_principals.is_empty() {
            return Err("ssh_certificate `valid_principals` must name at least one principal; an empty list would be valid for any principal".into());
        }
        return Ok(CredentialSource::SshCertificate {
            mount: mount(s.mount, "ssh")?,
            role: name("role", &s.role)?,
            valid_principals: s
                .valid_principals
                .iter()
                .map(|p| template("valid_principals", p, NameKind::Identity))
                .collect::<Result<_, _>>()?,
        });
    }
    if let Some(kc) = k.kubeconfig.take() {
        return compile_kubeconfig(kc);
    }
    unreachable!("one kind is given")
}

fn compile_kubeconfig(kc: RawKubeconfig) -> Result<CredentialSource, String> {
    let users = [
        kc.client_certificate.is_some(),
        kc.service_account.is_some(),
        kc.kv.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if users != 1 {
        return Err(
            "kubeconfig needs exactly one of: client_certificate, service_account, kv".into(),
        );
    }
    if let Some(kv) = kc.kv {
        if kc.server.is_some()
            || kc.certificate_authority.is_some()
            || kc.namespace.is_some()
            || kc.cluster_name.is_some()
        {
            return Err("a kubeconfig from kv is delivered as stored; remove `server`, `certificate_authority`, `cluster_name` and `namespace`".into());
        }
        return Ok(CredentialSource::Kubeconfig {
            cluster: None,
            user: KubeUser::Kv {
                mount: name("mount", &kv.mount)?,
                path: name("path", &kv.path)?,
                field: kv.field.unwrap_or_else(|| "kubeconfig".to_owned()),
            },
        });
    }
    let server = kc
        .server
        .ok_or("kubeconfig needs `server`, the API server's https URL")?;
    match url::Url::parse(&server) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        _ => {
            return Err(format!(
                "kubeconfig `server` {server:?} must be an https URL"
            ));
        }
    }
    let ca = kc
        .certificate_authority
        .ok_or("kubeconfig needs `certificate_authority`, the PEM of the API server's CA")?;
    match pem::parse_many(ca.as_bytes()) {
        Ok(blocks) if !blocks.is_empty() && blocks.iter().all(|b| b.tag() == "CERTIFICATE") => {}
        _ => {
            return Err("kubeconfig `certificate_authority` must be PEM CERTIFICATE blocks".into());
        }
    }
    let cluster_name = name(
        "cluster_name",
        kc.cluster_name.as_deref().unwrap_or("cluster"),
    )?;
    let namespace = kc.namespace.map(|n| name("namespace", &n)).transpose()?;
    let user = if let Some(c) = kc.client_certificate {
        KubeUser::ClientCertificate {
            mount: mount(c.mount, "pki")?,
            role: name("role", &c.role)?,
            common_name: template("common_name", &c.common_name, NameKind::Identity)?,
        }
    } else if let Some(sa) = kc.service_account {
        KubeUser::ServiceAccount {
            mount: mount(sa.mount, "kubernetes")?,
            role: name("role", &sa.role)?,
            namespace: name("namespace", &sa.namespace)?,
        }
    } else {
        unreachable!("one user source is given")
    };
    Ok(CredentialSource::Kubeconfig {
        cluster: Some(KubeCluster {
            name: cluster_name,
            server,
            certificate_authority: ca,
            namespace,
        }),
        user,
    })
}

/// Where a credential comes from: the compiled `credentials:` kinds (see
/// the README for the policy syntax).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialSource {
    /// A KV v2 secret; `fields: None` = every field.
    Kv {
        mount: String,
        path: String,
        fields: Option<Vec<String>>,
    },
    /// A fresh database user (database secrets engine `creds/<role>`).
    Database { mount: String, role: String },
    /// A PKI certificate (`issue/<role>`), names filled from claims.
    Certificate {
        mount: String,
        role: String,
        common_name: Template,
        alt_names: Vec<Template>,
    },
    /// A complete kubeconfig: the cluster (absent for `KubeUser::Kv`) and a
    /// user credential.
    Kubeconfig {
        cluster: Option<KubeCluster>,
        user: KubeUser,
    },
    /// An orphan Vault token with these policies.
    VaultToken {
        policies: Vec<String>,
        num_uses: Option<u32>,
    },
    /// The job's SSH public key signed by the SSH engine (`sign/<role>`).
    SshCertificate {
        mount: String,
        role: String,
        valid_principals: Vec<Template>,
    },
    /// A fresh RabbitMQ user (rabbitmq secrets engine `creds/<role>`).
    Rabbitmq { mount: String, role: String },
    /// `source`, delivered response-wrapped: the job gets a single-use
    /// wrapping token valid for `wrap_ttl` (at most the credential's TTL).
    Wrapped {
        wrap_ttl: Duration,
        source: Box<CredentialSource>,
    },
}

impl CredentialSource {
    /// The kind's name in responses and audit lines.
    pub fn kind(&self) -> &'static str {
        match self {
            CredentialSource::Kv { .. } => "kv",
            CredentialSource::Database { .. } => "database",
            CredentialSource::Certificate { .. } => "certificate",
            CredentialSource::Kubeconfig { .. } => "kubeconfig",
            CredentialSource::VaultToken { .. } => "vault_token",
            CredentialSource::SshCertificate { .. } => "ssh_certificate",
            CredentialSource::Rabbitmq { .. } => "rabbitmq",
            CredentialSource::Wrapped { source, .. } => source.kind(),
        }
    }

    /// Whether every job that gets this credential gets the same values
    /// until they change in Vault (a KV read): their mask hints may then
    /// be kept (`src/mask/cache.rs`). Everything minted per exchange, and
    /// anything wrapped (a new wrapping token each time), is not.
    pub(crate) fn is_stable(&self) -> bool {
        match self {
            CredentialSource::Kv { .. } => true,
            CredentialSource::Database { .. }
            | CredentialSource::Certificate { .. }
            | CredentialSource::Kubeconfig { .. }
            | CredentialSource::VaultToken { .. }
            | CredentialSource::SshCertificate { .. }
            | CredentialSource::Rabbitmq { .. }
            | CredentialSource::Wrapped { .. } => false,
        }
    }
}

/// The cluster part of a composed kubeconfig (nothing secret).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KubeCluster {
    pub name: String,
    pub server: String,
    /// PEM.
    pub certificate_authority: String,
    pub namespace: Option<String>,
}

/// Where a kubeconfig's user credential comes from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KubeUser {
    /// A PKI client certificate; the subject CN is the Kubernetes user name.
    /// The organization (the Kubernetes group) is the PKI role's
    /// `organization` setting: PKI `issue` takes no per-request subject O.
    ClientCertificate {
        mount: String,
        role: String,
        common_name: Template,
    },
    /// A service-account token from the kubernetes secrets engine.
    ServiceAccount {
        mount: String,
        role: String,
        namespace: String,
    },
    /// A whole kubeconfig stored in KV v2, delivered as is.
    Kv {
        mount: String,
        path: String,
        field: String,
    },
}

#[cfg(test)]
mod tests {
    use crate::policy::{CredentialSource, PolicySet};

    const RULES: &str = "rules:\n  - name: r\n    issuer: github\n    claims: {repository: acme/api}\n    grant: [c]\n";

    fn compile(cred: &str) -> Result<CredentialSource, String> {
        let text = format!("credentials:\n  c:\n{cred}    ttl: 5m\n{RULES}");
        let set = PolicySet::from_sources(&[("e.yaml".to_owned(), text)], &["github".into()])
            .map_err(|e| e.to_string())?;
        let claims = serde_json::json!({"repository": "acme/api"});
        match set.decide(&crate::policy::Request {
            environment: "e",
            issuer: "github",
            claims: claims.as_object().unwrap(),
            credentials: &[],
        }) {
            crate::policy::Decision::Allow(g) => Ok(g[0].source.clone()),
            other => panic!("{other:?}"),
        }
    }

    const CA: &str = "    -----BEGIN CERTIFICATE-----\n        MIIBszCCAVmgAwIBAgIUYQ==\n        -----END CERTIFICATE-----\n";

    /// Only a plain KV read's hints may be kept: a wrapped KV read is a new
    /// wrapping token every time, and the rest are minted per exchange.
    #[test]
    fn only_a_plain_kv_read_is_stable() {
        for (cred, stable) in [
            ("    kv: {mount: secret, path: app}\n", true),
            (
                "    kv: {mount: secret, path: app}\n    wrap: true\n",
                false,
            ),
            (
                "    kubeconfig: {kv: {mount: secret, path: k8s/prod}}\n",
                false,
            ),
            ("    database: {role: app}\n", false),
            ("    rabbitmq: {mount: mq, role: app}\n", false),
            ("    vault_token: {policies: [deploy]}\n", false),
            (
                "    ssh_certificate: {role: r, valid_principals: [deploy]}\n",
                false,
            ),
            (
                "    certificate: {role: r, common_name: \"a.internal\"}\n",
                false,
            ),
        ] {
            let src = compile(cred).unwrap_or_else(|e| panic!("{cred}: {e}"));
            assert_eq!(src.is_stable(), stable, "{cred}");
        }
    }

    #[test]
    fn every_kind_compiles() {
        let ok = [
            "    database: {role: app}\n".to_owned(),
            "    rabbitmq: {mount: mq, role: app}\n".to_owned(),
            "    certificate: {role: r, common_name: \"{repository}.deploy.internal\", alt_names: [\"api.internal\"]}\n".to_owned(),
            "    vault_token: {policies: [deploy], num_uses: 3}\n".to_owned(),
            "    ssh_certificate: {role: r, valid_principals: [deploy, \"ci-{repository}\"]}\n".to_owned(),
            "    kubeconfig: {kv: {mount: secret, path: k8s/prod}}\n".to_owned(),
            format!("    kubeconfig:\n      server: https://k8s.internal:6443\n      certificate_authority: |\n    {CA}      client_certificate: {{role: k8s, common_name: \"repo:{{repository}}\"}}\n"),
            format!("    kubeconfig:\n      server: https://k8s.internal:6443\n      namespace: apps\n      certificate_authority: |\n    {CA}      service_account: {{role: deployer, namespace: apps}}\n"),
            "    database: {role: app}\n    wrap: true\n".to_owned(),
            "    database: {role: app}\n    wrap_ttl: 1m\n".to_owned(),
        ];
        for c in &ok {
            let src = compile(c).unwrap_or_else(|e| panic!("{c}: {e}"));
            assert!(!matches!(src, CredentialSource::Kv { .. }), "{c}");
        }
        match compile("    database: {role: app}\n    wrap_ttl: 1m\n").unwrap() {
            CredentialSource::Wrapped { wrap_ttl, source } => {
                assert_eq!(wrap_ttl.as_secs(), 60);
                assert!(matches!(*source, CredentialSource::Database { .. }));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Regression: every name template, in each context a credential uses
    /// one (certificate CN and SANs: DNS names; kubeconfig user and SSH
    /// principals: identities), maps distinct claim values to distinct
    /// names. `refs/heads/MAIN` was lowercased onto `refs/heads/main`'s
    /// certificate name.
    #[test]
    fn name_templates_never_fold_two_values_into_one() {
        use crate::policy::{KubeUser, Template};
        let kube = format!(
            "    kubeconfig:\n      server: https://k8s.internal:6443\n      certificate_authority: |\n    {CA}      client_certificate: {{role: k8s, common_name: \"{{ref}}\"}}\n"
        );
        // (context, credential, the template it holds)
        type TemplateOf = fn(&CredentialSource) -> Option<&Template>;
        let table: Vec<(&str, String, TemplateOf)> = vec![
            (
                "certificate common_name",
                "    certificate: {role: r, common_name: \"{ref}.x\"}\n".into(),
                |s| match s {
                    CredentialSource::Certificate { common_name, .. } => Some(common_name),
                    _ => None,
                },
            ),
            (
                "certificate alt_names",
                "    certificate: {role: r, common_name: a.x, alt_names: [\"{ref}.x\"]}\n".into(),
                |s| match s {
                    CredentialSource::Certificate { alt_names, .. } => alt_names.first(),
                    _ => None,
                },
            ),
            ("kubeconfig user", kube, |s| match s {
                CredentialSource::Kubeconfig {
                    user: KubeUser::ClientCertificate { common_name, .. },
                    ..
                } => Some(common_name),
                _ => None,
            }),
            (
                "ssh principal",
                "    ssh_certificate: {role: r, valid_principals: [\"ci-{ref}\"]}\n".into(),
                |s| match s {
                    CredentialSource::SshCertificate {
                        valid_principals, ..
                    } => valid_principals.first(),
                    _ => None,
                },
            ),
        ];
        for (context, credential, template_of) in &table {
            let source = compile(credential).unwrap_or_else(|e| panic!("{context}: {e}"));
            let template = template_of(&source).unwrap_or_else(|| panic!("{context}"));
            let mut names: Vec<String> = Vec::new();
            for value in ["refs/heads/main", "refs/heads/MAIN", "refs/heads/Main"] {
                let claims = serde_json::json!({ "ref": value });
                if let Ok(name) = template.render(claims.as_object().unwrap()) {
                    assert!(
                        !names.contains(&name),
                        "{context}: {value} renders {name} again"
                    );
                    names.push(name);
                }
            }
            assert!(!names.is_empty(), "{context}: refs/heads/main is refused");
        }
        // Two claims in one template are refused where the template is written.
        let e =
            compile("    certificate: {role: r, common_name: \"{ref}.{sha}.x\"}\n").unwrap_err();
        assert!(
            e.contains("`common_name`: template") && e.contains("uses two claims"),
            "{e}"
        );
    }

    #[test]
    fn bad_credentials_are_refused_with_advice() {
        let table = [
            (
                "    database: {role: app}\n    rabbitmq: {role: app}\n",
                "more than one credential kind",
            ),
            ("    database: {role: \"\"}\n", "`role` must not be empty"),
            ("    database: {role: \"../x\"}\n", "`role`"),
            ("    database: {role: app, user: x}\n", "unknown field"),
            (
                "    certificate: {role: r, common_name: \"{repository\"}\n",
                "unclosed",
            ),
            (
                "    certificate: {role: r, common_name: \"Bad Name\"}\n",
                "cannot produce a valid DNS name",
            ),
            ("    vault_token: {policies: []}\n", "at least one"),
            ("    vault_token: {policies: [root]}\n", "root"),
            (
                "    vault_token: {policies: [a], num_uses: 0}\n",
                "unlimited",
            ),
            (
                "    ssh_certificate: {role: r, valid_principals: []}\n",
                "valid for any principal",
            ),
            (
                "    kubeconfig: {server: \"https://k\"}\n",
                "exactly one of",
            ),
            (
                "    kubeconfig: {server: \"http://k\", service_account: {role: r, namespace: n}}\n",
                "https",
            ),
            (
                "    kubeconfig: {server: \"https://k\", service_account: {role: r, namespace: n}}\n",
                "certificate_authority",
            ),
            (
                "    kubeconfig: {server: \"https://k\", certificate_authority: nope, service_account: {role: r, namespace: n}}\n",
                "PEM",
            ),
            (
                "    kubeconfig: {server: \"https://k\", kv: {mount: s, path: p}}\n",
                "delivered as stored",
            ),
            (
                "    database: {role: app}\n    wrap: false\n    wrap_ttl: 1m\n",
                "wrap",
            ),
            ("    database: {role: app}\n    wrap_ttl: 0s\n", "wrap_ttl"),
        ];
        for (c, want) in table {
            let e = compile(c).unwrap_err();
            assert!(e.contains(want), "{c}: {e}");
        }
    }
}
