//! The job's side: `jobkey fetch` and `jobkey revoke`, run inside a CI job.
//!
//! `fetch` obtains the job's ID token (`ci`), exchanges it at the broker
//! (`broker`), registers every mask with the CI before it writes or prints
//! anything else (`masking`), then delivers the credentials without printing
//! them (`deliver`: files, `$GITHUB_ENV`, step outputs; or `exec`: a command
//! run with them in its environment and revoked when it exits). Without
//! `--exec` it leaves the revocation handle for `jobkey revoke` (`state`).
//!
//! Human messages go to stderr; stdout carries only the CI's commands.

pub mod broker;
pub mod ci;
pub mod deliver;
mod error;
pub mod exec;
pub mod masking;
pub mod state;

use std::io::Write;
use std::path::{Path, PathBuf};

pub use ci::Ci;
pub use error::ClientError;

use crate::secret::SecretString;

/// Looks an environment variable up.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What `jobkey fetch` was asked to do.
#[derive(Debug, Default)]
pub struct FetchOptions {
    pub url: String,
    pub environment: String,
    pub credentials: Vec<String>,
    pub ttl: Option<String>,
    pub ssh_public_key: Option<PathBuf>,
    pub audience: String,
    pub ci: Option<Ci>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub out: Option<PathBuf>,
    pub github_env: bool,
    pub github_output: bool,
    pub state: Option<PathBuf>,
    /// `--exec -- COMMAND…`.
    pub exec: Option<Vec<String>>,
}

/// What `jobkey revoke` was asked to do.
#[derive(Debug, Default)]
pub struct RevokeOptions {
    pub url: Option<String>,
    pub state: Option<PathBuf>,
    pub out: Option<PathBuf>,
}

/// Runs `jobkey fetch`; returns the exit code (the command's, with `--exec`).
pub async fn fetch(
    o: &FetchOptions,
    env: Env<'_>,
    stdout: &mut dyn Write,
) -> Result<u8, ClientError> {
    let base = broker::base_url(&o.url)?;
    if let Some(t) = &o.ttl {
        humantime::parse_duration(t)
            .map_err(|e| ClientError::Usage(format!("--ttl `{t}`: {e}; write e.g. 10m or 1h")))?;
    }
    if o.exec.is_some() && (o.github_env || o.github_output || o.out.is_some()) {
        return Err(ClientError::Usage(
            "--exec runs the command with the credentials and revokes them when it exits; it does not combine with --out, --github-env or --github-output".into(),
        ));
    }
    let github_env = file_var(o.github_env, "GITHUB_ENV", "--github-env", env)?;
    let github_output = file_var(o.github_output, "GITHUB_OUTPUT", "--github-output", env)?;
    let ssh_public_key = match &o.ssh_public_key {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| ClientError::Usage(format!("--ssh-public-key {}: {e}", p.display())))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };

    let ci = o.ci.unwrap_or_else(|| Ci::detect(env));
    let source = ci::token_source(ci, o.token_file.as_deref(), o.token_env.as_deref())?;
    let token = ci::obtain(&source, &o.audience, env).await?;

    let resp = broker::exchange(
        &base,
        &token,
        &broker::ExchangeRequest {
            environment: &o.environment,
            credentials: &o.credentials,
            ttl: o.ttl.as_deref(),
            ssh_public_key: ssh_public_key.as_deref(),
        },
    )
    .await?;

    // Everything the log must hide: the broker's hints, the same hints
    // computed here (an older broker may send fewer), the revocation handle
    // and the ID token.
    let masks = mask_list(&resp, &token);
    drop(token);
    if let Err(e) = masking::register(ci, &masks, stdout).await {
        revoke_quietly(&base, &resp).await;
        return Err(e);
    }
    drop(masks);
    let fields = match deliver::fields(&resp) {
        Ok(f) => f,
        Err(e) => {
            revoke_quietly(&base, &resp).await;
            return Err(e);
        }
    };
    if let Some(n) = masking::notice(ci) {
        eprintln!("{n}");
    }
    for w in warnings(&resp) {
        eprintln!("jobkey: warning: {w}");
    }
    for (name, c) in &resp.credentials {
        eprintln!(
            "jobkey: {}: {name} ({}, rule {}, {}s, until {}){}",
            resp.environment,
            c.kind,
            c.rule,
            c.ttl_seconds,
            c.expires_at,
            if c.wrapped {
                ", response-wrapped: unwrap it once"
            } else {
                ""
            }
        );
    }

    if let Some(command) = &o.exec {
        return exec_and_revoke(command, &fields, &base, &resp, env).await;
    }

    let files_wanted = o.out.is_some() || (github_env.is_none() && github_output.is_none());
    let out_dir = match (&o.out, files_wanted) {
        (Some(d), _) => Some(d.clone()),
        (None, true) => Some(default_out_dir(env, &resp.request_id)),
        (None, false) => None,
    };
    let mut kubeconfig = None;
    let delivered = (|| {
        if let Some(dir) = &out_dir {
            let w = deliver::write_files(dir, &fields)?;
            kubeconfig = deliver::kubeconfig_var(&w);
            eprintln!(
                "jobkey: wrote {} file(s) under {} (mode 0600)",
                w.files,
                dir.display()
            );
        }
        if let Some(path) = &github_env {
            let mut vars = deliver::env_vars(&fields, deliver::env_name)?;
            if let Some(k) = &kubeconfig {
                vars.push(("KUBECONFIG".into(), SecretString::new(k.clone())));
            }
            deliver::append_github_file(path, &vars)?;
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            eprintln!("jobkey: set for later steps: {}", names.join(", "));
        }
        if let Some(path) = &github_output {
            let vars = deliver::env_vars(&fields, deliver::output_name)?;
            deliver::append_github_file(path, &vars)?;
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            eprintln!("jobkey: step outputs: {}", names.join(", "));
        }
        Ok::<(), ClientError>(())
    })();
    if let Err(e) = delivered {
        revoke_quietly(&base, &resp).await;
        return Err(e);
    }

    if let Some(r) = &resp.revocation {
        match state::default_path(o.state.as_deref(), env, out_dir.as_deref()) {
            Some(p) => {
                state::save(
                    &p,
                    base.as_str(),
                    &resp.request_id,
                    &r.handle.0,
                    &r.expires_at,
                )?;
                eprintln!(
                    "jobkey: revoke these leases with `jobkey revoke --state {}`",
                    p.display()
                );
            }
            None => eprintln!(
                "jobkey: warning: no place for the revocation state; pass --state FILE to be able to revoke early"
            ),
        }
    } else {
        eprintln!(
            "jobkey: the broker issued no revocation handle; the credentials expire at their TTL"
        );
    }
    Ok(0)
}

/// Runs `jobkey revoke`.
pub async fn revoke(o: &RevokeOptions, env: Env<'_>) -> Result<u64, ClientError> {
    let path = state::default_path(o.state.as_deref(), env, o.out.as_deref()).ok_or_else(|| {
        ClientError::Usage(
            "no revocation state: pass --state FILE (as given to `jobkey fetch`) or --out DIR"
                .into(),
        )
    })?;
    let st = state::load(&path)?;
    let base = broker::base_url(o.url.as_deref().unwrap_or(&st.url))?;
    let r = broker::revoke(&base, &st.handle.0, &st.request_id).await?;
    let _ = std::fs::remove_file(&path);
    Ok(r.revoked)
}

fn file_var(
    wanted: bool,
    var: &str,
    flag: &str,
    env: Env<'_>,
) -> Result<Option<PathBuf>, ClientError> {
    if !wanted {
        return Ok(None);
    }
    match env(var).filter(|v| !v.is_empty()) {
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => Err(ClientError::Usage(format!(
            "{flag} writes to ${var}, which is not set: it only works in a GitHub Actions step"
        ))),
    }
}

/// The masks to register: the broker's list ∪ hints computed here ∪ the
/// revocation handle ∪ the ID token, longest first.
fn mask_list(resp: &broker::ExchangeResponse, token: &SecretString) -> Vec<SecretString> {
    let mut labelled: Vec<(String, &SecretString)> = Vec::new();
    for (cred, c) in &resp.credentials {
        for (f, v) in &c.values {
            labelled.push((format!("{cred}.{f}"), &v.0));
        }
    }
    if let Some(r) = &resp.revocation {
        labelled.push(("revocation.handle".into(), &r.handle.0));
    }
    labelled.push(("id_token".into(), token));
    let local = crate::mask::hints(labelled.iter().map(|(l, v)| (l.as_str(), *v)));
    let mut set = std::collections::BTreeSet::new();
    for m in resp.mask.iter().map(|s| &s.0).chain(local.mask.iter()) {
        if !m.expose_secret().trim().is_empty() {
            set.insert(m.expose_secret().to_owned());
        }
    }
    let mut v: Vec<String> = set.into_iter().collect();
    v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    v.into_iter().map(SecretString::new).collect()
}

/// The broker's mask warnings, or the ones computed here if it sent none.
fn warnings(resp: &broker::ExchangeResponse) -> Vec<String> {
    if !resp.mask_warnings.is_empty() {
        return resp.mask_warnings.clone();
    }
    let labelled: Vec<(String, &SecretString)> = resp
        .credentials
        .iter()
        .flat_map(|(cred, c)| {
            c.values
                .iter()
                .map(move |(f, v)| (format!("{cred}.{f}"), &v.0))
        })
        .collect();
    crate::mask::hints(labelled.iter().map(|(l, v)| (l.as_str(), *v))).warnings
}

fn default_out_dir(env: Env<'_>, request_id: &str) -> PathBuf {
    match env("RUNNER_TEMP").filter(|t| !t.is_empty()) {
        Some(t) => Path::new(&t).join("jobkey/credentials"),
        None => std::env::temp_dir().join(format!("jobkey-{request_id}")),
    }
}

async fn exec_and_revoke(
    command: &[String],
    fields: &[deliver::Field<'_>],
    base: &url::Url,
    resp: &broker::ExchangeResponse,
    env: Env<'_>,
) -> Result<u8, ClientError> {
    let tmp_root = env("RUNNER_TEMP")
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tmp_root.join(format!("jobkey-exec-{}", deliver::random_hex::<8>()?));
    let prepared = (|| {
        let w = deliver::write_files(&dir, fields)?;
        let mut vars = deliver::env_vars(fields, deliver::env_name)?;
        if let Some(k) = deliver::kubeconfig_var(&w) {
            vars.push(("KUBECONFIG".into(), SecretString::new(k)));
        }
        vars.push((
            "JOBKEY_CREDENTIALS_DIR".into(),
            SecretString::new(dir.display().to_string()),
        ));
        Ok::<_, ClientError>(vars)
    })();
    let result = match prepared {
        Ok(vars) => exec::run(command, &vars).await,
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_dir_all(&dir);
    if resp.revocation.is_some() {
        match revoke_now(base, resp).await {
            Ok(n) => eprintln!(
                "jobkey: revoked {n} lease(s) of exchange {}",
                resp.request_id
            ),
            Err(e) => eprintln!(
                "jobkey: warning: revoking exchange {} failed, its leases expire at their TTL: {e}",
                resp.request_id
            ),
        }
    } else {
        eprintln!(
            "jobkey: the broker issued no revocation handle; the credentials expire at their TTL"
        );
    }
    result
}

async fn revoke_now(base: &url::Url, resp: &broker::ExchangeResponse) -> Result<u64, ClientError> {
    let Some(r) = &resp.revocation else {
        return Ok(0);
    };
    broker::revoke(base, &r.handle.0, &resp.request_id)
        .await
        .map(|r| r.revoked)
}

async fn revoke_quietly(base: &url::Url, resp: &broker::ExchangeResponse) {
    if resp.revocation.is_some() {
        match revoke_now(base, resp).await {
            Ok(n) => eprintln!("jobkey: nothing was delivered; revoked {n} lease(s)"),
            Err(e) => eprintln!("jobkey: warning: nothing was delivered, and revoking failed: {e}"),
        }
    }
}
