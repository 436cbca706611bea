//! A second jobkey next to a `Stack`, with its own config changes: in
//! process (its `Config` edited) or as the real binary (its config file
//! edited), each with its own audit log. For the tests of the listener's
//! limits and of the audit log under attack.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jobkey::Config;

use crate::support::Stack;

/// A jobkey served in this process.
pub struct Broker {
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub audit_path: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Broker {
    /// Starts a jobkey from the stack's config, changed by `edit`, with
    /// its audit log at `<stack dir>/<name>/audit.jsonl`.
    pub async fn start(stack: &Stack, name: &str, edit: impl FnOnce(&mut Config)) -> Broker {
        Self::start_with_tables(stack, name, "", edit).await
    }

    /// The same, with `tables` (TOML, e.g. another issuer) added to the
    /// stack's config file first.
    pub async fn start_with_tables(
        stack: &Stack,
        name: &str,
        tables: &str,
        edit: impl FnOnce(&mut Config),
    ) -> Broker {
        let text = std::fs::read_to_string(&stack.config_path).unwrap();
        let mut cfg = Config::parse(&stack.config_path, &format!("{text}\n{tables}")).unwrap();
        let audit_path = stack.dir.path().join(name).join("audit.jsonl");
        cfg.audit_path = audit_path.clone();
        edit(&mut cfg);
        let state = jobkey::AppState::build(&cfg).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            jobkey::serve(listener, state, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Broker {
            url: format!("http://{addr}"),
            addr,
            audit_path,
            shutdown: Some(tx),
            done: Some(done),
        }
    }

    /// Asks the server to stop, without waiting.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.done.take().expect("stopped once")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The stack's config text with `listen` on `port`, the audit log at
/// `audit`, `audit_keys` added to `[audit]`, and `extra` (whole tables)
/// appended.
pub fn config_text(
    stack: &Stack,
    port: u16,
    audit: &Path,
    audit_keys: &str,
    extra: &str,
) -> String {
    let text = std::fs::read_to_string(&stack.config_path).unwrap();
    let listen = text
        .lines()
        .find(|l| l.starts_with("listen = "))
        .unwrap()
        .to_owned();
    let path = text
        .lines()
        .find(|l| l.starts_with("path = "))
        .unwrap()
        .to_owned();
    text.replace(&listen, &format!("listen = \"127.0.0.1:{port}\""))
        .replace(&path, &format!("path = \"{}\"", audit.display()))
        .replace("[audit]\n", &format!("[audit]\n{audit_keys}\n"))
        + "\n"
        + extra
}

/// The real binary, serving a config file (stopped on drop).
pub struct Process {
    pub child: Child,
    pub url: String,
    /// Its stderr, copied by a thread of the test (so that a limit on the
    /// process's own file writes does not cut its log).
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Process {
    /// Runs `jobkey serve --config <config>` through `sh -c <prefix> …`
    /// (e.g. `trap '' XFSZ;` to have the shell ignore a signal that the
    /// binary then inherits), and waits for `/healthz`.
    pub async fn start(config: &Path, port: u16, shell_prefix: &str) -> Process {
        Self::start_logging_to(config, port, shell_prefix, None).await
    }

    /// The same, with its stderr in `log_file` (written by the process
    /// itself, under its own limits) instead of a pipe.
    pub async fn start_logging_to(
        config: &Path,
        port: u16,
        shell_prefix: &str,
        log_file: Option<&Path>,
    ) -> Process {
        let stderr = match log_file {
            Some(f) => Stdio::from(std::fs::File::create(f).unwrap()),
            None => Stdio::piped(),
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("{shell_prefix} exec \"$0\" serve --config \"$1\""))
            .arg(env!("CARGO_BIN_EXE_jobkey"))
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let copy = log.clone();
        let stderr = child.stderr.take();
        std::thread::spawn(move || {
            let Some(mut stderr) = stderr else {
                return;
            };
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut l) = copy.lock() {
                    l.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let url = format!("http://127.0.0.1:{port}");
        let mut process = Process { child, url, log };
        let c = reqwest::Client::new();
        for _ in 0..300 {
            if c.get(format!("{}/healthz", process.url))
                .send()
                .await
                .is_ok()
            {
                return process;
            }
            if process.child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("jobkey did not start: {}", process.log());
    }

    /// What it wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to end.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("jobkey's log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms for up to `secs` seconds.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut last = String::new();
    for _ in 0..secs * 10 {
        match check().await {
            Ok(()) => return,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within {secs} s: {last}");
}

/// POSTs a JSON `body` to `url` + `path` with `Authorization: Bearer
/// <bearer>`: status, `Retry-After`, and the JSON answer.
pub async fn post(
    url: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> (u16, Option<String>, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("authorization", format!("Bearer {bearer}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.unwrap();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The lines of an audit log, as JSON.
pub fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
