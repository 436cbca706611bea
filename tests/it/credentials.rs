//! Dynamic credentials end to end, each used the way a job would use it,
//! against real services: OpenBao engines, PostgreSQL, RabbitMQ, Redis,
//! kubectl against a TLS server that trusts the OpenBao PKI, ssh-keygen.
//! Each shows the credential stops working after revocation or expiry.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::{Options, Stack, engines, random};
use jobkey::devissuer::Shape;
use serde_json::{Map, Value, json};

fn no_overrides() -> Map<String, Value> {
    Map::new()
}

fn token(stack: &Stack, overrides: Value) -> String {
    stack.github.mint(
        Shape::Github,
        "jobkey",
        overrides.as_object().unwrap_or(&no_overrides()),
    )
}

async fn start(
    redis: bool,
    seed: impl FnOnce(&crate::support::OpenBao) -> (String, Vec<&'static str>) + 'static,
) -> Stack {
    Stack::start_with(Options {
        setup: Some(Box::new(move |bao| {
            let (creds, names) = seed(bao);
            engines::policy_dir(bao.dir(), &creds, &names)
        })),
        redis_prefix: redis.then(|| format!("jobkey-test-{}:", random(10))),
        ..Default::default()
    })
    .await
}

/// The stack with the database engine and its three credentials.
async fn start_database(redis: bool) -> Stack {
    start(redis, |bao| {
        engines::database(bao);
        (DB.to_owned(), vec!["db", "broken-db", "db-wrapped"])
    })
    .await
}

/// A Vault handle as root, for the typed lease listing.
async fn vault_as_root(stack: &Stack) -> jobkey::vault::Vault {
    let path = stack.bao.write_file("root-token", stack.bao.root_token());
    jobkey::vault::Vault::connect(jobkey::vault::VaultConfig {
        address: stack.bao.url(),
        ca_file: None,
        auth: jobkey::vault::VaultAuth::TokenFile(path),
        request_timeout: Duration::from_secs(5),
    })
    .await
    .unwrap()
}

async fn pg_login(user: &str, password: &str) -> Result<String, String> {
    let cfg = format!("host=127.0.0.1 port=5432 dbname=postgres user={user} password={password}");
    let why = |e: tokio_postgres::Error| {
        e.as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string())
    };
    let (client, conn) = tokio_postgres::connect(&cfg, tokio_postgres::NoTls)
        .await
        .map_err(why)?;
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(why)?;
    Ok(row.get(0))
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

const DB: &str = "  db:\n    database: {role: app}\n    ttl: 10m\n  broken-db:\n    database: {role: broken}\n    ttl: 10m\n  db-wrapped:\n    database: {role: app}\n    wrap: true\n    ttl: 10m\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_user_logs_in_until_revoked_or_expired_and_no_lease_is_left() {
    let stack = start_database(true).await;
    let jwt = token(&stack, json!({}));

    // Issued with the job's shorter TTL; the user logs in.
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["db"], "ttl": "5m"}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["db"];
    assert_eq!(c["kind"], "database");
    assert_eq!(c["wrapped"], false);
    let ttl = c["ttl_seconds"].as_u64().unwrap();
    assert!(
        (290..=300).contains(&ttl),
        "lease shortened to the job's ttl: {ttl}"
    );
    let (user, pw) = (str_of(c, "/values/username"), str_of(c, "/values/password"));
    assert_eq!(pg_login(user, pw).await.unwrap(), user);
    let mask: Vec<&str> = resp["mask"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(mask.contains(&pw), "the password is masked");
    let handle = str_of(&resp, "/revocation/handle");
    assert!(mask.contains(&handle), "the handle is masked");

    // Revoked: the user is gone.
    let (status, r) = stack.revoke(handle, str_of(&resp, "/request_id")).await;
    assert_eq!((status, r["revoked"].as_u64()), (200, Some(1)), "{r}");
    let e = pg_login(user, pw).await.unwrap_err();
    assert!(
        e.contains("does not exist") || e.contains("authentication"),
        "{e}"
    );

    // Expired: a 2-second credential stops working on its own.
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["db"], "ttl": "2s"}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["db"];
    assert!(c["ttl_seconds"].as_u64().unwrap() <= 2, "{c}");
    let (user, pw) = (str_of(c, "/values/username"), str_of(c, "/values/password"));
    assert!(pg_login(user, pw).await.is_ok());
    let mut gone = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if pg_login(user, pw).await.is_err() {
            gone = true;
            break;
        }
    }
    assert!(gone, "the expired user still logs in");

    // All or nothing: a good and a broken credential give an error and
    // leave no user behind.
    let vault = vault_as_root(&stack).await;
    let before = vault.list_leases("database/creds/app").await.unwrap();
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["db", "broken-db"]}),
        )
        .await;
    // The failed SQL is a 500 from Vault, which jobkey reports as 503.
    assert!(status == 502 || status == 503, "{status} {resp}");
    assert!(resp.get("credentials").is_none(), "{resp}");
    assert_eq!(
        vault.list_leases("database/creds/app").await.unwrap(),
        before
    );
    let last = stack.audit_lines().pop().unwrap();
    assert_eq!(
        (
            last["decision"].as_str(),
            last["reason"]["credential"].as_str()
        ),
        (Some("error"), Some("broken-db"))
    );

    // Wrapped: the job unwraps once; a second unwrap fails.
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["db-wrapped"]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["db-wrapped"];
    assert_eq!(
        (c["wrapped"].as_bool(), c["kind"].as_str()),
        (Some(true), Some("database"))
    );
    assert!(c["values"].get("password").is_none(), "{c}");
    let wrapping = str_of(c, "/values/wrapping_token");
    let addr = str_of(c, "/info/vault_address");
    let http = reqwest::Client::new();
    let unwrap = || {
        http.post(format!("{addr}/v1/sys/wrapping/unwrap"))
            .header("X-Vault-Token", wrapping)
            .send()
    };
    let first = unwrap().await.unwrap();
    assert_eq!(first.status(), 200);
    let data: Value = first.json().await.unwrap();
    let (user, pw) = (
        str_of(&data, "/data/username"),
        str_of(&data, "/data/password"),
    );
    assert!(pg_login(user, pw).await.is_ok());
    let second = unwrap().await.unwrap();
    assert!(
        second.status().is_client_error(),
        "second unwrap: {}",
        second.status()
    );
    let (status, r) = stack
        .revoke(
            str_of(&resp, "/revocation/handle"),
            str_of(&resp, "/request_id"),
        )
        .await;
    assert_eq!(
        (status, r["revoked"].as_u64()),
        (200, Some(2)),
        "lease + wrapping token: {r}"
    );
    assert!(pg_login(user, pw).await.is_err());

    // Many exchanges, each revoked: no lease is left under the role.
    for _ in 0..6 {
        let (status, resp) = stack
            .exchange(
                &jwt,
                json!({"environment": "production", "credentials": ["db"]}),
            )
            .await;
        assert_eq!(status, 200, "{resp}");
        let (status, _) = stack
            .revoke(
                str_of(&resp, "/revocation/handle"),
                str_of(&resp, "/request_id"),
            )
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(
        vault.list_leases("database/creds/app").await.unwrap(),
        Vec::<String>::new(),
        "leases left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_for_the_same_job_only_and_works_across_replicas() {
    let stack = start_database(true).await;
    let jwt = token(&stack, json!({}));
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["db"]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let rid = str_of(&resp, "/request_id");
    let handle = str_of(&resp, "/revocation/handle");
    let (user, pw) = (
        str_of(&resp, "/credentials/db/values/username"),
        str_of(&resp, "/credentials/db/values/password"),
    );

    // Refused: the same 404 for a wrong handle, another run, another
    // repository's token and an unknown exchange; 401 for garbage.
    let other_run = token(&stack, json!({"run_id": "111"}));
    let other_repo = token(
        &stack,
        json!({"sub": "repo:acme/other:environment:production"}),
    );
    let wrong_handle = format!("jkr_{}", random(43));
    for (bearer, id, why) in [
        (wrong_handle.as_str(), rid, "wrong handle"),
        (other_run.as_str(), rid, "another run"),
        (other_repo.as_str(), rid, "another repository"),
        (handle, "0123456789abcdef01234567", "unknown exchange"),
    ] {
        let (status, r) = stack.revoke(bearer, id).await;
        assert_eq!(
            (status, r["error"].as_str()),
            (404, Some("unknown_exchange")),
            "{why}: {r}"
        );
    }
    let (status, r) = stack.revoke("not-a-token", rid).await;
    assert_eq!(status, 401, "{r}");
    assert!(
        pg_login(user, pw).await.is_ok(),
        "nothing was revoked by the refused calls"
    );

    // Another replica sharing the Redis store: the same job's fresh ID
    // token revokes it there.
    let replica = stack.replica().await;
    let same_job = token(&stack, json!({}));
    let (status, r) = stack
        .post(
            &replica,
            "/v1/revoke",
            &same_job,
            &json!({"request_id": rid}),
        )
        .await;
    assert_eq!((status, r["revoked"].as_u64()), (200, Some(1)), "{r}");
    assert!(pg_login(user, pw).await.is_err());
    // Once only.
    let (status, _) = stack.revoke(handle, rid).await;
    assert_eq!(status, 404);

    // Audited on this replica: refusals and no secrets.
    let lines = stack.audit_lines();
    let revokes: Vec<&Value> = lines.iter().filter(|l| l["action"] == "revoke").collect();
    // The second made-up/unknown handle refusal from this address is
    // counted into a summary at the end of its window, not written again.
    assert!(revokes.len() >= 4, "{revokes:?}");
    let text = std::fs::read_to_string(&stack.audit_path).unwrap();
    assert!(!text.contains(handle) && !text.contains(pw));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_names_come_from_claims_and_revocation_reaches_the_crl() {
    let stack = start(false, |bao| {
        engines::pki(bao);
        (
            "  cert:\n    certificate: {role: deploy, common_name: \"{repository}.deploy.internal\", alt_names: [\"{repository_owner}.deploy.internal\"]}\n    ttl: 10m\n  actor-cert:\n    certificate: {role: deploy, common_name: \"{actor}.deploy.internal\"}\n    ttl: 10m\n  lacking:\n    certificate: {role: deploy, common_name: \"{deployment_id}.deploy.internal\"}\n    ttl: 10m\n".to_owned(),
            vec!["cert", "actor-cert", "lacking"],
        )
    })
    .await;
    let jwt = token(&stack, json!({}));
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["cert"], "ttl": "2m"}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["cert"];
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("tls.crt");
    std::fs::write(&pem, str_of(c, "/info/certificate")).unwrap();
    let text = openssl(&[
        "x509",
        "-in",
        pem.to_str().unwrap(),
        "-noout",
        "-subject",
        "-ext",
        "subjectAltName",
    ]);
    assert!(
        text.contains("CN=acme.api.deploy.internal")
            || text.contains("CN = acme.api.deploy.internal"),
        "{text}"
    );
    assert!(text.contains("DNS:acme.deploy.internal"), "{text}");
    assert!(str_of(c, "/values/private_key").contains("PRIVATE KEY"));
    assert!(str_of(c, "/info/ca_chain").contains("BEGIN CERTIFICATE"));
    let ttl = c["ttl_seconds"].as_u64().unwrap();
    assert!((100..=120).contains(&ttl), "{ttl}");

    // The body cannot choose the name: unknown fields are refused.
    let (status, _) = stack
        .exchange(&jwt, json!({"environment": "production", "credentials": ["cert"], "common_name": "evil.deploy.internal"}))
        .await;
    assert_eq!(status, 400);
    // A claim the token lacks, and a claim value that would add a label:
    // refused, nothing issued.
    let (status, r) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["lacking"]}),
        )
        .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (403, Some("claim_not_usable")),
        "{r}"
    );
    let sneaky = token(&stack, json!({"actor": "evil.deploy.internal"}));
    let (status, r) = stack
        .exchange(
            &sneaky,
            json!({"environment": "production", "credentials": ["actor-cert"]}),
        )
        .await;
    assert_eq!(
        (status, r["error"].as_str()),
        (403, Some("claim_not_usable")),
        "{r}"
    );

    // Revocation puts the serial on the CRL.
    let serial = str_of(c, "/info/serial_number")
        .replace(':', "")
        .to_uppercase();
    let (status, _) = stack
        .revoke(
            str_of(&resp, "/revocation/handle"),
            str_of(&resp, "/request_id"),
        )
        .await;
    assert_eq!(status, 200);
    let crl = dir.path().join("crl.pem");
    std::fs::write(
        &crl,
        reqwest::get(format!("{}/v1/pki/crl/pem", stack.bao.addr()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let text = openssl(&["crl", "-in", crl.to_str().unwrap(), "-noout", "-text"])
        .replace(':', "")
        .to_uppercase();
    assert!(text.contains(&serial), "serial {serial} not on the CRL");
}

fn openssl(args: &[&str]) -> String {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A TLS server that requires a client certificate from the OpenBao PKI CA,
/// checks it against the CA's current CRL (fetched at each connection), and
/// answers `/version` like a Kubernetes API server.
async fn kube_stand_in(
    listener: std::net::TcpListener,
    bao_addr: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let crl_pem = reqwest::get(format!("{bao_addr}/v1/pki/crl/pem"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
            .unwrap();
        let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(crl_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .with_crls(crls)
        .build()
        .unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(&mut tcp).await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body = r#"{"major":"1","minor":"32","gitVersion":"v1.32.0-jobkey-test"}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}

async fn kubectl_version(kubeconfig: &str, dir: &Path) -> Result<String, String> {
    let file = dir.join(format!("kubeconfig-{}", random(6)));
    std::fs::write(&file, kubeconfig).unwrap();
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&file)
        .args(["--request-timeout=5s", "get", "--raw", "/version"])
        .output()
        .await
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_with_a_pki_client_certificate_works_with_kubectl_until_revoked_or_expired() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ca = Arc::new(std::sync::Mutex::new(String::new()));
    let ca_out = ca.clone();
    let stack = start(false, move |bao| {
        let pem = engines::pki(bao);
        *ca_out.lock().unwrap() = pem.clone();
        let creds = format!(
            "  kube:\n    kubeconfig:\n      server: https://127.0.0.1:{port}\n      namespace: apps\n      certificate_authority: |\n{}      client_certificate: {{role: k8s-client, common_name: \"repo:{{repository}}\"}}\n    ttl: 10m\n",
            engines::yaml_block(&pem, 8)
        );
        (creds, vec!["kube"])
    })
    .await;
    let ca_pem = ca.lock().unwrap().clone();
    let server = stack.bao.bao(&[
        "write",
        "-format=json",
        "pki/issue/server",
        "common_name=kube-stand-in",
        "ip_sans=127.0.0.1",
        "ttl=1h",
    ]);
    let server: Value = serde_json::from_str(&server).unwrap();
    tokio::spawn(kube_stand_in(
        listener,
        stack.bao.addr(),
        ca_pem,
        str_of(&server, "/data/certificate").to_owned(),
        str_of(&server, "/data/private_key").to_owned(),
    ));
    let dir = tempfile::tempdir().unwrap();
    let jwt = token(&stack, json!({}));

    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["kube"]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["kube"];
    assert_eq!(str_of(c, "/info/user"), "repo:acme/api");
    let kc = str_of(c, "/values/kubeconfig");
    let out = kubectl_version(kc, dir.path())
        .await
        .expect("kubectl with the fresh kubeconfig");
    assert!(out.contains("v1.32.0-jobkey-test"), "{out}");

    // Negative control: the same kubeconfig without the client certificate
    // is refused by the server, so the success above is the certificate's.
    let no_cert: String = kc
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("  user:\n", "  user: {}\n");
    assert!(kubectl_version(&no_cert, dir.path()).await.is_err());

    // Revoked: the server's CRL check refuses it.
    let (status, _) = stack
        .revoke(
            str_of(&resp, "/revocation/handle"),
            str_of(&resp, "/request_id"),
        )
        .await;
    assert_eq!(status, 200);
    let e = kubectl_version(kc, dir.path())
        .await
        .expect_err("revoked certificate still accepted");
    assert!(!e.is_empty());

    // Expired: a 3-second kubeconfig stops working on its own.
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["kube"], "ttl": "3s"}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let kc = str_of(&resp, "/credentials/kube/values/kubeconfig");
    assert!(kubectl_version(kc, dir.path()).await.is_ok());
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        kubectl_version(kc, dir.path()).await.is_err(),
        "expired certificate still accepted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_token_reads_what_its_policy_allows_until_revoked() {
    let stack = start(false, |bao| {
        engines::job_policy(bao);
        (
            "  vt:\n    vault_token: {policies: [job-read], num_uses: 5}\n    ttl: 10m\n"
                .to_owned(),
            vec!["vt"],
        )
    })
    .await;
    let jwt = token(&stack, json!({}));
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["vt"], "ttl": "1m"}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["vt"];
    let ttl = c["ttl_seconds"].as_u64().unwrap();
    assert!((50..=60).contains(&ttl), "{ttl}");
    assert!(!str_of(c, "/info/accessor").is_empty());
    let t = str_of(c, "/values/token");
    let read = |path: &'static str| {
        reqwest::Client::new()
            .get(format!("{}/v1/{path}", stack.bao.addr()))
            .header("X-Vault-Token", t)
            .send()
    };
    let ok = read("secret/data/job/config").await.unwrap();
    assert_eq!(ok.status(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!(v["data"]["data"]["greeting"], "hello");
    assert_eq!(
        read("secret/data/production/deploy-db")
            .await
            .unwrap()
            .status(),
        403,
        "outside its policy"
    );
    // It is an orphan: it does not die with jobkey's token, only on revoke.
    let lookup = stack.bao.bao(&["token", "lookup", "-format=json", t]);
    assert!(lookup.contains("\"orphan\": true"), "{lookup}");

    let (status, _) = stack
        .revoke(
            str_of(&resp, "/revocation/handle"),
            str_of(&resp, "/request_id"),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        read("secret/data/job/config").await.unwrap().status(),
        403,
        "revoked token still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_certificate_carries_the_policy_principals_and_the_ttl() {
    let stack = start(false, |bao| {
        engines::ssh(bao);
        (
            "  ssh:\n    ssh_certificate: {role: deploy, valid_principals: [deploy, \"ci-{repository}\"]}\n    ttl: 10m\n".to_owned(),
            vec!["ssh"],
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("id");
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(ok.success());
    let public = std::fs::read_to_string(dir.path().join("id.pub")).unwrap();
    let jwt = token(&stack, json!({}));

    let (status, r) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["ssh"]}),
        )
        .await;
    assert_eq!(status, 400, "no key: {r}");
    let (status, _) = stack
        .exchange(&jwt, json!({"environment": "production", "credentials": ["ssh"], "ssh_public_key": format!("{}\n{}", public.trim(), public.trim())}))
        .await;
    assert_eq!(status, 400, "two lines");

    let (status, resp) = stack
        .exchange(&jwt, json!({"environment": "production", "credentials": ["ssh"], "ttl": "5m", "ssh_public_key": public.trim()}))
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["ssh"];
    let ttl = c["ttl_seconds"].as_u64().unwrap();
    assert!(
        (280..=300).contains(&ttl),
        "from the certificate's valid-before: {ttl}"
    );
    let cert = dir.path().join("id-cert.pub");
    std::fs::write(&cert, str_of(c, "/info/signed_key")).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(&cert)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut principals: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.trim().starts_with("Principals:"))
        .skip(1)
        .take_while(|l| !l.trim().ends_with(':') && !l.contains("Critical Options"))
        .map(str::trim)
        .collect();
    principals.sort();
    assert_eq!(principals, ["ci-acme/api", "deploy"], "{text}");
    assert!(
        text.contains("Type: ssh-ed25519-cert-v01@openssh.com user certificate"),
        "{text}"
    );
    assert!(text.contains("Valid: from "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_user_authenticates_until_revoked() {
    let stack = start(false, |bao| {
        engines::rabbitmq(bao);
        (
            "  mq:\n    rabbitmq: {role: app}\n    ttl: 10m\n".to_owned(),
            vec!["mq"],
        )
    })
    .await;
    let jwt = token(&stack, json!({}));
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["mq"]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let c = &resp["credentials"]["mq"];
    let (user, pw) = (str_of(c, "/values/username"), str_of(c, "/values/password"));
    let auth = |u: &str, p: &str| {
        std::process::Command::new("rabbitmqctl")
            .args(["-q", "authenticate_user", u, p])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(auth(user, pw), "the new user authenticates");
    assert!(!auth(user, "wrong-password"), "negative control");
    let (status, _) = stack
        .revoke(
            str_of(&resp, "/revocation/handle"),
            str_of(&resp, "/request_id"),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!auth(user, pw), "the revoked user still authenticates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_is_503_and_jobkey_recovers_without_a_restart() {
    let mut stack = start_database(false).await;
    let jwt = token(&stack, json!({}));
    let body = json!({"environment": "production", "credentials": ["db"]});
    stack.bao.stop();
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/exchange", stack.url))
        .bearer_auth(&jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "vault_unavailable");
    assert!(v.get("credentials").is_none());

    // Back (dev mode starts empty: seed again); the same jobkey recovers.
    stack.bao.restart();
    engines::database(&stack.bao);
    let mut recovered = false;
    for _ in 0..60 {
        let (status, resp) = stack.exchange(&jwt, body.clone()).await;
        if status == 200 {
            let c = &resp["credentials"]["db"];
            assert!(
                pg_login(str_of(c, "/values/username"), str_of(c, "/values/password"))
                    .await
                    .is_ok()
            );
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(recovered, "jobkey did not recover after Vault came back");
}
