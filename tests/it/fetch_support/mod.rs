//! Stand-ins for the CI side of `jobkey fetch` tests: GitHub's token
//! request endpoint (a tiny axum server on loopback), a stub
//! `buildkite-agent` on PATH that records its argv and stdin, and a runner
//! for the real `jobkey` binary with a clean environment.

mod github_file;

pub(crate) use github_file::parse_github_file;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::{Stack, overrides};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use jobkey::{DevIssuer, Shape};
use serde_json::{Map, Value, json};

/// The bearer the stand-in expects (ACTIONS_ID_TOKEN_REQUEST_TOKEN).
pub const REQUEST_TOKEN: &str = "gh-request-token-7f3a9c";

/// GitHub's token endpoint: `GET /token?api-version=2.0&audience=AUD` with
/// `Authorization: bearer REQUEST_TOKEN` answers `{"value": <token>}`, a
/// token minted by `issuer` for AUD with `overrides` applied.
pub async fn github_token_endpoint(
    issuer: Arc<DevIssuer>,
    overrides: Map<String, Value>,
) -> String {
    #[derive(Clone)]
    struct St(Arc<DevIssuer>, Map<String, Value>);
    async fn token(
        State(St(issuer, overrides)): State<St>,
        headers: HeaderMap,
        Query(q): Query<BTreeMap<String, String>>,
    ) -> Result<axum::Json<Value>, StatusCode> {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("bearer {REQUEST_TOKEN}")) {
            return Err(StatusCode::UNAUTHORIZED);
        }
        if q.get("api-version").map(String::as_str) != Some("2.0") {
            return Err(StatusCode::BAD_REQUEST);
        }
        let aud = q.get("audience").ok_or(StatusCode::BAD_REQUEST)?;
        Ok(axum::Json(
            json!({ "value": issuer.mint(Shape::Github, aud, &overrides) }),
        ))
    }
    let app = axum::Router::new()
        .route("/token", get(token))
        .with_state(St(issuer, overrides));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token?api-version=2.0", l.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    url
}

/// A stub `buildkite-agent` in `dir/bin`: every call appends its argv to
/// `dir/argv.log` and saves its stdin to `dir/stdin-<n>`; `oidc
/// request-token` prints the contents of `dir/token`.
pub fn buildkite_stub(dir: &Path, token: &str) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    let script = format!(
        r#"#!/bin/sh
d='{d}'
echo "$*" >> "$d/argv.log"
n=$(wc -l < "$d/argv.log" | tr -d ' ')
if [ "$1" = oidc ] && [ "$2" = request-token ]; then
  cat "$d/token"
  exit 0
fi
if [ "$1" = redactor ] && [ "$2" = add ]; then
  cat > "$d/stdin-$n"
  exit 0
fi
echo "stub: unknown command $*" >&2
exit 2
"#,
        d = dir.display()
    );
    let path = bin.join("buildkite-agent");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// The environment of a GitHub Actions step with `id-token: write`, whose
/// token endpoint mints GitHub-shaped tokens with `claims` overrides, with
/// empty `$GITHUB_ENV` and `$GITHUB_OUTPUT` files and `$RUNNER_TEMP` in `tmp`.
pub async fn github_env(stack: &Stack, tmp: &Path, claims: Value) -> Vec<(&'static str, String)> {
    let url = github_token_endpoint(stack.github.clone(), overrides(claims)).await;
    std::fs::write(tmp.join("github_env"), "").unwrap();
    std::fs::write(tmp.join("github_output"), "").unwrap();
    std::fs::create_dir_all(tmp.join("runner_temp")).unwrap();
    vec![
        ("GITHUB_ACTIONS", "true".into()),
        ("ACTIONS_ID_TOKEN_REQUEST_URL", url),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN.into()),
        ("RUNNER_TEMP", tmp.join("runner_temp").display().to_string()),
        ("GITHUB_ENV", tmp.join("github_env").display().to_string()),
        (
            "GITHUB_OUTPUT",
            tmp.join("github_output").display().to_string(),
        ),
        ("JOBKEY_URL", stack.url.clone()),
    ]
}

/// What a `jobkey` run printed.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// The real binary with only `env` (plus a PATH) in its environment.
fn command(args: &[&str], env: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jobkey"));
    cmd.args(args).env_clear();
    let mut path = std::env::var("PATH").unwrap_or_default();
    for (k, v) in env {
        if *k == "PATH" {
            path = format!("{v}:{path}");
        } else {
            cmd.env(k, v);
        }
    }
    cmd.env("PATH", path);
    cmd
}

/// Runs the real binary with only `env` (plus a PATH) in its environment.
pub async fn jobkey(args: &[&str], env: &[(&str, String)]) -> Run {
    let out = command(args, env).output().await.unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `jobkey fetch -e ENVIRONMENT ARGS…`, as [`jobkey`] runs it.
pub async fn fetch(environment: &str, args: &[&str], env: &[(&str, String)]) -> Run {
    let mut all = vec!["fetch", "-e", environment];
    all.extend_from_slice(args);
    jobkey(&all, env).await
}

/// A run of the real binary whose stderr is read while it runs.
pub struct Running {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    seen: String,
}

/// Starts the real binary as [`jobkey`] does, stdout discarded.
pub fn spawn_jobkey(args: &[&str], env: &[(&str, String)]) -> Running {
    use tokio::io::AsyncBufReadExt;
    let mut child = command(args, env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    Running {
        child,
        stderr,
        seen: String::new(),
    }
}

impl Running {
    /// Reads stderr until a line contains `needle` (panics with what was
    /// seen if the process ends first or `timeout` passes).
    pub async fn wait_for_line(&mut self, needle: &str, timeout: std::time::Duration) {
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = self.stderr.next_line().await.unwrap() {
                self.seen.push_str(&line);
                self.seen.push('\n');
                if line.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no stderr line with `{needle}`: {}",
            self.seen
        );
    }

    /// Waits for the exit; the exit code and all of stderr.
    pub async fn finish(mut self) -> (Option<i32>, String) {
        while let Some(line) = self.stderr.next_line().await.unwrap() {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        let status = self.child.wait().await.unwrap();
        (status.code(), self.seen)
    }
}

/// Asserts that no secret appears in the run's output outside
/// `::add-mask::` lines of stdout.
pub fn assert_no_secret_outside_masks(run: &Run, secrets: &[&str]) {
    let outside: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .chain(run.stderr.lines())
        .collect();
    for s in secrets {
        for line in &outside {
            assert!(!line.contains(s), "a secret leaked on this line: {line}");
        }
    }
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
