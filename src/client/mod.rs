//! The job's side: `jobkey fetch` and `jobkey revoke`, run inside a CI job.
//!
//! `fetch` obtains the job's ID token (`ci`), exchanges it at the broker
//! (`broker`, retrying a short outage as `retry` allows), registers every
//! mask with the CI before it writes or prints anything else (`masking`),
//! then delivers the credentials without printing them (`deliver`: files
//! through directory handles (`private_dir`), `$GITHUB_ENV`, step outputs;
//! or `exec`: a command run with them in its environment, without the
//! variables that mint ID tokens, revoked when it exits). Without `--exec`
//! it adds the exchange, with the files it wrote, to the job's revocation
//! state for `jobkey revoke` (`state`), which revokes every exchange of the
//! job and removes their files.
//!
//! Human messages go to stderr; stdout carries only the CI's commands.

mod broker;
mod ci;
mod deliver;
mod error;
mod exec;
mod masking;
mod private_dir;
mod retry;
mod state;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) use ci::Ci;
#[cfg(test)]
pub(crate) use ci::TOKEN_ENV;
pub(crate) use error::ClientError;

// The `$GITHUB_ENV` writer, for the fuzz target (`src/fuzz_api.rs`).
#[cfg(fuzzing)]
pub(crate) use deliver::{append_github_file, github_file_entry};

use broker::Broker;

use crate::secret::SecretString;

/// Looks an environment variable up.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// What `jobkey fetch` was asked to do.
#[derive(Debug, Default)]
pub(crate) struct FetchOptions {
    pub url: String,
    /// The CAs trusted for the broker's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
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
    /// `--exec-keep-token-env`: leave the variables that mint ID tokens in
    /// the command's environment.
    pub exec_keep_token_env: bool,
    /// `--retry-for`: how long to retry a broker or Vault outage (zero:
    /// never).
    pub retry_for: Duration,
}

/// What `jobkey revoke` was asked to do.
#[derive(Debug, Default)]
pub(crate) struct RevokeOptions {
    pub url: Option<String>,
    /// The CAs trusted for the broker's certificate (default: the system's).
    pub ca_file: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub out: Option<PathBuf>,
    /// `--retry-for`, as for `fetch`.
    pub retry_for: Duration,
}

/// What `jobkey revoke` did, over every exchange of the state file.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Revoked {
    /// Exchanges revoked.
    pub exchanges: usize,
    /// Exchanges that issued nothing revocable (no handle): only their
    /// files are removed.
    pub nothing_to_revoke: usize,
    /// Leases the broker revoked for them.
    pub leases: u64,
    /// Credential files removed.
    pub files: usize,
}

/// What `jobkey fetch` says when the broker issued no revocation handle.
const NOTHING_TO_REVOKE: &str = "jobkey: nothing to revoke: the exchange issued nothing revocable (no revocation handle); the credentials expire at their TTL";

/// Runs `jobkey fetch`; returns the exit code (the command's, with `--exec`).
///
/// The steps, in order: check the options (`Plan::check`), obtain the
/// job's token, exchange it, register the masks, then either run the
/// command (and revoke) or deliver the credentials and keep the revocation
/// state. Once the broker has answered, a failing step revokes the exchange
/// before its error is returned (`Issued::or_revoke`).
pub(crate) async fn fetch(
    o: &FetchOptions,
    env: Env<'_>,
    stdout: &mut dyn Write,
) -> Result<u8, ClientError> {
    let plan = Plan::check(o, env)?;
    let token = ci::obtain(&plan.token_source, &o.audience, env).await?;
    let resp = plan.broker.exchange(&token, &plan.request()).await?;
    let issued = Issued {
        broker: &plan.broker,
        resp: &resp,
    };
    issued
        .or_revoke(register_masks(plan.ci, &resp, token, stdout).await)
        .await?;
    let fields = issued.or_revoke(deliver::fields(&resp)).await?;
    announce(plan.ci, &resp);
    match &plan.delivery {
        Delivery::Exec { command, strip } => {
            exec_and_revoke(command, strip, &fields, &issued, env).await
        }
        Delivery::Outside(targets) => {
            let delivered = issued
                .or_revoke(deliver_outside(targets, &fields, env, &resp.request_id))
                .await?;
            keep_revocation_state(o.state.as_deref(), env, delivered.as_ref(), &issued).await?;
            Ok(0)
        }
    }
}

/// Runs `jobkey revoke`: revokes every exchange in the state file (each
/// reported on stderr), removes the files each one wrote and the
/// directories `fetch` made, then the state file. Exchanges that could not
/// be revoked stay in the state file for another try, and the result is
/// [`ClientError::Revoke`]; one the broker no longer knows (revoked or
/// expired) is reported and dropped.
pub(crate) async fn revoke(o: &RevokeOptions, env: Env<'_>) -> Result<Revoked, ClientError> {
    let path = state::default_path(o.state.as_deref(), env, o.out.as_deref()).ok_or_else(|| {
        ClientError::Usage(
            "no revocation state: pass --state FILE (as given to `jobkey fetch`) or --out DIR"
                .into(),
        )
    })?;
    let loaded = state::load(&path)?;
    let exchanges = &loaded.state.exchanges;
    let (mut done, keep) = revoke_each(o, exchanges).await;
    let failed = exchanges.len() - done.exchanges - done.nothing_to_revoke;
    done.files = remove_files_of(exchanges);
    let made = loaded.state.created_dirs();
    let total = exchanges.len();
    let all_gone = keep.is_empty();
    loaded.finish(&keep)?;
    if all_gone {
        deliver::remove_created_dirs(made.iter().map(PathBuf::as_path));
    }
    if failed > 0 {
        return Err(ClientError::Revoke { failed, total });
    }
    Ok(done)
}

/// `jobkey revoke`, step 1: revokes each exchange at its broker (or
/// `--url`), one stderr line each. Returns what was revoked and the indexes
/// of the exchanges to keep for another try: those that failed, except
/// the ones the broker no longer knows (revoked or expired already).
async fn revoke_each(
    o: &RevokeOptions,
    exchanges: &[state::SavedExchange],
) -> (Revoked, Vec<usize>) {
    let mut done = Revoked::default();
    let mut keep = Vec::new();
    for (i, ex) in exchanges.iter().enumerate() {
        let Some(handle) = &ex.handle else {
            eprintln!(
                "jobkey: exchange {}: nothing to revoke (it issued nothing revocable)",
                ex.request_id
            );
            done.nothing_to_revoke += 1;
            continue;
        };
        let revoked = async {
            Broker::new(o.url.as_deref().unwrap_or(&ex.url), o.ca_file.as_deref())?
                .retrying_for(o.retry_for)
                .revoke(&handle.0, &ex.request_id)
                .await
        }
        .await;
        match revoked {
            Ok(r) => {
                eprintln!(
                    "jobkey: exchange {}: revoked {} lease(s)",
                    ex.request_id, r.revoked
                );
                done.exchanges += 1;
                done.leases += r.revoked;
            }
            Err(e) => {
                eprintln!("jobkey: exchange {}: not revoked: {e}", ex.request_id);
                let unknown = matches!(&e, ClientError::Refused { status: 404, code, .. } if code == "unknown_exchange");
                if !unknown {
                    keep.push(i);
                }
            }
        }
    }
    (done, keep)
}

/// `jobkey revoke`, step 2: removes the files each exchange wrote (and the
/// credential directories `fetch` made for them); returns how many.
fn remove_files_of(exchanges: &[state::SavedExchange]) -> usize {
    let mut removed = 0;
    for ex in exchanges {
        let Some(files) = &ex.files else { continue };
        match files.remove_files() {
            Ok(n) => {
                eprintln!(
                    "jobkey: exchange {}: removed {n} file(s) under {}",
                    ex.request_id,
                    files.dir.display()
                );
                removed += n;
            }
            Err(e) => eprintln!(
                "jobkey: warning: exchange {}: its files are not removed: {e}",
                ex.request_id
            ),
        }
    }
    removed
}

/// `jobkey fetch`'s options, checked before any token is obtained.
struct Plan<'o> {
    options: &'o FetchOptions,
    broker: Broker,
    ci: Ci,
    token_source: ci::TokenSource,
    ssh_public_key: Option<String>,
    delivery: Delivery<'o>,
}

/// Where the credentials go.
enum Delivery<'o> {
    /// Into the environment of this command, revoked when it exits; the
    /// command runs without the variables in `strip`.
    Exec {
        command: &'o [String],
        strip: Vec<String>,
    },
    /// Into files and GitHub's variable files, for later steps.
    Outside(Targets<'o>),
}

struct Targets<'o> {
    out: Option<&'o Path>,
    github_env: Option<PathBuf>,
    github_output: Option<PathBuf>,
}

impl<'o> Plan<'o> {
    /// Step 1: every usage error comes out here, before the job's token is
    /// asked for (the URL, `--ttl`, where the token comes from, the delivery
    /// flags, the SSH key).
    fn check(o: &'o FetchOptions, env: Env<'_>) -> Result<Self, ClientError> {
        let broker = Broker::new(&o.url, o.ca_file.as_deref())?.retrying_for(o.retry_for);
        let ci = o.ci.unwrap_or_else(|| Ci::detect(env));
        let token_source = ci::token_source(ci, o.token_file.as_deref(), o.token_env.as_deref())?;
        if let Some(t) = &o.ttl {
            humantime::parse_duration(t).map_err(|e| {
                ClientError::Usage(format!("--ttl `{t}`: {e}; write e.g. 10m or 1h"))
            })?;
        }
        let delivery = match &o.exec {
            Some(_) if o.github_env || o.github_output || o.out.is_some() => {
                return Err(ClientError::Usage(
                    "--exec runs the command with the credentials and revokes them when it exits; it does not combine with --out, --github-env or --github-output".into(),
                ));
            }
            Some(command) => Delivery::Exec {
                command,
                strip: if o.exec_keep_token_env {
                    Vec::new()
                } else {
                    ci::token_env_to_strip(&token_source)
                },
            },
            None => Delivery::Outside(Targets {
                out: o.out.as_deref(),
                github_env: file_var(o.github_env, "GITHUB_ENV", "--github-env", env)?,
                github_output: file_var(o.github_output, "GITHUB_OUTPUT", "--github-output", env)?,
            }),
        };
        let ssh_public_key = match &o.ssh_public_key {
            Some(p) => Some(
                crate::files::read_to_string(p, 16 * crate::files::KIB)
                    .map_err(|e| ClientError::Usage(format!("--ssh-public-key {e}")))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Plan {
            options: o,
            broker,
            ci,
            token_source,
            ssh_public_key,
            delivery,
        })
    }

    fn request(&self) -> broker::ExchangeRequest<'_> {
        broker::ExchangeRequest {
            environment: &self.options.environment,
            credentials: &self.options.credentials,
            ttl: self.options.ttl.as_deref(),
            ssh_public_key: self.ssh_public_key.as_deref(),
        }
    }
}

/// An exchange the broker answered, which a failing step revokes.
struct Issued<'a> {
    broker: &'a Broker,
    resp: &'a broker::ExchangeResponse,
}

impl Issued<'_> {
    /// Passes `r` on; when it is an error, revokes the exchange first
    /// (nothing was delivered).
    async fn or_revoke<T>(&self, r: Result<T, ClientError>) -> Result<T, ClientError> {
        if r.is_err() {
            self.revoke_quietly().await;
        }
        r
    }

    async fn revoke_now(&self) -> Result<u64, ClientError> {
        let Some(r) = &self.resp.revocation else {
            return Ok(0);
        };
        self.broker
            .revoke(&r.handle.0, &self.resp.request_id)
            .await
            .map(|r| r.revoked)
    }

    async fn revoke_quietly(&self) {
        if self.resp.revocation.is_none() {
            eprintln!("jobkey: nothing was delivered, and there is nothing to revoke");
            return;
        }
        match self.revoke_now().await {
            Ok(n) => eprintln!("jobkey: nothing was delivered; revoked {n} lease(s)"),
            Err(e) => eprintln!("jobkey: warning: nothing was delivered, and revoking failed: {e}"),
        }
    }
}

/// Step 3: registers every mask with the CI before anything else is written
/// or printed. The token is dropped as soon as its masks are computed.
async fn register_masks(
    ci: Ci,
    resp: &broker::ExchangeResponse,
    token: SecretString,
    stdout: &mut dyn Write,
) -> Result<(), ClientError> {
    // Everything the log must hide: the broker's hints, the same hints
    // computed here (an older broker may send fewer), the revocation handle
    // and the ID token.
    let masks = mask_list(resp, &token);
    drop(token);
    masking::register(ci, &masks, stdout).await
}

/// Tells stderr what was issued (names, kinds, rules, lifetimes; never a
/// value), with the CI's masking notice and the mask warnings.
fn announce(ci: Ci, resp: &broker::ExchangeResponse) {
    if let Some(n) = masking::notice(ci) {
        eprintln!("{n}");
    }
    for w in warnings(resp) {
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
}

/// Step 4 without `--exec`: files (under `--out`, or a default directory
/// when no GitHub file was asked for), `$GITHUB_ENV`, step outputs. Returns
/// what was written to disk. When a later part fails, the files written
/// are removed again before the error is returned.
fn deliver_outside(
    t: &Targets<'_>,
    fields: &[deliver::Field<'_>],
    env: Env<'_>,
    request_id: &str,
) -> Result<Option<deliver::Delivered>, ClientError> {
    let files_wanted = t.out.is_some() || (t.github_env.is_none() && t.github_output.is_none());
    let out_dir = match (t.out, files_wanted) {
        (Some(d), _) => Some(d.to_owned()),
        (None, true) => Some(default_out_dir(env, request_id)),
        (None, false) => None,
    };
    let mut kubeconfig = None;
    let mut delivered = None;
    if let Some(dir) = &out_dir {
        let w = deliver::write_files(dir, fields)?;
        kubeconfig = deliver::kubeconfig_var(&w);
        eprintln!(
            "jobkey: wrote {} file(s) under {} (mode 0600)",
            w.files,
            dir.display()
        );
        delivered = Some(w.delivered);
    }
    let variables = (|| {
        if let Some(path) = &t.github_env {
            let mut vars = deliver::env_vars(fields, deliver::env_name)?;
            if let Some(k) = &kubeconfig {
                vars.push(("KUBECONFIG".into(), SecretString::new(k.clone())));
            }
            deliver::append_github_file(path, &vars)?;
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            eprintln!("jobkey: set for later steps: {}", names.join(", "));
        }
        if let Some(path) = &t.github_output {
            let vars = deliver::env_vars(fields, deliver::output_name)?;
            deliver::append_github_file(path, &vars)?;
            let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
            eprintln!("jobkey: step outputs: {}", names.join(", "));
        }
        Ok(())
    })();
    if let Err(e) = variables {
        if let Some(d) = &delivered {
            remove_delivered(d);
        }
        return Err(e);
    }
    Ok(delivered)
}

/// Removes what `fetch` wrote (files, then the directories it made).
fn remove_delivered(d: &deliver::Delivered) {
    if let Err(e) = d.remove_files() {
        eprintln!("jobkey: warning: the credential files are not removed: {e}");
    }
    deliver::remove_created_dirs(d.created.iter().map(PathBuf::as_path));
}

/// Step 5 without `--exec`: adds the exchange (its handle and the files it
/// wrote) to the job's revocation state for `jobkey revoke`, or says why it
/// cannot. When the state cannot be written, the files are removed and the
/// exchange revoked: nothing is left that the job could not clean up.
async fn keep_revocation_state(
    state: Option<&Path>,
    env: Env<'_>,
    delivered: Option<&deliver::Delivered>,
    issued: &Issued<'_>,
) -> Result<(), ClientError> {
    let resp = issued.resp;
    let handle = resp.revocation.as_ref().map(|r| &r.handle.0);
    if handle.is_none() {
        eprintln!("{NOTHING_TO_REVOKE}");
        // Nothing to revoke, but files to remove: the state keeps them
        // for `jobkey revoke`.
        if delivered.is_none() {
            return Ok(());
        }
    }
    let Some(p) = state::default_path(state, env, delivered.map(|d| d.dir.as_path())) else {
        eprintln!(
            "jobkey: warning: no place for the revocation state; pass --state FILE to be able to revoke early"
        );
        return Ok(());
    };
    let saved = state::append(
        &p,
        state::NewExchange {
            url: issued.broker.url().as_str(),
            request_id: &resp.request_id,
            handle,
            files: delivered,
        },
    );
    match saved {
        Ok(n) => {
            eprintln!(
                "jobkey: {} with `jobkey revoke --state {}`{}",
                if handle.is_some() {
                    "revoke these leases"
                } else {
                    "remove the files"
                },
                p.display(),
                if n > 1 {
                    format!(" (it holds the {n} exchanges of this job, and revokes them all)")
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        Err(e) => {
            if let Some(d) = delivered {
                remove_delivered(d);
            }
            if handle.is_none() {
                eprintln!("jobkey: the revocation state cannot be kept, so the files were removed");
                return Err(e);
            }
            match issued.revoke_now().await {
                Ok(n) => eprintln!(
                    "jobkey: the revocation state cannot be kept, so the files were removed and the exchange revoked ({n} lease(s))"
                ),
                Err(r) => eprintln!(
                    "jobkey: warning: the revocation state cannot be kept, the files were removed, and revoking failed: {r}"
                ),
            }
            Err(e)
        }
    }
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

/// Step 4 with `--exec`: writes the files to a private temporary
/// directory, runs the command with the credentials in its environment
/// (without the variables in `strip`), removes the directory and any
/// directory it made above it, and revokes the exchange, whatever the
/// command did.
async fn exec_and_revoke(
    command: &[String],
    strip: &[String],
    fields: &[deliver::Field<'_>],
    issued: &Issued<'_>,
    env: Env<'_>,
) -> Result<u8, ClientError> {
    let resp = issued.resp;
    let tmp_root = env("RUNNER_TEMP")
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tmp_root.join(format!("jobkey-exec-{}", deliver::random_hex::<8>()?));
    let mut delivered = None;
    let prepared = (|| {
        let w = deliver::write_files(&dir, fields)?;
        let kubeconfig = deliver::kubeconfig_var(&w);
        let credentials_dir = w.delivered.dir.display().to_string();
        delivered = Some(w.delivered);
        let mut vars = deliver::env_vars(fields, deliver::env_name)?;
        if let Some(k) = kubeconfig {
            vars.push(("KUBECONFIG".into(), SecretString::new(k)));
        }
        vars.push((
            "JOBKEY_CREDENTIALS_DIR".into(),
            SecretString::new(credentials_dir),
        ));
        Ok::<_, ClientError>(vars)
    })();
    let result = match prepared {
        Ok(vars) => {
            let held: Vec<&str> = strip
                .iter()
                .filter(|n| env(n).is_some())
                .map(String::as_str)
                .collect();
            if !held.is_empty() {
                eprintln!(
                    "jobkey: the command runs without {} (they obtain new ID tokens; --exec-keep-token-env keeps them)",
                    held.join(", ")
                );
            }
            exec::run(command, &vars, strip).await
        }
        Err(e) => Err(e),
    };
    if let Some(d) = &delivered {
        // The whole directory: the command may have added files to it. It
        // was made for this run (a fresh random name); a symlink put in its
        // place is removed, not followed.
        let _ = std::fs::remove_dir_all(&d.dir);
        deliver::remove_created_dirs(d.created.iter().map(PathBuf::as_path));
    }
    if resp.revocation.is_some() {
        match issued.revoke_now().await {
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
        eprintln!("{NOTHING_TO_REVOKE}");
    }
    result
}
