//! Shared integration-test setup: a real OpenBao (dev mode, free loopback
//! port), stand-in CI issuers serving real discovery and JWKS on loopback,
//! and a jobkey server built from a real config file, all torn down on drop.

pub mod engines;
pub mod openbao;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jobkey::{DevIssuer, Shape, SigningKey, spawn_dev_issuer};
use serde_json::{Map, Value};

pub use openbao::OpenBao;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// An RSA test key from tests/fixtures/keys.
pub fn rsa_key(name: &str, kid: &str) -> SigningKey {
    let pem = std::fs::read_to_string(fixture(&format!("keys/{name}.pem"))).unwrap();
    SigningKey::rsa_from_pem(&pem, kid).unwrap()
}

/// The public half of a test key, PEM.
pub fn public_pem_of(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("keys/{name}.pub.pem"))).unwrap()
}

/// Claim overrides for a minted token, from a JSON object literal.
pub fn overrides(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("overrides are a JSON object, not {other}"),
    }
}

/// Runs the real binary with `args` and no `JOBKEY_CONFIG` from the
/// caller; returns (exit code, stdout, stderr).
pub fn jobkey_cli(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(args)
        .env_remove("JOBKEY_CONFIG")
        .output()
        .expect("run jobkey");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shipped example config (`examples/jobkey.toml`).
pub fn example_config() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/jobkey.toml")
        .display()
        .to_string()
}

/// `jobkey policy test --config <example config> DIR`.
pub fn policy_test(dir: &Path) -> (i32, String, String) {
    jobkey_cli(&[
        "policy",
        "test",
        "--config",
        &example_config(),
        &dir.display().to_string(),
    ])
}

/// A temporary copy of the shipped `policies/` (for tests that edit or
/// watch their own copy).
pub fn copied_policies() -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    to
}

/// A copy of the shipped policies in which every rule that grants a KV
/// secret also grants a response-wrapped copy of it (`deploy-db-wrapped`,
/// `app-config-wrapped`). A KV read alone issues nothing revocable, so its
/// exchange gets no revocation handle; the wrapping token is revocable, so
/// these exchanges do (for tests of revocation itself).
pub fn revocable_policies() -> tempfile::TempDir {
    let dir = copied_policies();
    for (file, secret, path) in [
        ("production.yaml", "deploy-db", "production/deploy-db"),
        ("staging.yaml", "app-config", "staging/app-config"),
    ] {
        let file = dir.path().join(file);
        let text = std::fs::read_to_string(&file).unwrap();
        let wrapped = format!(
            "credentials:\n  {secret}-wrapped:\n    description: {secret}, response-wrapped (revocable)\n    kv: {{mount: secret, path: {path}}}\n    wrap: true\n    ttl: 10m\n"
        );
        let grant = format!("grant: [{secret}]");
        assert!(text.contains(&grant), "{} grants {secret}", file.display());
        let text = text
            .replacen("credentials:\n", &wrapped, 1)
            .replace(&grant, &format!("grant: [{secret}, {secret}-wrapped]"));
        std::fs::write(&file, text).unwrap();
    }
    dir
}

/// Seconds since the epoch (for claims' `iat` and `exp`).
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A random alphanumeric string (secret values, names and tokens in tests).
pub fn random(n: usize) -> String {
    use ring::rand::SecureRandom;
    let mut b = vec![0u8; n];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b.iter()
        .map(|x| {
            char::from(
                b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"[(*x as usize) % 57],
            )
        })
        .collect()
}

/// The address in the server's "listening" log line (text or JSON format).
fn listening_addr(log: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains("listening"))?;
    let rest = &line[line.find("addr")? + "addr".len()..];
    let addr: String = rest
        .trim_start_matches(['=', '"', ':', ' '])
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    addr.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.to_string())
}

/// The whole stack, in process.
pub struct Stack {
    pub bao: OpenBao,
    pub github: Arc<DevIssuer>,
    pub gitlab: Arc<DevIssuer>,
    pub ecdsa: Arc<DevIssuer>,
    pub buildkite: Arc<DevIssuer>,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub audit_path: PathBuf,
    pub db_password: String,
    pub app_key: String,
    /// The server's own log (subprocess mode only).
    pub log_path: PathBuf,
    pub config_path: PathBuf,
    /// The policy directory the server serves.
    pub policy_dir: PathBuf,
    client: reqwest::Client,
    /// The policy copy of [`Stack::start_revocable`], removed on drop.
    policies: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    child: Option<std::process::Child>,
}

/// Seeds OpenBao before jobkey starts; returns the policy directory.
pub type Setup = Box<dyn FnOnce(&OpenBao) -> PathBuf>;

/// Writes what jobkey needs to log in to OpenBao into the given directory
/// and returns the body of the config's `[vault.auth]` table.
pub type VaultAuthSetup = Box<dyn FnOnce(&OpenBao, &Path) -> String>;

/// How to run the stack.
#[derive(Default)]
pub struct Options {
    /// Write the audit log here instead of the temp dir (e.g. /dev/full).
    pub audit_path: Option<PathBuf>,
    /// More `[audit]` keys, one per line (e.g. `rotate_bytes = 1024`).
    pub audit_keys: Option<String>,
    /// Run the real `jobkey serve` binary (logs at trace level to a file)
    /// instead of serving in process.
    pub subprocess: bool,
    /// Seeds the OpenBao (engines, secrets) before jobkey starts and returns
    /// the policy directory to use instead of the shipped `policies/`.
    pub setup: Option<Setup>,
    /// Keep exchange records in the local Redis (127.0.0.1:6379) under
    /// this key prefix instead of in memory.
    pub redis_prefix: Option<String>,
    /// Serve the policies of this directory instead of the shipped
    /// `policies/` (e.g. a temp copy a test edits).
    pub policy_dir: Option<PathBuf>,
    /// How jobkey logs in to OpenBao (default: the root token from a file).
    pub vault_auth: Option<VaultAuthSetup>,
    /// Subprocess mode: log with jobkey's default filter instead of
    /// `RUST_LOG=trace`.
    pub default_log_filter: bool,
    /// `vault_token` credentials: creates the documented token role
    /// (`OpenBao::write_jobkey_token_role`) with these allowed policies and
    /// names it, with the same list, in the config's `[vault]` table.
    /// `None`: no token role, so such credentials are refused.
    pub token_policies: Option<Vec<&'static str>>,
    /// More tables at the end of the config (e.g. `[masks]\ncache_ttl = "0s"`).
    pub extra_config: Option<String>,
}

impl Stack {
    /// Starts OpenBao, seeds the secrets the shipped policies name, starts
    /// the issuers and a jobkey server with the shipped `policies/`.
    pub async fn start() -> Stack {
        Self::start_with(Options::default()).await
    }

    /// The stack serving the policies of `dir` (a copy a test edits).
    pub async fn start_on(dir: &Path) -> Stack {
        Self::start_with(Options {
            policy_dir: Some(dir.to_path_buf()),
            ..Options::default()
        })
        .await
    }

    /// The stack serving [`revocable_policies`]: its GitHub production
    /// and GitLab/Buildkite staging exchanges get a revocation handle.
    pub async fn start_revocable() -> Stack {
        Self::start_revocable_with(Options::default()).await
    }

    /// [`Stack::start_revocable`] with other options (`policy_dir` and
    /// `setup` are replaced).
    pub async fn start_revocable_with(opts: Options) -> Stack {
        let policies = revocable_policies();
        let mut stack = Self::start_with(Options {
            policy_dir: Some(policies.path().to_path_buf()),
            setup: None,
            ..opts
        })
        .await;
        stack.policies = Some(policies);
        stack
    }

    pub async fn start_with(mut opts: Options) -> Stack {
        jobkey::install_rustls_ring_provider();
        let bao = OpenBao::start();
        let policy_dir = opts
            .setup
            .take()
            .map(|f| f(&bao))
            .or(opts.policy_dir.clone())
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"));
        let db_password = format!("pw-{}", random(24));
        let app_key = format!("key-{}", random(24));
        bao.put_deploy_db(&db_password);
        bao.bao(&[
            "kv",
            "put",
            "-mount=secret",
            "staging/app-config",
            &format!("api_key={app_key}"),
            "region=eu-west-1",
        ]);

        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let github = spawn_dev_issuer(any, rsa_key("issuer-a", "gh-1"))
            .await
            .unwrap();
        let gitlab = spawn_dev_issuer(any, rsa_key("issuer-b", "gl-1"))
            .await
            .unwrap();
        let ecdsa = spawn_dev_issuer(any, SigningKey::generate_es256("ec-1").unwrap())
            .await
            .unwrap();
        let buildkite = spawn_dev_issuer(any, SigningKey::generate_es256("bk-1").unwrap())
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let token_role = match &opts.token_policies {
            Some(allowed) => {
                bao.write_jobkey_token_role(allowed);
                format!(
                    "token_role = \"{}\"\nallowed_token_policies = {:?}\n",
                    openbao::JOBKEY_ROLE,
                    allowed
                )
            }
            None => String::new(),
        };
        let vault_auth = match opts.vault_auth.take() {
            Some(setup) => setup(&bao, dir.path()),
            None => {
                let token_file = dir.path().join("vault-token");
                std::fs::write(&token_file, bao.root_token()).unwrap();
                format!(
                    "method = \"token\"\ntoken_file = \"{}\"",
                    token_file.display()
                )
            }
        };
        let audit_path = opts
            .audit_path
            .clone()
            .unwrap_or_else(|| dir.path().join("audit/audit.jsonl"));
        // The subprocess binds a port of its own choosing and logs it: a port
        // picked here and bound there could be taken by another test's
        // server in between, and that server would answer our requests.
        let port = 0;
        let config = format!(
            r#"
listen = "127.0.0.1:{port}"
audiences = ["jobkey"]
policy_dir = "{policies}"
[audit]
path = "{audit}"
fingerprint_key_file = "{fingerprint_key}"
{audit_keys}
[vault]
address = "{vault}"
timeout = "3s"
{token_role}[vault.auth]
{vault_auth}
[fetch]
min_refetch_interval = "1s"
# The tests send floods from one address; `abuse.rs` turns the limits on.
[limits]
per_source = "off"
per_identity = "off"
[issuers.github]
issuer = "{gh}"
provider = "github"
max_lifetime = "15m"
[issuers.gitlab]
issuer = "{gl}"
provider = "gitlab"
max_lifetime = "2h"
[issuers.ecdsa]
issuer = "{ec}"
provider = "github"
algorithms = ["ES256"]
[issuers.buildkite]
issuer = "{bk}"
provider = "buildkite"
algorithms = ["ES256"]
"#,
            policies = policy_dir.display(),
            audit = audit_path.display(),
            audit_keys = opts.audit_keys.as_deref().unwrap_or_default(),
            fingerprint_key = dir.path().join("fingerprint.key").display(),
            vault = bao.addr(),
            gh = github.url(),
            gl = gitlab.url(),
            ec = ecdsa.url(),
            bk = buildkite.url(),
        );
        let config = match &opts.extra_config {
            Some(extra) => format!("{config}{extra}\n"),
            None => config,
        };
        let config = match &opts.redis_prefix {
            Some(prefix) => format!(
                "{config}[state]\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\n"
            ),
            None => config,
        };
        let config_path = dir.path().join("jobkey.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("jobkey.log");
        let client = reqwest::Client::new();
        // Either the real binary (its log at trace level in a file) or the
        // library's server in this process.
        let (url, shutdown, child) = if opts.subprocess {
            let log = std::fs::File::create(&log_path).unwrap();
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"));
            cmd.args(["serve", "--config"]).arg(&config_path);
            if opts.default_log_filter {
                cmd.env_remove("RUST_LOG");
            } else {
                cmd.env("RUST_LOG", "trace");
            }
            let child = cmd
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut url = None;
            for _ in 0..300 {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(addr) = listening_addr(&log)
                    && client
                        .get(format!("http://{addr}/healthz"))
                        .send()
                        .await
                        .is_ok()
                {
                    url = Some(format!("http://{addr}"));
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            let Some(url) = url else {
                panic!(
                    "jobkey did not start: {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            };
            (url, None, Some(child))
        } else {
            let cfg = jobkey::Config::load(&config_path).unwrap();
            let state = jobkey::AppState::build(&cfg).await.unwrap();
            let listener = tokio::net::TcpListener::bind(any).await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(async move {
                let _ = jobkey::serve(listener, state, async {
                    let _ = rx.await;
                })
                .await;
            });
            (url, Some(tx), None)
        };
        Stack {
            bao,
            github,
            gitlab,
            ecdsa,
            buildkite,
            url,
            dir,
            audit_path,
            db_password,
            app_key,
            log_path,
            config_path,
            policy_dir,
            client,
            policies: None,
            shutdown,
            child,
        }
    }

    /// The server's process id (subprocess mode only).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// GET `path` on the server: (status, JSON body).
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// GitHub-shaped claims of the production deploy the policies admit.
    pub fn github_claims(&self) -> Map<String, Value> {
        self.github.claims(Shape::Github, "jobkey")
    }

    /// A GitHub-shaped ID token of the production deploy the shipped
    /// policies admit, with `overrides` applied (`json!({})` for none; a
    /// null removes a claim).
    pub fn github_token(&self, overrides: Value) -> String {
        self.github
            .mint(Shape::Github, "jobkey", &self::overrides(overrides))
    }

    /// A GitLab-shaped ID token of the staging deploy the shipped policies
    /// admit.
    pub fn gitlab_token(&self) -> String {
        self.gitlab.mint(Shape::Gitlab, "jobkey", &Map::new())
    }

    /// GitHub-shaped claims naming another issuer URL.
    pub fn claims_for(&self, iss: &str, aud: &str) -> Map<String, Value> {
        Shape::Github.claims(iss, aud, crate::support::now())
    }

    /// POSTs an exchange for `environment` with `token`.
    pub async fn exchange_status(&self, token: &str, environment: &str) -> (u16, Value) {
        let body = serde_json::json!({ "environment": environment }).to_string();
        self.exchange_raw(Some(format!("Bearer {token}")), &body)
            .await
    }

    /// POSTs `body` with an optional raw Authorization header.
    pub async fn exchange_raw(&self, authorization: Option<String>, body: &str) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}/v1/exchange", self.url))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()
                .get("cache-control")
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "every response carries Cache-Control: no-store"
        );
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Starts a second jobkey (in process) from the same config: another
    /// replica. Returns its URL; it stops when the runtime ends.
    pub async fn replica(&self) -> String {
        let mut cfg = jobkey::Config::load(&self.config_path).unwrap();
        cfg.audit_path = self.dir.path().join("audit/replica.jsonl");
        let state = jobkey::AppState::build(&cfg).await.unwrap();
        let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listener = tokio::net::TcpListener::bind(any).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = jobkey::serve(listener, state, std::future::pending()).await;
        });
        url
    }

    /// POSTs `body` as JSON to `url` + `path` with a bearer; status and JSON.
    pub async fn post(&self, url: &str, path: &str, bearer: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{url}{path}"))
            .header("authorization", format!("Bearer {bearer}"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Exchanges with `body` on this stack.
    pub async fn exchange(&self, token: &str, body: Value) -> (u16, Value) {
        self.post(&self.url, "/v1/exchange", token, &body).await
    }

    /// Revokes `request_id` with `bearer` (handle or ID token).
    pub async fn revoke(&self, bearer: &str, request_id: &str) -> (u16, Value) {
        self.post(
            &self.url,
            "/v1/revoke",
            bearer,
            &serde_json::json!({ "request_id": request_id }),
        )
        .await
    }

    /// The audit log's lines as JSON.
    pub fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
