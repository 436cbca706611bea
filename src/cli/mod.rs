//! The command line: argument parsing and dispatch. Each command is a thin
//! call into the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod audit;
mod fetch;
mod policy;
pub(crate) use policy::PolicyCommand;
use policy::TextOrJson;

/// jobkey: a secrets broker for CI/CD jobs.
///
/// A CI job presents its OIDC ID token; jobkey verifies it, decides from the
/// policies in `policies/`, reads short-lived credentials from Vault, and
/// returns them with the strings the job's log must mask. Every decision is
/// written to a hash-chained audit log first.
#[derive(Debug, Parser)]
#[command(name = "jobkey", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker.
    Serve {
        /// The TOML config file (see examples/jobkey.toml).
        #[arg(long, short, env = "JOBKEY_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and the policies it names, without starting.
    Check {
        #[arg(long, short, env = "JOBKEY_CONFIG")]
        config: PathBuf,
    },
    /// Run a local stand-in OIDC issuer (tests and the demo only).
    ///
    /// Serves discovery (/.well-known/openid-configuration) and a JWKS, and
    /// signs a token on POST /mint for anyone who asks: it listens on
    /// loopback only.
    ///
    /// POST /mint takes a JSON body (Content-Type: application/json) and
    /// answers {"token": "<signed JWT>"}:
    ///
    ///   {"shape": "github", "audience": "jobkey",
    ///    "claims": {"ref": "refs/heads/dev", "environment": null}}
    ///
    ///   shape     github, gitlab or buildkite: the claims of that CI's
    ///             main-branch deploy job of acme/api (as policies/ expects)
    ///   audience  the token's `aud`
    ///   claims    optional: claims set over the shape's; null removes one
    ///
    /// Any other field is refused. The token's `iss` is this issuer's URL,
    /// `iat` and `nbf` are now, `exp` the shape's usual lifetime. E.g.:
    ///
    ///   curl -s -X POST http://127.0.0.1:8401/mint \
    ///     -H 'content-type: application/json' \
    ///     -d '{"shape": "github", "audience": "jobkey"}'
    #[command(verbatim_doc_comment)]
    DevIssuer {
        /// Loopback address to listen on.
        #[arg(long, default_value = "127.0.0.1:8401")]
        listen: SocketAddr,
        /// RSA private key, PKCS#8 PEM (`openssl genpkey -algorithm RSA`).
        #[arg(long)]
        key: PathBuf,
        /// Key id published in the JWKS.
        #[arg(long, default_value = "dev-key-1")]
        kid: String,
    },
    // The help of `fetch` and `revoke` is their arguments' doc (fetch.rs).
    Fetch(Box<fetch::FetchArgs>),
    Revoke(fetch::RevokeArgs),
    /// Policy tools: lint, schema, test, explain, who-can.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Audit log tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A read-only web page for auditors: exchanges and denials over time,
    /// top identities, credentials issued, denial reasons, who can have
    /// what, the chain's status, and a leaked-value lookup.
    ///
    /// Listens on loopback only unless --allow-remote: the page shows who
    /// received which credential, and has no login of its own.
    Review {
        #[arg(long, short, env = "JOBKEY_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8404")]
        listen: SocketAddr,
        /// Listen on a non-loopback address (put an authenticating proxy
        /// in front).
        #[arg(long)]
        allow_remote: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of an audit log and the signatures of its
    /// checkpoints; names the first broken line.
    ///
    /// A chain alone does not show that its last records are still there.
    /// Give the latest checkpoint kept off this host (`--checkpoint`), or
    /// the public key and a sequence number known to exist (`--public-key`
    /// with `--min-seq`), and a log cut short is reported as truncated.
    ///
    /// A rotated set is one chain across its files: give the live log (its
    /// rotated files `<log>.<UTC time>` beside it are read too), a
    /// directory, or the files. Each file must start where the one before
    /// it ends, and the chain at seq 1 (see --archived). Several replicas'
    /// logs given together are verified as a chain each, named by replica.
    ///
    /// Exit status: 0 when every chain is intact, 1 when a line is broken,
    /// a file is missing or does not continue the one before it, a
    /// checkpoint does not verify or the log is truncated. A torn last line
    /// (a write cut off by a crash or a full disk) is not part of the
    /// chain: it is reported on stderr and the status is 0; `jobkey serve`
    /// moves it beside the log at its next start.
    Verify(audit::VerifyArgs),
    /// Print the public key of the audit log's checkpoint signing key
    /// (created at jobkey's first start, beside the log), for auditors to
    /// keep off this host and pass to `jobkey audit verify --public-key`.
    PublicKey {
        /// The server config: its audit log and checkpoint key.
        #[arg(long, short, env = "JOBKEY_CONFIG", conflicts_with = "key")]
        config: Option<PathBuf>,
        /// The checkpoint key file (instead of --config).
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Which exchanges issued a value? Reads the value from stdin (never
    /// from the command line, where other users could see it), computes its
    /// keyed fingerprint, and lists the allowed exchanges whose credentials
    /// carried it: who, when, which credential and rule. Searches the log
    /// and the files it was rotated into (`<log>.<UTC time>`).
    ///
    /// Exit status: 0 when an exchange issued the value, 1 when none did,
    /// 2 on an error (no log, no key, nothing on stdin).
    Find {
        /// The server config: its audit log and fingerprint key.
        #[arg(long, short, env = "JOBKEY_CONFIG", conflicts_with = "log")]
        config: Option<PathBuf>,
        /// An audit log file (instead of --config).
        #[arg(long, requires = "key")]
        log: Option<PathBuf>,
        /// The fingerprint key of that log.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
        /// The same as `--format json` (kept for scripts written before
        /// `--format`).
        #[arg(long, hide = true, conflicts_with = "format")]
        json: bool,
    },
    /// List audit records by time, environment, issuer, repository,
    /// decision, error code, credential, rule or request id.
    ///
    /// Reads several files (a rotated set, several replicas' logs, or a
    /// directory) merged by time. Exit status: 0 when a record matched, 1
    /// when none did, 2 on an error.
    Query(Box<audit::QueryArgs>),
    /// The full story of one request: who, what was asked, what was issued
    /// under which rule, why it was refused, and its revocation.
    ///
    /// A job's denial message names its request id. Exit status: 0 when
    /// the request is in the log, 1 when not, 2 on an error.
    Show(audit::ShowArgs),
    /// Write the records for a SIEM: OCSF events, one JSON object per line.
    Export(audit::ExportArgs),
}

/// What `jobkey audit find` found: its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FindOutcome {
    Found,
    NotFound,
}

/// `jobkey audit find`: the value comes from stdin.
fn audit_find(
    config: Option<PathBuf>,
    log: Option<PathBuf>,
    key: Option<PathBuf>,
    json: bool,
) -> Result<FindOutcome, String> {
    let (log, key) = match (config, log, key) {
        (Some(c), _, _) => {
            let cfg = crate::config::Config::load(&c).map_err(|e| e.to_string())?;
            (cfg.audit_path, cfg.audit_fingerprint_key)
        }
        (None, Some(l), Some(k)) => (l, k),
        _ => return Err("give --config FILE, or --log FILE and --key FILE".into()),
    };
    let fp = crate::audit::Fingerprinter::load(&key).map_err(|e| e.to_string())?;
    let mut value = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut value)
        .map_err(|e| format!("reading the value from stdin: {e}"))?;
    let value = crate::secret::SecretString::new(value);
    if value.expose_secret().trim().is_empty() {
        return Err("pipe the leaked value on stdin, e.g. `jobkey audit find --config jobkey.toml < leaked.txt`".into());
    }
    // The log and the files it was rotated into.
    let mut logs = crate::audit::rotated_files(&log);
    logs.sort();
    logs.push(log.clone());
    let mut found = crate::audit::Found::default();
    for file in &logs {
        let mut more = crate::audit::find_value(file, &fp, value.expose_secret())
            .map_err(|e| e.to_string())?;
        if !more.unreadable.is_empty() {
            eprintln!(
                "warning: {}: {} line(s) are not audit records and were not searched (first: line {}); run `jobkey audit verify`",
                file.display(),
                more.unreadable.len(),
                more.unreadable[0]
            );
        }
        found.matches.append(&mut more.matches);
    }
    found
        .matches
        .sort_by(|a, b| a.time.cmp(&b.time).then(a.seq.cmp(&b.seq)));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&found.matches).unwrap_or_default()
        );
    } else if found.matches.is_empty() {
        println!("{}: no exchange issued this value", log.display());
    } else {
        for m in &found.matches {
            let claim = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|k| m.identity.as_ref()?.claim(k))
                    .map_or_else(|| "?".to_owned(), |v| v.to_text())
            };
            let who = claim(&["repository", "project_path", "sub"]);
            let run = claim(&["run_id", "pipeline_id", "build_number"]);
            let replica = m
                .replica
                .as_deref()
                .map(|r| format!(" (replica {r})"))
                .unwrap_or_default();
            println!(
                "seq {}{replica} at {}: request {} — {}.{} (rule `{}`, environment `{}`) to {} run {}",
                m.seq, m.time, m.request_id, m.credential, m.field, m.rule, m.environment, who, run
            );
        }
    }
    Ok(if found.matches.is_empty() {
        FindOutcome::NotFound
    } else {
        FindOutcome::Found
    })
}

/// `jobkey audit public-key`: the checkpoint key's public half.
fn audit_public_key(config: Option<PathBuf>, key: Option<PathBuf>) -> Result<(), String> {
    let key = match (config, key) {
        (_, Some(k)) => k,
        (Some(c), None) => {
            let cfg = crate::config::Config::load(&c).map_err(|e| e.to_string())?;
            cfg.audit_settings
                .checkpoints
                .key_file
                .unwrap_or_else(|| crate::audit::default_checkpoint_key_path(&cfg.audit_path))
        }
        (None, None) => return Err("give --config or --key".into()),
    };
    let k = crate::audit::CheckpointKey::load(&key).map_err(|e| e.to_string())?;
    println!("{}", k.public_key().to_text());
    eprintln!("key id {}", k.public_key().id());
    Ok(())
}

/// The runtime's blocking threads at most (see [`run`]).
const BLOCKING_THREADS: usize = 8;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format);
    let command = match cli.command {
        Command::Fetch(a) => return fetch::fetch(*a),
        Command::Revoke(a) => return fetch::revoke(a),
        Command::Audit {
            command:
                AuditCommand::Find {
                    config,
                    log,
                    key,
                    format,
                    json,
                },
        } => {
            let json = json || matches!(format, TextOrJson::Json);
            return match audit_find(config, log, key, json) {
                Ok(FindOutcome::Found) => ExitCode::SUCCESS,
                Ok(FindOutcome::NotFound) => ExitCode::from(1),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Command::Audit {
            command: AuditCommand::Query(a),
        } => return status(audit::query(&a)),
        Command::Audit {
            command: AuditCommand::Show(a),
        } => return status(audit::show(&a)),
        Command::Policy {
            command: PolicyCommand::Replay(a),
        } => return policy::replay(a),
        other => other,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // The blocking pool runs file reads and the audit log's tick and
        // flush (an allow's sync is its log's own syncer thread). Each of
        // its threads keeps a stack and an allocator heap: with tokio's
        // default (512), a burst of work made one thread per task waiting
        // and RSS followed.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // `jobkey policy` has its own exit statuses (`explain`: 0 allow, 1 deny, 2 error).
    let command = match command {
        Command::Policy { command } => return rt.block_on(policy::run(command)),
        other => other,
    };
    let result: Result<(), String> = rt.block_on(async {
        match command {
            Command::Serve { config } => {
                let cfg = crate::config::Config::load(&config).map_err(|e| e.to_string())?;
                crate::server::run(cfg).await.map_err(|e| e.to_string())
            }
            Command::Check { config } => check(&config),
            Command::DevIssuer { listen, key, kid } => dev_issuer(listen, &key, &kid).await,
            Command::Audit {
                command: AuditCommand::Verify(a),
            } => audit::verify(&a),
            Command::Audit {
                command: AuditCommand::PublicKey { config, key },
            } => audit_public_key(config, key),
            Command::Audit {
                command: AuditCommand::Export(a),
            } => audit::export(&a),
            Command::Review {
                config,
                listen,
                allow_remote,
            } => crate::review::run(&config, listen, allow_remote).await,
            Command::Audit {
                command: AuditCommand::Find { .. } | AuditCommand::Query(_) | AuditCommand::Show(_),
            }
            | Command::Fetch(_)
            | Command::Revoke(_)
            | Command::Policy { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// 0 when something was found, 1 when nothing was, 2 on an error.
fn status(r: Result<bool, String>) -> ExitCode {
    match r {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn check(config: &std::path::Path) -> Result<(), String> {
    let cfg = crate::config::Config::load(config).map_err(|e| e.to_string())?;
    let names: Vec<String> = cfg.issuers.iter().map(|i| i.name.clone()).collect();
    let issuers = crate::policy::PolicyIssuer::from_settings(&cfg.issuers);
    let p =
        crate::policy::PolicySet::load_dir(&cfg.policy_dir, &issuers).map_err(|e| e.to_string())?;
    p.check_token_policies(cfg.vault.token_role.as_ref())
        .map_err(|e| e.to_string())?;
    let envs: Vec<&str> = p.environments().collect();
    println!(
        "{}: ok — {} issuer(s) ({}), {} environment(s) ({})",
        config.display(),
        names.len(),
        names.join(", "),
        envs.len(),
        envs.join(", ")
    );
    Ok(())
}

async fn dev_issuer(listen: SocketAddr, key: &std::path::Path, kid: &str) -> Result<(), String> {
    if !listen.ip().is_loopback() {
        return Err(format!(
            "{listen}: the dev issuer signs any token it is asked for; it listens on loopback only (e.g. 127.0.0.1:8401)"
        ));
    }
    let pem =
        crate::files::read_to_string(key, 64 * crate::files::KIB).map_err(|e| e.to_string())?;
    let key = crate::devissuer::SigningKey::rsa_from_pem(&pem, kid)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    let issuer = crate::devissuer::spawn(listen, key)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    eprintln!(
        "dev issuer {} — discovery at {}/.well-known/openid-configuration; POST {}/mint {{\"shape\":\"github\",\"audience\":\"jobkey\"}}",
        issuer.url(),
        issuer.url(),
        issuer.url()
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}

/// jobkey's own events at `info`; dependencies only for errors, and never
/// the Vault client's (vaultrs and rustify log each failed request as an
/// ERROR before jobkey's own line says what failed and what to do).
/// `RUST_LOG` overrides it.
const DEFAULT_LOG_FILTER: &str = "error,jobkey=info,vaultrs=off,rustify=off";

fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    // Colour only on a terminal: a log file or a journal gets plain text.
    // A log line that cannot be written (stderr on a full disk) is lost,
    // not reported with `eprintln!`, which would panic in whatever task
    // was logging: the broker keeps serving, and its audit log says what
    // it can.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}
