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
    /// Exit status: 0 when the chain is intact, 1 when a line is broken, a
    /// checkpoint does not verify or the log is truncated. A torn last line
    /// (a write cut off by a crash or a full disk) is not part of the
    /// chain: it is reported on stderr and the status is 0; `jobkey serve`
    /// moves it beside the log at its next start.
    Verify {
        /// The audit log file.
        file: PathBuf,
        /// The latest checkpoint from the second sink: its JSON line, or a
        /// file whose last line it is (the checkpoint file, or a copy of
        /// jobkey's stdout). Its key is trusted unless --public-key is given.
        #[arg(long, value_name = "FILE_OR_LINE")]
        checkpoint: Option<String>,
        /// A public key checkpoints must be signed with (`ed25519:…`, as
        /// `jobkey audit public-key` prints it). May be repeated.
        #[arg(long = "public-key", value_name = "KEY")]
        public_key: Vec<String>,
        /// A sequence number known to exist: a log that ends before it is
        /// truncated.
        #[arg(long, value_name = "N")]
        min_seq: Option<u64>,
    },
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
    /// carried it: who, when, which credential and rule.
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
    let found =
        crate::audit::find_value(&log, &fp, value.expose_secret()).map_err(|e| e.to_string())?;
    if !found.unreadable.is_empty() {
        eprintln!(
            "warning: {}: {} line(s) are not audit records and were not searched (first: line {}); run `jobkey audit verify`",
            log.display(),
            found.unreadable.len(),
            found.unreadable[0]
        );
    }
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
            println!(
                "seq {} at {}: request {} — {}.{} (rule `{}`, environment `{}`) to {} run {}",
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

/// `jobkey audit verify`: the chain, the checkpoints, what is known from
/// outside the log, and a torn last line if there is one.
fn audit_verify(
    file: &std::path::Path,
    checkpoint: Option<&str>,
    public_keys: &[String],
    min_seq: Option<u64>,
) -> Result<(), String> {
    let mut opts = crate::audit::VerifyOptions {
        min_seq,
        ..Default::default()
    };
    for k in public_keys {
        opts.trusted
            .push(crate::audit::PublicKey::parse(k).map_err(|e| format!("--public-key: {e}"))?);
    }
    if let Some(c) = checkpoint {
        opts.checkpoint =
            Some(crate::audit::Checkpoint::from_arg(c).map_err(|e| format!("--checkpoint: {e}"))?);
    }
    let r = crate::audit::verify_with(file, &opts).map_err(|e| e.to_string())?;
    println!(
        "{}: {} records, chain intact (last hash {})",
        file.display(),
        r.lines,
        r.last_hash
    );
    let trusted = !opts.trusted.is_empty() || opts.checkpoint.is_some();
    match &r.last_checkpoint {
        Some(cp) => println!(
            "{} checkpoint(s) verified{}; the last signs seq {} (key id {}); {} record(s) after it are not signed yet",
            r.checkpoints,
            if trusted {
                " with the trusted key"
            } else {
                " with the key each names (pass --public-key or --checkpoint to check the key)"
            },
            cp.seq,
            cp.key_id,
            r.since_checkpoint
        ),
        None => println!("no checkpoints: records are not signed yet"),
    }
    if let Some(cp) = &opts.checkpoint {
        println!(
            "the external checkpoint (seq {}) is in the log: not truncated before it",
            cp.seq
        );
    }
    if let Some(torn) = &r.torn {
        eprintln!(
            "warning: {}: line {} ({} bytes) is torn and not part of the chain: {}. A write was cut off (a crash or a full disk); `jobkey serve` moves it to a file beside the log at its next start and records that",
            file.display(),
            torn.line,
            torn.bytes,
            torn.why
        );
    }
    Ok(())
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
                command:
                    AuditCommand::Verify {
                        file,
                        checkpoint,
                        public_key,
                        min_seq,
                    },
            } => audit_verify(&file, checkpoint.as_deref(), &public_key, min_seq),
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
