//! Real secrets engines in an OpenBao dev server, wired to the real local
//! services: PostgreSQL 127.0.0.1:5432 (trust auth), RabbitMQ 127.0.0.1:5672
//! with its management API on :15672. Plus a policy directory for them.

use std::path::{Path, PathBuf};

use super::OpenBao;

/// The database engine at `database/` with role `app` (and `broken`, whose
/// creation statement fails) against the local PostgreSQL. Trust auth: the
/// engine connects without a password; the users it creates get one (with
/// trust auth PostgreSQL does not check it, so tests check that the user
/// exists and can log in, and that it is gone after revocation).
pub fn database(bao: &OpenBao) {
    bao.bao(&["secrets", "enable", "database"]);
    bao.bao(&[
        "write",
        "database/config/pg",
        "plugin_name=postgresql-database-plugin",
        "connection_url=postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable",
        "allowed_roles=*",
        "verify_connection=true",
    ]);
    bao.bao(&[
        "write",
        "database/roles/app",
        "db_name=pg",
        "creation_statements=CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT CONNECT ON DATABASE postgres TO \"{{name}}\";",
        "default_ttl=1h",
        "max_ttl=2h",
    ]);
    bao.bao(&[
        "write",
        "database/roles/broken",
        "db_name=pg",
        "creation_statements=THIS IS NOT SQL \"{{name}}\";",
        "default_ttl=1h",
    ]);
}

/// PKI at `pki/` with a root CA and roles `deploy` (names under
/// deploy.internal), `k8s-client` (any name, client auth, O=deployers) and
/// `server` (127.0.0.1 server certificates for test servers).
/// Returns the CA certificate, PEM.
pub fn pki(bao: &OpenBao) -> String {
    let ca = root_ca(bao, "pki", "jobkey test CA");
    bao.bao(&[
        "write",
        "pki/config/urls",
        &format!("crl_distribution_points={}/v1/pki/crl", bao.addr()),
    ]);
    bao.bao(&[
        "write",
        "pki/roles/deploy",
        "allowed_domains=deploy.internal",
        "allow_subdomains=true",
        "max_ttl=1h",
    ]);
    bao.bao(&[
        "write",
        "pki/roles/k8s-client",
        "allow_any_name=true",
        "enforce_hostnames=false",
        "server_flag=false",
        "client_flag=true",
        "organization=deployers",
        "key_type=ec",
        "key_bits=256",
        "max_ttl=1h",
    ]);
    bao.bao(&[
        "write",
        "pki/roles/server",
        "allow_any_name=true",
        "allow_ip_sans=true",
        "key_type=ec",
        "key_bits=256",
        "max_ttl=24h",
    ]);
    ca
}

/// A PKI mount at `mount` with a fresh root CA named `common_name`;
/// returns the CA certificate, PEM.
pub fn root_ca(bao: &OpenBao, mount: &str, common_name: &str) -> String {
    bao.bao(&["secrets", "enable", &format!("-path={mount}"), "pki"]);
    bao.bao(&["secrets", "tune", "-max-lease-ttl=87600h", mount]);
    bao.bao(&[
        "write",
        "-field=certificate",
        &format!("{mount}/root/generate/internal"),
        &format!("common_name={common_name}"),
        "ttl=87600h",
    ])
}

/// A certificate and its private key (PEM) for a test server on
/// 127.0.0.1, from the `server` role of [`pki`].
pub fn server_certificate(bao: &OpenBao) -> (String, String) {
    let issued: serde_json::Value = serde_json::from_str(&bao.bao(&[
        "write",
        "-format=json",
        "pki/issue/server",
        "common_name=127.0.0.1",
        "ip_sans=127.0.0.1",
        "ttl=1h",
    ]))
    .unwrap();
    let pem = |field: &str| {
        issued["data"][field]
            .as_str()
            .unwrap_or_else(|| panic!("no {field} in {issued}"))
            .to_owned()
    };
    (pem("certificate"), pem("private_key"))
}

/// SSH CA at `ssh/` with role `deploy` for user certificates.
pub fn ssh(bao: &OpenBao) {
    bao.bao(&["secrets", "enable", "ssh"]);
    bao.bao(&["write", "ssh/config/ca", "generate_signing_key=true"]);
    bao.bao(&[
        "write",
        "ssh/roles/deploy",
        "key_type=ca",
        "allow_user_certificates=true",
        "allowed_users=*",
        "ttl=1h",
        "max_ttl=2h",
    ]);
}

/// The rabbitmq engine at `rabbitmq/` with role `app`, against the local
/// broker's management API.
pub fn rabbitmq(bao: &OpenBao) {
    bao.bao(&["secrets", "enable", "rabbitmq"]);
    bao.bao(&[
        "write",
        "rabbitmq/config/connection",
        "connection_uri=http://127.0.0.1:15672",
        "username=guest",
        "password=guest",
    ]);
    bao.bao(&[
        "write",
        "rabbitmq/roles/app",
        r#"vhosts={"/":{"write":".*","read":".*","configure":".*"}}"#,
    ]);
}

/// A Vault policy `job-read` that reads `secret/data/job/*`.
pub fn job_policy(bao: &OpenBao) {
    bao.bao_stdin(
        &["policy", "write", "job-read", "-"],
        Some("path \"secret/data/job/*\" { capabilities = [\"read\"] }\n"),
    );
    bao.bao(&["kv", "put", "-mount=secret", "job/config", "greeting=hello"]);
}

/// Writes `production.yaml` with `credentials` (YAML, indented by two),
/// every one of them granted to the acme/api GitHub deploy, into a fresh
/// directory under `base`.
pub fn policy_dir(base: &Path, credentials: &str) -> PathBuf {
    // The credentials' names: the keys at two spaces.
    let names: Vec<&str> = credentials
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.trim().strip_suffix(':'))
        .collect();
    assert!(!names.is_empty(), "no credential in {credentials}");
    let dir = base.join(format!("policies-{}", super::random(6)));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "max_ttl: 1h\ncredentials:\n{credentials}rules:\n  - name: deploy\n    issuer: github\n    claims:\n      repository: acme/api\n      ref: refs/heads/main\n    grant: [{}]\n",
        names.join(", ")
    );
    std::fs::write(dir.join("production.yaml"), text).unwrap();
    dir
}

/// Indents a PEM block for a YAML literal under a key at `indent` spaces.
pub fn yaml_block(pem: &str, indent: usize) -> String {
    pem.lines()
        .map(|l| format!("{}{l}\n", " ".repeat(indent)))
        .collect()
}
