//! `jobkey fetch` and `jobkey revoke`: argument parsing and glue into
//! `crate::client`. Exit codes: the `--exec` command's own; otherwise 0, or
//! 1 with a message on stderr (never a secret).

use std::path::PathBuf;
use std::process::ExitCode;

use crate::client::{self, Ci, FetchOptions, RevokeOptions};

/// Run inside a CI job: get credentials from the broker.
///
/// Obtains the job's OIDC ID token (GitHub Actions, GitLab CI, Buildkite,
/// or --token-file / --token-env), exchanges it, registers every mask with
/// the CI before printing anything else, and delivers the credentials
/// without printing them: files (the default), --exec -- COMMAND…, or on
/// GitHub --github-env / --github-output.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The broker's URL (https, or http to loopback).
    #[arg(long, env = "JOBKEY_URL")]
    pub url: String,
    /// The environment (policy file) to ask.
    #[arg(long, short)]
    pub environment: String,
    /// A credential to ask for (repeatable); default: all the policy grants.
    #[arg(long = "credential", short = 'c', value_name = "NAME")]
    pub credentials: Vec<String>,
    /// A shorter lifetime than the policy's (e.g. 10m).
    #[arg(long)]
    pub ttl: Option<String>,
    /// An SSH public key to have signed (SSH certificate credentials).
    #[arg(long, value_name = "FILE")]
    pub ssh_public_key: Option<PathBuf>,
    /// The audience to request the ID token for.
    #[arg(long, env = "JOBKEY_AUDIENCE", default_value = "jobkey")]
    pub audience: String,
    /// The CI, when detection from its variables is not wanted.
    #[arg(long, value_enum)]
    pub ci: Option<Ci>,
    /// Read the ID token from this file.
    #[arg(long, value_name = "FILE", conflicts_with = "token_env")]
    pub token_file: Option<PathBuf>,
    /// Read the ID token from this variable (GitLab default: JOBKEY_ID_TOKEN).
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
    /// Write the credentials as files (0600) under DIR (created 0700).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// GitHub: set JOBKEY_<CREDENTIAL>_<FIELD> for later steps ($GITHUB_ENV).
    #[arg(long)]
    pub github_env: bool,
    /// GitHub: set step outputs <credential>_<field> ($GITHUB_OUTPUT).
    #[arg(long)]
    pub github_output: bool,
    /// Where to keep the revocation handle for `jobkey revoke`.
    #[arg(long, value_name = "FILE", env = "JOBKEY_STATE")]
    pub state: Option<PathBuf>,
    /// Run the command after `--` with the credentials in its environment,
    /// then revoke them and exit with its exit code.
    #[arg(long, requires = "command")]
    pub exec: bool,
    /// The command for --exec.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Revoke the leases of an earlier `jobkey fetch` in this job.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The broker's URL (default: the one `jobkey fetch` used).
    #[arg(long, env = "JOBKEY_URL")]
    pub url: Option<String>,
    /// The state file `jobkey fetch` wrote.
    #[arg(long, value_name = "FILE", env = "JOBKEY_STATE")]
    pub state: Option<PathBuf>,
    /// The --out DIR given to `jobkey fetch` (its state is kept there).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Runs `jobkey fetch`.
pub fn fetch(a: FetchArgs) -> ExitCode {
    if !a.exec && !a.command.is_empty() {
        eprintln!("error: a command after `--` needs --exec");
        return ExitCode::from(2);
    }
    let o = FetchOptions {
        url: a.url,
        environment: a.environment,
        credentials: a.credentials,
        ttl: a.ttl,
        ssh_public_key: a.ssh_public_key,
        audience: a.audience,
        ci: a.ci,
        token_file: a.token_file,
        token_env: a.token_env,
        out: a.out,
        github_env: a.github_env,
        github_output: a.github_output,
        state: a.state,
        exec: a.exec.then_some(a.command),
    };
    run(async {
        let mut stdout = std::io::stdout();
        client::fetch(&o, &client::process_env, &mut stdout).await
    })
    .map(ExitCode::from)
    .unwrap_or(ExitCode::FAILURE)
}

/// Runs `jobkey revoke`.
pub fn revoke(a: RevokeArgs) -> ExitCode {
    let o = RevokeOptions {
        url: a.url,
        state: a.state,
        out: a.out,
    };
    run(async { client::revoke(&o, &client::process_env).await })
        .map(|n| {
            eprintln!("jobkey: revoked {n} lease(s)");
            ExitCode::SUCCESS
        })
        .unwrap_or(ExitCode::FAILURE)
}

fn run<T>(f: impl std::future::Future<Output = Result<T, client::ClientError>>) -> Option<T> {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return None;
        }
    };
    match rt.block_on(f) {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}
