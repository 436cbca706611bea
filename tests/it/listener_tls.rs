//! TLS on jobkey's own listener, against the real binary: curl and
//! `jobkey fetch --ca-file` over TLS; a rotated certificate is served after
//! SIGHUP while a connection opened before keeps working; a bad new pair is
//! refused; a client without the required client certificate is refused
//! at the handshake.
//!
//! Certificates come from `openssl` (a CA, and leaves it signs).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::broker_support::{config_text, eventually, free_port};
use crate::support::Stack;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `name` (`<name>.pem`, `<name>.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "1",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
}

/// A leaf `<leaf>.pem`/`<leaf>.key` signed by CA `ca`, with `serial`
/// (hex), for 127.0.0.1 (`server`) or a client.
fn leaf(dir: &Path, ca: &str, leaf: &str, serial: &str, server: bool) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{leaf}.key"),
            "-out",
            &format!("{leaf}.csr"),
            "-subj",
            &format!("/CN={leaf}"),
        ],
    );
    let ext = if server {
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    } else {
        "extendedKeyUsage=clientAuth\n"
    };
    std::fs::write(dir.join(format!("{leaf}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{leaf}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &format!("0x{serial}"),
            "-days",
            "1",
            "-out",
            &format!("{leaf}.pem"),
            "-extfile",
            &format!("{leaf}.ext"),
        ],
    );
}

/// The real binary with a `[tls]` table, its stderr in a file.
struct TlsServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TlsServer {
    async fn start(stack: &Stack, dir: &Path, tls: &str) -> TlsServer {
        let port = free_port();
        let config = dir.join("jobkey.toml");
        let text = config_text(stack, port, &dir.join("audit.jsonl"), "", tls);
        std::fs::write(&config, text).unwrap();
        let log = dir.join("jobkey.log");
        let child = Command::new(env!("CARGO_BIN_EXE_jobkey"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut server = TlsServer { child, port, log };
        for _ in 0..300 {
            if server.log().contains("listening") {
                return server;
            }
            if server.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("jobkey did not start: {}", server.log());
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn hangup(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("jobkey's log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl `url` with `args`: (exit code, stdout, stderr).
fn curl(args: &[&str], url: &str) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The serial (hex, upper case) of the certificate the server presents.
fn served_serial(port: u16, ca: &Path) -> String {
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
        ])
        .arg(ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(s_client.stdin.take());
    let mut pem = String::new();
    s_client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut pem)
        .unwrap();
    let _ = s_client.wait();
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// A keep-alive TLS connection, opened before a rotation.
async fn open_client(ca: &Path) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_and_fetch_over_tls_and_a_rotation_on_sighup() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    leaf(d, "ca", "server", "1001", true);
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        d.join("server.pem").display(),
        d.join("server.key").display()
    );
    let server = TlsServer::start(&stack, d, &tls).await;
    let ca_file = d.join("ca.pem");
    let ca_arg = ca_file.to_str().unwrap();

    // curl, trusting the private CA; and refusing without it.
    let (code, body, err) = curl(&["--cacert", ca_arg], &format!("{}/healthz", server.url()));
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("\"ok\""), "{body}");
    let (code, _, err) = curl(&[], &format!("{}/healthz", server.url()));
    assert_eq!(code, 60, "an unknown CA is curl's error 60: {err}");
    // Plain HTTP to the TLS port gets no answer.
    let (code, _, _) = curl(&[], &format!("http://127.0.0.1:{}/healthz", server.port));
    assert_ne!(code, 0);

    // jobkey fetch --ca-file, over TLS, with a real exchange.
    let token = stack.github_token(json!({}));
    let out = tempfile::tempdir().unwrap();
    let out_dir = out.path().join("creds");
    let token_file = out.path().join("token");
    std::fs::write(&token_file, &token).unwrap();
    // The same fetch into `dir`, trusting the private CA or not.
    let fetch_to = |dir: &Path, trust_ca: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobkey"));
        cmd.args([
            "fetch",
            "--url",
            &server.url(),
            "-e",
            "production",
            "--ci",
            "none",
        ])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--out")
        .arg(dir)
        .args(["--retry-for", "0"]);
        if trust_ca {
            cmd.env("JOBKEY_CA_FILE", &ca_file);
        } else {
            cmd.env_remove("JOBKEY_CA_FILE");
        }
        cmd.output().unwrap()
    };
    let fetch = fetch_to(&out_dir, true);
    let stderr = String::from_utf8_lossy(&fetch.stderr);
    assert!(fetch.status.success(), "jobkey fetch: {stderr}");
    // Without the CA, the same fetch fails on the certificate.
    let refused = fetch_to(&out.path().join("other"), false);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&server.url()), "names the broker: {stderr}");
    assert!(
        stderr.to_ascii_lowercase().contains("certificate"),
        "refused for the certificate: {stderr}"
    );

    // A connection opened before the rotation.
    let client = open_client(&ca_file).await;
    let before = client
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200);
    assert_eq!(served_serial(server.port, &ca_file), "1001");

    // A bad new pair (a key that is not the certificate's) is refused,
    // and the old one keeps serving.
    leaf(d, "ca", "next", "1002", true);
    std::fs::copy(d.join("next.key"), d.join("wrong.key")).unwrap();
    let server_key = std::fs::read(d.join("server.key")).unwrap();
    std::fs::copy(d.join("next.pem"), d.join("server.pem")).unwrap();
    server.hangup();
    eventually("the bad pair is refused", 10, || async {
        if server.log().contains("TLS certificate reload refused") {
            Ok(())
        } else {
            Err(server.log())
        }
    })
    .await;
    assert!(server.log().contains("does not match the certificate"));
    assert_eq!(served_serial(server.port, &ca_file), "1001");
    assert!(!server.log().contains("PRIVATE KEY"));

    // The matching key arrives: SIGHUP, and the new certificate is served.
    std::fs::write(d.join("unused.key"), &server_key).unwrap();
    std::fs::copy(d.join("next.key"), d.join("server.key")).unwrap();
    server.hangup();
    eventually("the new certificate is served", 10, || async {
        match served_serial(server.port, &ca_file).as_str() {
            "1002" => Ok(()),
            other => Err(other.to_owned()),
        }
    })
    .await;
    // The connection opened before still works.
    let after = client
        .get(format!("{}/readyz", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_required_certificate_is_refused_at_the_handshake() {
    let stack = Stack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ca(d, "ca");
    ca(d, "runners");
    ca(d, "strangers");
    leaf(d, "ca", "server", "2001", true);
    leaf(d, "runners", "runner", "3001", false);
    leaf(d, "strangers", "stranger", "4001", false);
    let tls = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
        d.join("server.pem").display(),
        d.join("server.key").display(),
        d.join("runners.pem").display(),
    );
    let server = TlsServer::start(&stack, d, &tls).await;
    let url = format!("{}/healthz", server.url());
    let ca = d.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let with = |name: &str| {
        let cert = d.join(format!("{name}.pem"));
        let key = d.join(format!("{name}.key"));
        curl(
            &[
                "--cacert",
                ca,
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
            ],
            &url,
        )
    };
    // Without a client certificate: refused at the handshake (curl 56:
    // the server's alert; 35 on some builds: the handshake itself).
    let (code, body, err) = curl(&["--cacert", ca], &url);
    assert!(code == 56 || code == 35, "{code}: {err}");
    assert!(body.is_empty(), "no HTTP answer: {body}");
    // One from another CA: refused too.
    let (code, body, err) = with("stranger");
    assert!(code == 56 || code == 35, "{code}: {err}");
    assert!(body.is_empty(), "{body}");
    // A runner's certificate: served.
    let (code, body, err) = with("runner");
    assert_eq!(code, 0, "{err}");
    assert!(body.contains("\"ok\""), "{body}");
    assert!(server.log().contains("TLS handshake failed"));
}
