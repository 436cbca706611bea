//! Dynamic credentials end to end, each used the way a job would use it,
//! against real services: OpenBao engines, PostgreSQL, RabbitMQ, Redis,
//! kubectl against a TLS server that trusts the OpenBao PKI, ssh-keygen.
//! Each shows the credential stops working after revocation or expiry, and
//! each refusal is checked for its code and message, not just its status.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{OpenBao, Options, Stack, engines, random};
use serde_json::{Value, json};

/// The stack with what `seed` enables in OpenBao; `seed` returns the
/// `credentials:` (YAML, indented by two) the production policy grants to
/// the acme/api deploy.
async fn start(redis: bool, seed: impl FnOnce(&OpenBao) -> String + 'static) -> Stack {
    Stack::start_with(Options {
        setup: Some(Box::new(move |bao| {
            let credentials = seed(bao);
            engines::policy_dir(bao.dir(), &credentials)
        })),
        redis_prefix: redis.then(|| format!("jobkey-test-{}:", random(10))),
        ..Default::default()
    })
    .await
}

const DB: &str = "  db:\n    database: {role: app}\n    ttl: 10m\n  broken-db:\n    database: {role: broken}\n    ttl: 10m\n  db-wrapped:\n    database: {role: app}\n    wrap: true\n    ttl: 10m\n";

/// The stack with the database engine and its three credentials.
async fn start_database(redis: bool) -> Stack {
    start(redis, |bao| {
        engines::database(bao);
        DB.to_owned()
    })
    .await
}

/// A production exchange request for `credentials`, with the `extra`
/// fields of a JSON object.
fn request(credentials: &[&str], extra: Value) -> Value {
    let mut body = json!({"environment": "production", "credentials": credentials});
    for (k, v) in crate::support::overrides(extra) {
        body[k] = v;
    }
    body
}

/// An exchange of `credentials` by the acme/api deploy that must be
/// allowed: its response.
async fn issue(stack: &Stack, credentials: &[&str], extra: Value) -> Value {
    let jwt = stack.github_token(json!({}));
    let (status, resp) = stack.exchange(&jwt, request(credentials, extra)).await;
    assert_eq!(status, 200, "{resp}");
    resp
}

/// Revokes the exchange that answered `resp`, with its own handle; how
/// many credentials were revoked.
async fn revoke(stack: &Stack, resp: &Value) -> u64 {
    let (status, r) = stack
        .revoke(
            str_of(resp, "/revocation/handle"),
            str_of(resp, "/request_id"),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    r["revoked"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count in {r}"))
}

/// Asserts that an answer is the refusal `(status, code)` and that its
/// message says `message`.
/// A failure names the answer's status, code and message, never its
/// credentials (an answer that was not refused carries secrets).
fn assert_refused(answer: &(u16, Value), status: u16, code: &str, message: &str, what: &str) {
    let (got, body) = answer;
    let said = body["message"].as_str().unwrap_or_default();
    let issued = body.get("credentials").is_some();
    assert_eq!(
        (*got, body["error"].as_str(), issued),
        (status, Some(code), false),
        "{what}: {said:?}"
    );
    assert!(said.contains(message), "{what}: {said:?} lacks {message:?}");
}

/// Exchange requests that must be refused: (what, token, body, status,
/// code, a piece of the message). None of them issues anything.
async fn assert_exchanges_refused(stack: &Stack, cases: &[(&str, &str, Value, u16, &str, &str)]) {
    let allowed = |stack: &Stack| {
        stack
            .audit_lines()
            .iter()
            .filter(|l| l["decision"] == "allow")
            .count()
    };
    let before = allowed(stack);
    for (what, jwt, body, status, code, message) in cases {
        let answer = stack.exchange(jwt, body.clone()).await;
        assert_refused(&answer, *status, code, message, what);
    }
    assert_eq!(
        allowed(stack),
        before,
        "a refused exchange issued something"
    );
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

/// Asserts that `user` stops logging in within `limit` (at least one try)
/// because PostgreSQL no longer knows it: any other failure (the server
/// down, a refused connection) would prove nothing about revocation.
async fn assert_user_gone_within(user: &str, password: &str, limit: Duration) {
    let start = Instant::now();
    let e = loop {
        match pg_login(user, password).await {
            Err(e) => break e,
            Ok(_) if start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(_) => panic!("{user} still logs in after {limit:?}"),
        }
    };
    assert!(
        e.contains(user)
            && (e.contains("does not exist") || e.contains("password authentication failed")),
        "{user} is refused for another reason: {e}"
    );
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ptr} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_user_logs_in_until_revoked_or_expired_and_no_lease_is_left() {
    let stack = start_database(true).await;
    let jwt = stack.github_token(json!({}));

    // Issued with the job's shorter TTL; the user logs in.
    let resp = issue(&stack, &["db"], json!({"ttl": "5m"})).await;
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
    assert!(
        mask.contains(&str_of(&resp, "/revocation/handle")),
        "the handle is masked"
    );

    // Revoked: the user is gone.
    assert_eq!(revoke(&stack, &resp).await, 1);
    assert_user_gone_within(user, pw, Duration::ZERO).await;

    // Expired: a 2-second credential stops working on its own.
    let resp = issue(&stack, &["db"], json!({"ttl": "2s"})).await;
    let c = &resp["credentials"]["db"];
    assert!(c["ttl_seconds"].as_u64().unwrap() <= 2, "{c}");
    let (user, pw) = (str_of(c, "/values/username"), str_of(c, "/values/password"));
    assert!(pg_login(user, pw).await.is_ok());
    assert_user_gone_within(user, pw, Duration::from_secs(10)).await;

    // All or nothing: a good and a broken credential give an error and
    // leave no user behind.
    let before = stack.bao.leases("database/creds/app");
    let (status, resp) = stack
        .exchange(&jwt, request(&["db", "broken-db"], json!({})))
        .await;
    // The failed SQL is a 500 from Vault, which jobkey reports as 503.
    assert_refused(
        &(status, resp),
        503,
        "vault_unavailable",
        "nothing was issued",
        "a broken credential",
    );
    assert_eq!(stack.bao.leases("database/creds/app"), before);
    let last = stack.audit_lines().pop().unwrap();
    assert_eq!(
        (
            last["decision"].as_str(),
            last["reason"]["credential"].as_str()
        ),
        (Some("error"), Some("broken-db"))
    );

    // Wrapped: the job unwraps once; a second unwrap fails.
    let resp = issue(&stack, &["db-wrapped"], json!({})).await;
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
    let status = second.status();
    let text = second.text().await.unwrap();
    assert!(
        status == 400 && text.contains("wrapping token is not valid or does not exist"),
        "second unwrap: {status} {text}"
    );
    assert_eq!(revoke(&stack, &resp).await, 2, "lease + wrapping token");
    assert_user_gone_within(user, pw, Duration::ZERO).await;

    // Many exchanges, each revoked: no lease is left under the role.
    for _ in 0..6 {
        let resp = issue(&stack, &["db"], json!({})).await;
        assert_eq!(revoke(&stack, &resp).await, 1);
    }
    assert_eq!(
        stack.bao.leases("database/creds/app"),
        Vec::<String>::new(),
        "leases left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_for_the_same_job_only_and_works_across_replicas() {
    let stack = start_database(true).await;
    let resp = issue(&stack, &["db"], json!({})).await;
    let rid = str_of(&resp, "/request_id");
    let handle = str_of(&resp, "/revocation/handle");
    let (user, pw) = (
        str_of(&resp, "/credentials/db/values/username"),
        str_of(&resp, "/credentials/db/values/password"),
    );

    // Refused: the same 404 for a wrong handle, another run, another
    // repository's token and an unknown exchange; 401 for garbage.
    let other_run = stack.github_token(json!({"run_id": "111"}));
    let other_repo = stack.github_token(json!({"sub": "repo:acme/other:environment:production"}));
    let wrong_handle = format!("jkr_{}", random(43));
    let unknown = "0123456789abcdef01234567";
    let not_yours = (404, "unknown_exchange", "no such exchange to revoke");
    let garbage = (401, "malformed_token", "not a well-formed JWS");
    // (why, bearer, exchange, refusal)
    let cases = [
        ("wrong handle", wrong_handle.as_str(), rid, not_yours),
        ("another run", other_run.as_str(), rid, not_yours),
        ("another repository", other_repo.as_str(), rid, not_yours),
        ("unknown exchange", handle, unknown, not_yours),
        ("garbage", "not-a-token", rid, garbage),
    ];
    for (why, bearer, id, (status, code, message)) in cases {
        let answer = stack.revoke(bearer, id).await;
        assert_refused(&answer, status, code, message, why);
    }
    assert!(
        pg_login(user, pw).await.is_ok(),
        "nothing was revoked by the refused calls"
    );

    // Another replica sharing the Redis store: the same job's fresh ID
    // token revokes it there.
    let replica = stack.replica().await;
    let same_job = stack.github_token(json!({}));
    let (status, r) = stack
        .post(
            &replica,
            "/v1/revoke",
            &same_job,
            &json!({"request_id": rid}),
        )
        .await;
    assert_eq!((status, r["revoked"].as_u64()), (200, Some(1)), "{r}");
    assert_user_gone_within(user, pw, Duration::ZERO).await;
    // Once only.
    let answer = stack.revoke(handle, rid).await;
    let (status, code, message) = not_yours;
    assert_refused(&answer, status, code, message, "a second revoke");

    // Audited on this replica: each refusal, as the refusal it was, and no
    // secret. A refusal repeated from this address (an unknown exchange, a
    // second revoke: the same source, stage and code as the wrong handle)
    // is counted into a summary at the end of its window, not written
    // again; the two tokens' refusals are keyed by their tokens.
    let revokes: Vec<[String; 4]> = stack
        .audit_lines()
        .iter()
        .filter(|l| l["action"] == "revoke")
        .map(|l| {
            ["/exchange", "/decision", "/stage", "/reason/code"].map(|f| {
                l.pointer(f)
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_owned()
            })
        })
        .collect();
    let refused = |id: &str, stage: &str, code: &str| [id, "deny", stage, code].map(str::to_owned);
    assert_eq!(
        revokes,
        [
            refused(rid, "revoke", "unknown_exchange"),
            refused(rid, "revoke", "unknown_exchange"),
            refused(rid, "revoke", "unknown_exchange"),
            refused(rid, "token", "malformed_token"),
        ]
    );
    let text = std::fs::read_to_string(&stack.audit_path).unwrap();
    assert!(!text.contains(handle) && !text.contains(pw));
    // And the revocation itself on the replica that did it.
    let replica_audit =
        std::fs::read_to_string(stack.dir.path().join("audit/replica.jsonl")).unwrap();
    let last: Value = serde_json::from_str(replica_audit.lines().last().unwrap()).unwrap();
    assert_eq!(
        (
            &last["action"],
            &last["auth"],
            &last["decision"],
            &last["exchange"],
            &last["revoked"]
        ),
        (
            &json!("revoke"),
            &json!("id_token"),
            &json!("allow"),
            &json!(rid),
            &json!(1)
        ),
        "{last}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_names_come_from_claims_and_revocation_reaches_the_crl() {
    let stack = start(false, |bao| {
        engines::pki(bao);
        "  cert:\n    certificate: {role: deploy, common_name: \"{repository}.deploy.internal\", alt_names: [\"{repository_owner}.deploy.internal\"]}\n    ttl: 10m\n  actor-cert:\n    certificate: {role: deploy, common_name: \"{actor}.deploy.internal\"}\n    ttl: 10m\n  lacking:\n    certificate: {role: deploy, common_name: \"{deployment_id}.deploy.internal\"}\n    ttl: 10m\n".to_owned()
    })
    .await;
    let jwt = stack.github_token(json!({}));
    let resp = issue(&stack, &["cert"], json!({"ttl": "2m"})).await;
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

    // The body cannot choose the name (unknown fields are refused); a claim
    // the token lacks, and a claim value that would add a label, are
    // refused; nothing is issued.
    let sneaky = stack.github_token(json!({"actor": "evil.deploy.internal"}));
    assert_exchanges_refused(
        &stack,
        &[
            (
                "a common_name in the body",
                &jwt,
                request(&["cert"], json!({"common_name": "evil.deploy.internal"})),
                400,
                "bad_request",
                "unknown field `common_name`",
            ),
            (
                "a claim the token lacks",
                &jwt,
                request(&["lacking"], json!({})),
                403,
                "claim_not_usable",
                "credential `lacking`: the token has no `deployment_id` claim",
            ),
            (
                "a claim that adds a label",
                &sneaky,
                request(&["actor-cert"], json!({})),
                403,
                "claim_not_usable",
                "credential `actor-cert`: the `actor` claim holds characters not allowed",
            ),
        ],
    )
    .await;

    // Revocation puts the serial on the CRL.
    let serial = str_of(c, "/info/serial_number")
        .replace(':', "")
        .to_uppercase();
    revoke(&stack, &resp).await;
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

/// Why the stand-in API server could not check a connection's client
/// certificate (the CRL could not be fetched or used). Such a connection is
/// closed, and a refusal for that reason proves nothing: the test reports
/// these instead.
type StandInFailures = Arc<Mutex<Vec<String>>>;

/// A TLS server that requires a client certificate from the OpenBao PKI CA,
/// checks it against the CA's current CRL (fetched at each connection), and
/// answers `/version` like a Kubernetes API server.
async fn kube_stand_in(
    listener: tokio::net::TcpListener,
    bao_addr: String,
    server_pem: (String, String),
    failures: StandInFailures,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            return;
        };
        let cfg = match crl_checking_config(&bao_addr, &server_pem).await {
            Ok(cfg) => cfg,
            Err(e) => {
                failures.lock().unwrap().push(e);
                continue;
            }
        };
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

/// The stand-in's TLS configuration for one connection: its server
/// certificate, and client certificates from the PKI CA checked against
/// the CRL as it is now.
async fn crl_checking_config(
    bao_addr: &str,
    (cert_pem, key_pem): &(String, String),
) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
    let get = |path: &str| {
        let url = format!("{bao_addr}/v1/pki/{path}");
        async move {
            let answer = reqwest::get(&url).await.and_then(|r| r.error_for_status());
            match answer {
                Ok(r) => r.text().await.map_err(|e| format!("{url}: {e}")),
                Err(e) => Err(format!("{url}: {e}")),
            }
        }
    };
    let ca_pem = get("ca/pem").await?;
    let crl_pem = get("crl/pem").await?;
    let mut roots = rustls::RootCertStore::empty();
    CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|ca| roots.add(ca).map_err(|e| e.to_string()))
        .map_err(|e| format!("the PKI CA: {e}"))?;
    let crls = CertificateRevocationListDer::pem_slice_iter(crl_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CRL: {e}"))?;
    if crls.is_empty() {
        return Err(format!("no CRL in {crl_pem:?}"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .with_crls(crls)
    .build()
    .map_err(|e| format!("the client verifier: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the server certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("the server key: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
        })
        .map_err(|e| format!("the server configuration: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
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

/// Asserts that kubectl with `kubeconfig` works, its answer the stand-in's.
async fn assert_kubectl_works(kubeconfig: &str, dir: &Path, failures: &StandInFailures) {
    let out = kubectl_version(kubeconfig, dir).await;
    let seen = failures.lock().unwrap().clone();
    assert!(seen.is_empty(), "the stand-in could not check: {seen:?}");
    let out = out.expect("kubectl with a valid certificate");
    assert!(out.contains("v1.32.0-jobkey-test"), "{out}");
}

/// Asserts that the stand-in's TLS check refused kubectl with `alert` (how
/// Go's TLS client names the alert it received), after it checked the
/// certificate against the CA and the CRL.
async fn assert_kubectl_refused(
    kubeconfig: &str,
    dir: &Path,
    failures: &StandInFailures,
    alert: &str,
    why: &str,
) {
    let e = kubectl_version(kubeconfig, dir)
        .await
        .expect_err(&format!("{why}: still accepted"));
    let seen = failures.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "{why}: the stand-in could not check: {seen:?}"
    );
    assert!(
        e.contains(&format!("remote error: tls: {alert}")),
        "{why}: not refused with `{alert}`: {e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_with_a_pki_client_certificate_works_with_kubectl_until_revoked_or_expired() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stack = start(false, move |bao| {
        let pem = engines::pki(bao);
        format!(
            "  kube:\n    kubeconfig:\n      server: https://127.0.0.1:{port}\n      namespace: apps\n      certificate_authority: |\n{}      client_certificate: {{role: k8s-client, common_name: \"repo:{{repository}}\"}}\n    ttl: 10m\n",
            engines::yaml_block(&pem, 8)
        )
    })
    .await;
    let failures = StandInFailures::default();
    tokio::spawn(kube_stand_in(
        listener,
        stack.bao.addr(),
        engines::server_certificate(&stack.bao),
        failures.clone(),
    ));
    let dir = tempfile::tempdir().unwrap();

    let resp = issue(&stack, &["kube"], json!({})).await;
    let c = &resp["credentials"]["kube"];
    assert_eq!(str_of(c, "/info/user"), "repo:acme/api");
    let kc = str_of(c, "/values/kubeconfig");
    assert_kubectl_works(kc, dir.path(), &failures).await;

    // Negative control: the same kubeconfig without the client certificate
    // is refused by the server, so the success above is the certificate's.
    // (The user gets a token instead: with no credential at all, kubectl
    // asks for a username on stdin and fails before it connects.)
    let no_cert: String = kc
        .lines()
        .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace(
            "  user:\n",
            "  user:\n    token: \"no-client-certificate\"\n",
        );
    assert_ne!(no_cert, kc);
    assert_kubectl_refused(
        &no_cert,
        dir.path(),
        &failures,
        "certificate required",
        "no client certificate",
    )
    .await;

    // Revoked: the server's CRL check refuses it.
    revoke(&stack, &resp).await;
    assert_kubectl_refused(
        kc,
        dir.path(),
        &failures,
        "revoked certificate",
        "revoked certificate",
    )
    .await;

    // Expired: a 3-second kubeconfig stops working on its own.
    let resp = issue(&stack, &["kube"], json!({"ttl": "3s"})).await;
    let kc = str_of(&resp, "/credentials/kube/values/kubeconfig");
    assert_kubectl_works(kc, dir.path(), &failures).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_kubectl_refused(
        kc,
        dir.path(),
        &failures,
        "expired certificate",
        "expired certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_token_reads_what_its_policy_allows_until_revoked() {
    // jobkey holds the documented least-privilege policy, and the token
    // role allows `job-read` only.
    let stack = Stack::start_with(Options {
        setup: Some(Box::new(|bao| {
            engines::job_policy(bao);
            let creds =
                "  vt:\n    vault_token: {policies: [job-read], num_uses: 5}\n    ttl: 10m\n";
            engines::policy_dir(bao.dir(), creds)
        })),
        vault_auth: Some(Box::new(|bao, dir| bao.jobkey_token_auth(dir, "1h"))),
        token_policies: Some(vec!["job-read"]),
        ..Default::default()
    })
    .await;
    let resp = issue(&stack, &["vt"], json!({"ttl": "1m"})).await;
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

    assert_eq!(revoke(&stack, &resp).await, 1);
    assert_eq!(
        read("secret/data/job/config").await.unwrap().status(),
        403,
        "revoked token still works"
    );
    // Revoked, not merely refused: Vault no longer knows it.
    let lookup = stack.bao.bao_as(
        stack.bao.root_token(),
        &["token", "lookup", "-accessor", str_of(c, "/info/accessor")],
        None,
    );
    let err = String::from_utf8_lossy(&lookup.stderr);
    assert!(
        !lookup.status.success() && err.contains("invalid accessor"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_certificate_carries_the_policy_principals_and_the_ttl() {
    let stack = start(false, |bao| {
        engines::ssh(bao);
        "  ssh:\n    ssh_certificate: {role: deploy, valid_principals: [deploy, \"ci-{repository}\"]}\n    ttl: 10m\n".to_owned()
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
    let public = public.trim();
    let jwt = stack.github_token(json!({}));

    assert_exchanges_refused(
        &stack,
        &[
            (
                "no key",
                &jwt,
                request(&["ssh"], json!({})),
                400,
                "bad_request",
                "credential `ssh`: this credential is an SSH certificate: send your public key as `ssh_public_key`",
            ),
            (
                "two lines",
                &jwt,
                request(&["ssh"], json!({"ssh_public_key": format!("{public}\n{public}")})),
                400,
                "bad_request",
                "credential `ssh`: `ssh_public_key` must be a single line",
            ),
        ],
    )
    .await;

    let resp = issue(
        &stack,
        &["ssh"],
        json!({"ttl": "5m", "ssh_public_key": public}),
    )
    .await;
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
        "  mq:\n    rabbitmq: {role: app}\n    ttl: 10m\n".to_owned()
    })
    .await;
    let resp = issue(&stack, &["mq"], json!({})).await;
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
    assert_eq!(revoke(&stack, &resp).await, 1);
    assert!(!auth(user, pw), "the revoked user still authenticates");
    // Refused because the user is gone, not for another reason.
    let users = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_users"])
        .output()
        .unwrap();
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(
        users.contains("guest") && !users.contains(user),
        "{user} is still a user: {users}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outage_is_503_and_jobkey_recovers_without_a_restart() {
    let mut stack = start_database(false).await;
    let jwt = stack.github_token(json!({}));
    let body = request(&["db"], json!({}));
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
