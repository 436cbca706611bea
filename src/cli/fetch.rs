//! `jobkey fetch` and `jobkey revoke`: argument parsing and glue into
//! `crate::client`. Exit codes: the `--exec` command's own; otherwise 0, or
//! 1 with a message on stderr (never a secret).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::client::{self, Ci, FetchOptions, RevokeOptions};

/// Run inside a CI job: get credentials from the broker.
///
/// Obtains the job's OIDC ID token (GitHub Actions, GitLab CI, Buildkite,
/// or --token-file / --token-env), exchanges it, registers every mask with
/// the CI before printing anything else, and delivers the credentials
/// without printing them: files (the default), --exec -- COMMAND…, or on
/// GitHub --github-env / --github-output.
///
/// Files go into a directory of mode 0700 that belongs to the user jobkey
/// runs as (an existing one that is a symlink, another user's, or open to
/// others is refused), each file 0600.
///
/// Without --exec, the exchange is added to the job's revocation state file
/// (--state): one entry per `jobkey fetch` of the job, each with the broker
/// URL, the request id, the revocation handle (a secret: the file is 0600)
/// and what was written to disk (the credentials directory, its files, and
/// the directories jobkey created). `jobkey revoke` revokes every exchange
/// in it and removes those files.
///
/// When the broker or Vault is briefly unavailable (HTTP 503 or 429, or no
/// connection), the exchange is retried for --retry-for; a denial is never
/// retried.
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// The broker's URL (https, or http to loopback).
    #[arg(long, env = "JOBKEY_URL")]
    pub url: String,
    /// Trust only the CAs in this PEM file for the broker's certificate
    /// (a private CA); default: the system's CAs.
    #[arg(long, value_name = "FILE", env = "JOBKEY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
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
    /// The revocation state file for `jobkey revoke`, which this exchange
    /// is added to (default: $RUNNER_TEMP/jobkey/revocation.json on GitHub,
    /// else DIR/.jobkey-revocation.json in the credentials directory).
    #[arg(long, value_name = "FILE", env = "JOBKEY_STATE")]
    pub state: Option<PathBuf>,
    /// Run the command after `--` with the credentials in its environment,
    /// then remove their files, revoke them and exit with its exit code.
    /// The command runs without the variables that obtain new ID tokens
    /// (ACTIONS_ID_TOKEN_REQUEST_TOKEN and ACTIONS_ID_TOKEN_REQUEST_URL,
    /// the GitLab id_tokens variable read (JOBKEY_ID_TOKEN or
    /// --token-env), BUILDKITE_AGENT_ACCESS_TOKEN, SYSTEM_ACCESSTOKEN and
    /// SYSTEM_OIDCREQUESTURI).
    #[arg(long, requires = "command")]
    pub exec: bool,
    /// With --exec: leave the variables that obtain new ID tokens in the
    /// command's environment.
    #[arg(long, requires = "exec")]
    pub exec_keep_token_env: bool,
    /// Retry the exchange for this long when the broker or Vault is
    /// unavailable (HTTP 503 or 429, or no connection), waiting as the
    /// broker's Retry-After says (at most 30s) or 1s doubling up to 15s;
    /// never on a denial or another error. 0 disables.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = retry_for)]
    pub retry_for: Duration,
    /// The command for --exec.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Revoke the leases of the earlier `jobkey fetch`es in this job.
///
/// Reads the revocation state file `jobkey fetch` kept: one entry per
/// exchange of the job, each with the broker URL, the request id, the
/// revocation handle and what that fetch wrote to disk (the credentials
/// directory, its files, and the directories jobkey created). Revokes
/// every exchange, saying so for each, removes their files and the
/// directories fetch created, then removes the state file. An exchange that
/// could not be revoked stays in the file for another try, and the exit
/// code is 1.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The broker's URL (default: the one each `jobkey fetch` used).
    #[arg(long, env = "JOBKEY_URL")]
    pub url: Option<String>,
    /// Trust only the CAs in this PEM file for the broker's certificate
    /// (a private CA); default: the system's CAs.
    #[arg(long, value_name = "FILE", env = "JOBKEY_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The state file `jobkey fetch` wrote (default:
    /// $RUNNER_TEMP/jobkey/revocation.json on GitHub).
    #[arg(long, value_name = "FILE", env = "JOBKEY_STATE")]
    pub state: Option<PathBuf>,
    /// The --out DIR given to `jobkey fetch` (its state is kept there when
    /// there is no other place).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Retry each revocation for this long when the broker or Vault is
    /// unavailable (HTTP 503 or 429, or no connection), as `jobkey fetch`
    /// does. 0 disables.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = retry_for)]
    pub retry_for: Duration,
}

/// `--retry-for`: a duration (`60s`, `2m`), or `0` for no retry.
fn retry_for(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; write e.g. 60s or 2m, or 0 to never retry"))
}

/// Runs `jobkey fetch`.
pub(super) fn fetch(a: FetchArgs) -> ExitCode {
    if !a.exec && !a.command.is_empty() {
        eprintln!("error: a command after `--` needs --exec");
        return ExitCode::from(2);
    }
    let o = FetchOptions {
        url: a.url,
        ca_file: a.ca_file,
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
        exec_keep_token_env: a.exec_keep_token_env,
        retry_for: a.retry_for,
    };
    run(async {
        let mut stdout = std::io::stdout();
        client::fetch(&o, &client::process_env, &mut stdout).await
    })
    .map(ExitCode::from)
    .unwrap_or(ExitCode::FAILURE)
}

/// Runs `jobkey revoke`.
pub(super) fn revoke(a: RevokeArgs) -> ExitCode {
    let o = RevokeOptions {
        url: a.url,
        ca_file: a.ca_file,
        state: a.state,
        out: a.out,
        retry_for: a.retry_for,
    };
    run(async { client::revoke(&o, &client::process_env).await })
        .map(|r| {
            eprintln!(
                "jobkey: revoked {} lease(s) of {} exchange(s); removed {} file(s){}",
                r.leases,
                r.exchanges,
                r.files,
                if r.nothing_to_revoke > 0 {
                    format!(
                        "; {} exchange(s) had nothing to revoke",
                        r.nothing_to_revoke
                    )
                } else {
                    String::new()
                }
            );
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// `jobkey NAME --help`, as the binary prints it.
    fn long_help(name: &str) -> String {
        let mut cli = crate::cli::Cli::command().term_width(0);
        cli.build();
        cli.find_subcommand_mut(name)
            .unwrap()
            .render_long_help()
            .to_string()
    }

    #[test]
    fn help_describes_the_state_file_the_retries_and_the_stripped_variables() {
        let fetch = long_help("fetch");
        let revoke = long_help("revoke");
        for (help, says) in [
            (&fetch, "--exec-keep-token-env"),
            (&fetch, "--retry-for <DURATION>"),
            (&fetch, "[default: 60s]"),
            (&fetch, "Retry-After"),
            (&fetch, "never on a denial"),
            (&fetch, "one entry per `jobkey fetch` of the job"),
            (&fetch, "the revocation handle"),
            (&fetch, "the directories jobkey created"),
            (&fetch, "another user's"),
            (&revoke, "--retry-for <DURATION>"),
            (&revoke, "one entry per exchange of the job"),
            (&revoke, "revocation handle"),
            (&revoke, "removes their files"),
            (&revoke, "stays in the file for another try"),
        ] {
            assert!(help.contains(says), "`{says}` missing from:\n{help}");
        }
        // Every variable --exec strips is named, from the one table.
        for (_, vars) in client::TOKEN_ENV {
            for v in *vars {
                assert!(fetch.contains(v), "{v} missing from fetch --help");
            }
        }
    }

    #[test]
    fn retry_for_takes_durations_and_zero() {
        let s = Duration::from_secs;
        // (text, parsed)
        let cases = [
            ("60s", Some(s(60))),
            ("2m", Some(s(120))),
            ("0", Some(s(0))),
            (" 5s ", Some(s(5))),
            ("soon", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            assert_eq!(retry_for(text).ok(), want, "{text}");
        }
    }
}
