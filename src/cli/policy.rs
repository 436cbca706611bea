//! `jobkey policy ...`: tools for the people who write policies: lint,
//! schema, test, explain, who-can. Thin wrappers over `crate::policy`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value, json};

use crate::policy::tools::{explain, fixtures, lint, who_can};
use crate::policy::{Decision, PolicyIssuer, PolicySet, Request};
use crate::provider::Provider;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Warn about policies that compile but admit more than meant (a rule that binds only a
    /// name, a branch without `event_name`, a misspelt claim, a pattern on an
    /// id, a rule open to self-hosted runners).
    ///
    /// Every warning has a stable code (JK001..JK010), the rule, its
    /// position and the fix. Exits 1 on a compile error, and on any
    /// warning with --deny-warnings (for the policies repository's CI).
    Lint {
        #[command(flatten)]
        source: Source,
        /// Exit with status 1 when there is any warning.
        #[arg(long)]
        deny_warnings: bool,
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
    },
    /// Print the JSON Schema of policy files (schema/policy.schema.json).
    Schema,
    /// Run the policy fixtures (default: <policy dir>/tests/*.yaml).
    ///
    /// A fixture file holds named sets of claims (`templates:`, optional)
    /// and `cases:`; each case is decided like a real request:
    ///
    ///   templates:
    ///     deploy:                       # a name for a set of claims
    ///       repository_id: "892347"
    ///       repository_owner_id: "10001"
    ///       ref: refs/heads/main
    ///       event_name: push
    ///       environment: production
    ///       runner_environment: github-hosted
    ///   cases:
    ///     - name: a feature branch is refused
    ///       environment: production     # a policy file's environment
    ///       issuer: github              # a configured issuer NAME
    ///       base: deploy                # start from a template (optional)
    ///       claims: {ref: refs/heads/feature}   # set over it; null removes one
    ///       # token: tokens/x.jwt       # or: a JWT file (relative to this file);
    ///       #                           # its payload, the signature NOT checked
    ///       credentials: [deploy-db]    # optional; default: everything granted
    ///       expect: deny                # allow | deny
    ///       code: no_rule_matched       # deny: the refusal's code (optional)
    ///       # rule: NAME                # allow: the rule of every grant;
    ///       #                           # deny: the deny rule that refused (optional)
    ///
    /// Prints PASS or FAIL per case, with the expectation, the decision and
    /// every rule's outcome for a failure; exits 1 when a case fails. A case
    /// naming an issuer that is not configured, an environment without a
    /// policy file, or a credential or template that does not exist is an
    /// error (exit 1), unless it expects that refusal (`expect: deny` with
    /// `code: unknown_environment` or `code: unknown_credential`).
    #[command(verbatim_doc_comment)]
    Test {
        #[command(flatten)]
        source: Source,
        /// The fixture directory.
        dir: Option<PathBuf>,
    },
    /// Explain a decision: the matching rule, and for every other rule the
    /// first condition that failed, with expected and actual values.
    ///
    /// With --token the token is verified first, against the configured
    /// issuers (--config); --jwks pins the keys to a JWKS file (offline)
    /// and --at sets the verification instant (RFC 3339 or epoch seconds),
    /// so a token from an incident can be replayed.
    ///
    /// Exit status, for scripts: 0 the request is allowed, 1 it is denied,
    /// 2 no decision (a usage error, an unreadable file, a token that does
    /// not verify, policies that do not compile).
    Explain {
        #[command(flatten)]
        source: Source,
        /// The environment (policy file) to decide in.
        #[arg(long = "env")]
        environment: String,
        /// A JSON file of claims (not verified).
        #[arg(long, conflicts_with = "token", required_unless_present = "token")]
        claims: Option<PathBuf>,
        /// A JWT file, verified before deciding.
        #[arg(long)]
        token: Option<PathBuf>,
        /// The issuer NAME for --claims (default: the configured issuer whose URL is the claims' `iss`).
        #[arg(long = "as-issuer", value_name = "NAME")]
        as_issuer: Option<String>,
        /// Verify --token with the keys of this JWKS file instead of fetching them.
        #[arg(long, requires = "token")]
        jwks: Option<PathBuf>,
        /// Verify --token as of this instant: RFC 3339 or seconds since the epoch.
        #[arg(long, requires = "token")]
        at: Option<String>,
        /// A credential asked for (repeatable; default: everything granted).
        #[arg(long = "credential", value_name = "NAME")]
        credentials: Vec<String>,
        #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
        format: TextOrJson,
    },
    /// The backtest: decide every recorded exchange again under proposed
    /// policies (--policies DIR) and list the decisions that would change
    /// (newly allowed, newly denied, another rule, TTL or credentials).
    ///
    /// Replays the recorded, verified identities (their audited claims),
    /// environments and requested credentials. Exit status: 0 when no
    /// decision changes, 1 when some do, 2 on an error (for the policy
    /// repository's CI).
    Replay(ReplayArgs),
    /// The access review: for each credential of an environment, the rules
    /// that grant it and the identities they admit.
    ///
    /// The default layout lists each rule's identities one kind per line,
    /// wrapped to fit an 80-column terminal; --wide prints one table row per
    /// rule instead (as wide as its cells); --format json is for programs.
    WhoCan {
        #[command(flatten)]
        source: Source,
        #[arg(long = "env")]
        environment: String,
        /// Only this credential.
        #[arg(long)]
        credential: Option<String>,
        /// One table row per (credential, rule), one column per kind of identity.
        #[arg(long, conflicts_with = "format")]
        wide: bool,
        #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
        format: TableOrJson,
    },
}

/// `jobkey policy replay`'s arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The proposed policies (--policies DIR) and the issuers (--config or
    /// --issuer).
    #[command(flatten)]
    source: Source,
    /// Audit log files or directories (their `*.jsonl*` files), merged by
    /// time (repeatable).
    #[arg(long = "audit", value_name = "FILE|DIR", required = true)]
    audit: Vec<PathBuf>,
    /// Only the exchanges from this instant: RFC 3339, or a duration
    /// before now (1h, 30d).
    #[arg(long)]
    since: Option<String>,
    #[arg(long, value_enum, default_value_t = TextOrJson::Text)]
    format: TextOrJson,
    /// Report progress on stderr (every 64 MiB read); the default when
    /// stderr is a terminal.
    #[arg(long)]
    progress: bool,
}

/// `jobkey policy replay`: 0 no decision changes, 1 some do, 2 an error.
pub(super) fn replay(a: ReplayArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    match replay_report(&a) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn replay_report(a: &ReplayArgs) -> Result<usize, String> {
    use crate::audit::query::{LogSet, parse_since};
    use crate::policy::tools::replay;
    let l = a.source.load()?;
    let set = LogSet::new(&a.audit).map_err(|e| e.to_string())?;
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, std::time::SystemTime::now()))
        .transpose()
        .map_err(|e| format!("--since {e}"))?;
    let mut progress = super::audit::Progress::new(a.progress, &set);
    let mut records = set.records().map_err(|e| e.to_string())?;
    let report = replay::replay(&l.set, &mut records, since, |b| progress.update(b))
        .map_err(|e| e.to_string())?;
    if let Some((f, line)) = records.unreadable.first() {
        eprintln!(
            "warning: {} line(s) are not audit records and were skipped (first: {} line {})",
            records.unreadable.len(),
            set.files()[*f].display(),
            line
        );
    }
    match a.format {
        TextOrJson::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        ),
        TextOrJson::Text => print!("{}", replay::render(&report)),
    }
    Ok(report.changes.len())
}

/// Where the policies and the issuers come from.
#[derive(Debug, Args)]
pub struct Source {
    /// The server config: its issuers and its policy_dir.
    #[arg(long, short, env = "JOBKEY_CONFIG")]
    pub(super) config: Option<PathBuf>,
    /// The policy directory (default: the config's policy_dir).
    #[arg(long, value_name = "DIR")]
    pub(super) policies: Option<PathBuf>,
    /// An issuer as NAME=URL or NAME=PROVIDER:URL (repeatable), with or
    /// instead of --config.
    ///
    /// PROVIDER is github, gitlab, buildkite, circleci, bitbucket,
    /// azure-devops, forgejo or generic, for a URL that is not the CI's own
    /// (a stand-in or a proxy), e.g. buildkite=buildkite:http://127.0.0.1:8403.
    /// Without it, the provider is known only from the CI's own exact issuer
    /// URL, and is generic otherwise.
    #[arg(long = "issuer", value_name = "NAME=[PROVIDER:]URL")]
    pub(super) issuers: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TableOrJson {
    Table,
    Json,
}

pub(super) struct Loaded {
    config: Option<crate::config::Config>,
    dir: PathBuf,
    issuers: Vec<PolicyIssuer>,
    pub(super) set: PolicySet,
}

impl Source {
    pub(super) fn load(&self) -> Result<Loaded, String> {
        let config = match &self.config {
            Some(path) => Some(crate::config::Config::load(path).map_err(|e| e.to_string())?),
            None => None,
        };
        let mut issuers = config
            .as_ref()
            .map(|c| PolicyIssuer::from_settings(&c.issuers))
            .unwrap_or_default();
        for spec in &self.issuers {
            issuers.push(parse_issuer(spec)?);
        }
        if issuers.is_empty() {
            return Err(
                "no issuers: give --config FILE (or $JOBKEY_CONFIG), or --issuer NAME=[PROVIDER:]URL"
                    .into(),
            );
        }
        let dir = match (&self.policies, &config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(c)) => c.policy_dir.clone(),
            (None, None) => {
                return Err("no policy directory: give --policies DIR or --config FILE".into());
            }
        };
        let set = PolicySet::load_dir(&dir, &issuers).map_err(|e| e.to_string())?;
        if let Some(c) = &config {
            set.check_token_policies(c.vault.token_role.as_ref())
                .map_err(|e| e.to_string())?;
        }
        Ok(Loaded {
            config,
            dir,
            issuers,
            set,
        })
    }
}

/// How a `jobkey policy` command ended, when it did not fail.
enum Outcome {
    /// Done; for `explain`, the request is allowed.
    Done,
    /// `explain`: the request is denied.
    Denied,
}

/// Runs one `jobkey policy` command and gives its exit status: 0 when it
/// is done (`explain`: allowed); 1 when it fails (a compile error, a
/// failed fixture, warnings with `--deny-warnings`; `explain`: denied);
/// for `explain`, 2 when it cannot decide (its input or the token is
/// unusable), as clap's usage errors. Errors go to stderr as `error: ...`.
pub(super) async fn run(command: PolicyCommand) -> ExitCode {
    let explain = matches!(command, PolicyCommand::Explain { .. });
    match run_command(command).await {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Denied) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if explain { 2 } else { 1 })
        }
    }
}

async fn run_command(command: PolicyCommand) -> Result<Outcome, String> {
    match command {
        PolicyCommand::Schema => {
            print!("{}", PolicySet::json_schema());
            Ok(Outcome::Done)
        }
        PolicyCommand::Lint {
            source,
            deny_warnings,
            format,
        } => {
            let l = source.load()?;
            let warnings = lint::lint(&l.set);
            match format {
                TextOrJson::Json => println!("{}", json!({"warnings": warnings})),
                TextOrJson::Text => {
                    for w in &warnings {
                        println!("{w}");
                    }
                    println!(
                        "{}: {} environment(s), {} warning(s)",
                        l.dir.display(),
                        l.set.environments().count(),
                        warnings.len()
                    );
                }
            }
            if deny_warnings && !warnings.is_empty() {
                return Err(format!("{} warning(s) and --deny-warnings", warnings.len()));
            }
            Ok(Outcome::Done)
        }
        // Dispatched before the runtime starts (its exit statuses are its
        // own); here for completeness.
        PolicyCommand::Replay(a) => replay_report(&a).map(|_| Outcome::Done),
        PolicyCommand::Test { source, dir } => {
            let l = source.load()?;
            let dir = dir.unwrap_or_else(|| l.dir.join("tests"));
            let report = fixtures::run_dir(&l.set, &l.issuers, &dir).map_err(|e| e.to_string())?;
            print!("{}", report.render());
            match report.failed() {
                0 => Ok(Outcome::Done),
                n => Err(format!("{n} policy test(s) failed")),
            }
        }
        PolicyCommand::WhoCan {
            source,
            environment,
            credential,
            wide,
            format,
        } => {
            let l = source.load()?;
            let review = who_can::who_can(&l.set, &environment, credential.as_deref())?;
            match format {
                TableOrJson::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"environment": environment, "credentials": review})
                    )
                    .map_err(|e| e.to_string())?
                ),
                TableOrJson::Table if wide => print!("{}", who_can::render_table(&review)),
                TableOrJson::Table => {
                    print!("{}", who_can::render_list(&review, who_can::DEFAULT_WIDTH))
                }
            }
            Ok(Outcome::Done)
        }
        PolicyCommand::Explain {
            source,
            environment,
            claims,
            token,
            as_issuer,
            jwks,
            at,
            credentials,
            format,
        } => {
            let l = source.load()?;
            let (issuer, claims) = match (claims, token) {
                (Some(path), _) => {
                    let claims = read_claims(&path)?;
                    let issuer = match as_issuer {
                        Some(name) => name,
                        None => issuer_of(&l, &claims)?,
                    };
                    (issuer, claims)
                }
                (None, Some(path)) => verify(&l, &path, jwks.as_deref(), at.as_deref()).await?,
                (None, None) => return Err("give --claims FILE or --token FILE".into()),
            };
            let req = Request {
                environment: &environment,
                issuer: &issuer,
                claims: &claims,
                credentials: &credentials,
            };
            let e = l.set.explain(&req);
            let decision = explain::describe_decision(&e.decision);
            let matching: Vec<&str> = e
                .rules
                .iter()
                .filter(|r| r.applies)
                .map(|r| r.rule.as_str())
                .collect();
            match format {
                TextOrJson::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "environment": environment, "file": e.file, "issuer": issuer,
                        "decision": decision, "matching_rules": matching, "rules": e.rules,
                    }))
                    .map_err(|e| e.to_string())?
                ),
                TextOrJson::Text => {
                    if e.file.is_empty() {
                        println!("environment `{environment}`: no such policy file");
                    } else {
                        println!(
                            "environment `{environment}` ({}), issuer `{issuer}`",
                            e.file
                        );
                    }
                    println!("decision: {decision}");
                    match matching.as_slice() {
                        [] => println!("matching rule: none"),
                        list => println!("matching rule: {}", list.join(", ")),
                    }
                    if !e.rules.is_empty() {
                        println!("rules:");
                    }
                    for line in explain::explain_lines(&e) {
                        println!("  {line}");
                    }
                }
            }
            Ok(match e.decision {
                Decision::Allow(_) => Outcome::Done,
                Decision::Deny(_) => Outcome::Denied,
            })
        }
    }
}

fn read_claims(path: &Path) -> Result<Map<String, Value>, String> {
    let text = crate::files::read_to_string(path, crate::files::MIB).map_err(|e| e.to_string())?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(format!("{}: not a JSON object of claims", path.display())),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// `--issuer NAME=URL` or `NAME=PROVIDER:URL`. A URL's scheme is never a
/// provider name, so what stands before the first `:` tells them apart.
fn parse_issuer(spec: &str) -> Result<PolicyIssuer, String> {
    let usage = || {
        format!(
            "--issuer {spec}: write NAME=URL or NAME=PROVIDER:URL, e.g. buildkite=buildkite:http://127.0.0.1:8403 (providers: {})",
            Provider::names().join(", ")
        )
    };
    let (name, rest) = spec.split_once('=').ok_or_else(usage)?;
    if name.is_empty() {
        return Err(usage());
    }
    let (provider, url) = match rest.split_once(':') {
        Some((p, url)) if Provider::from_name(p).is_some() => (Provider::from_name(p), url),
        _ => (None, rest),
    };
    let parsed =
        url::Url::parse(url).map_err(|e| format!("{}: {url:?} is not a URL ({e})", usage()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(format!(
            "--issuer {spec}: `{}` is not a provider ({}), and an issuer URL starts with https://",
            parsed.scheme(),
            Provider::names().join(", ")
        ));
    }
    let known = Provider::from_issuer_url(url);
    let provider = match provider {
        Some(p) if known != Provider::Generic && p != known => {
            return Err(format!(
                "--issuer {spec}: {url} is {}'s issuer; write {name}={}:{url} or {name}={url}",
                known.title(),
                known.name()
            ));
        }
        Some(p) => p,
        None => known,
    };
    Ok(PolicyIssuer::new(name, provider, Some(url.to_owned())))
}

/// The issuer (from --config or --issuer) whose URL is the claims' `iss`.
fn issuer_of(l: &Loaded, claims: &Map<String, Value>) -> Result<String, String> {
    let names = || {
        l.issuers
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
        return Err(format!(
            "the claims have no `iss`; give --as-issuer NAME (one of: {})",
            names()
        ));
    };
    l.issuers
        .iter()
        .find(|i| i.url.as_deref() == Some(iss))
        .map(|i| i.name.clone())
        .ok_or_else(|| {
            format!(
                "no configured issuer has `iss` {iss:?}; give --as-issuer NAME (one of: {})",
                names()
            )
        })
}

/// Parses `--at`: seconds since the epoch, or RFC 3339.
pub(super) fn parse_instant(text: &str) -> Result<u64, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(secs);
    }
    let t = humantime::parse_rfc3339_weak(text).map_err(|e| {
        format!("--at {text:?}: {e}; write RFC 3339 (2025-11-27T21:40:12Z) or epoch seconds")
    })?;
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| format!("--at {text:?}: before 1970"))
}

async fn verify(
    l: &Loaded,
    token: &Path,
    jwks: Option<&Path>,
    at: Option<&str>,
) -> Result<(String, Map<String, Value>), String> {
    let cfg = l
        .config
        .as_ref()
        .ok_or("--token needs --config: the issuers, audiences and algorithms come from it")?;
    let mut issuers = cfg.issuers.clone();
    if let Some(jwks) = jwks {
        for i in &mut issuers {
            i.keys = crate::token::KeySource::JwksFile(jwks.to_path_buf());
        }
    }
    let verifier = crate::token::Verifier::new(
        issuers,
        cfg.audiences.clone(),
        cfg.fetch.clone(),
        cfg.max_token_bytes,
    )
    .map_err(|e| e.to_string())?;
    let text =
        crate::files::read_to_string(token, 64 * crate::files::KIB).map_err(|e| e.to_string())?;
    let now = match at {
        Some(at) => parse_instant(at)?,
        None => crate::devissuer::now(),
    };
    let verified = verifier.verify_at(text.trim(), now).await.map_err(|e| {
        format!(
            "{}: the token does not verify: {e} ({})",
            token.display(),
            e.code()
        )
    })?;
    Ok((verified.issuer, verified.claims))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// `--issuer` specs: (spec, Ok((provider, url)) or a fragment of the error).
    #[test]
    fn issuer_specs_name_a_provider_or_look_it_up() {
        type Want = Result<(Provider, &'static str), &'static str>;
        let table: &[(&str, Want)] = &[
            (
                "github=https://token.actions.githubusercontent.com",
                Ok((
                    Provider::Github,
                    "https://token.actions.githubusercontent.com",
                )),
            ),
            (
                "buildkite=https://agent.buildkite.com",
                Ok((Provider::Buildkite, "https://agent.buildkite.com")),
            ),
            (
                "buildkite=buildkite:http://127.0.0.1:8403",
                Ok((Provider::Buildkite, "http://127.0.0.1:8403")),
            ),
            (
                "bk=http://127.0.0.1:8403",
                Ok((Provider::Generic, "http://127.0.0.1:8403")),
            ),
            (
                "ghes=github:https://ghe.example.com/_services/token",
                Ok((Provider::Github, "https://ghe.example.com/_services/token")),
            ),
            (
                "x=generic:https://agent.buildkite.com",
                Err("is Buildkite's issuer; write x=buildkite:https://agent.buildkite.com"),
            ),
            ("github", Err("write NAME=URL or NAME=PROVIDER:URL")),
            (
                "=https://a.example",
                Err("write NAME=URL or NAME=PROVIDER:URL"),
            ),
            (
                "x=jenkins:https://a.example",
                Err("`jenkins` is not a provider (github, "),
            ),
            ("x=buildkite:not a url", Err("is not a URL")),
            ("x=ftp://a.example", Err("`ftp` is not a provider")),
        ];
        for (spec, want) in table {
            match (want, parse_issuer(spec)) {
                (Ok((provider, url)), Ok(i)) => {
                    assert_eq!(i.provider, *provider, "{spec}");
                    assert_eq!(i.url.as_deref(), Some(*url), "{spec}");
                }
                (Err(fragment), Err(e)) => assert!(e.contains(fragment), "{spec}: {e}"),
                (want, got) => panic!("{spec}: want {want:?}, got {got:?}"),
            }
        }
    }

    /// `explain --claims` finds the issuer by `iss` among the --issuer
    /// ones too, and says what is missing without Rust's `Some(…)`.
    #[test]
    fn the_claims_iss_finds_the_issuer() {
        let dir = tempfile::tempdir().expect("tmp");
        let staging = std::fs::read_to_string("policies/staging.yaml").expect("staging");
        std::fs::write(dir.path().join("staging.yaml"), staging).expect("write");
        let source = Source {
            config: None,
            policies: Some(dir.path().to_path_buf()),
            issuers: vec![
                "gitlab=https://gitlab.com".into(),
                "buildkite=buildkite:http://127.0.0.1:8403".into(),
            ],
        };
        let l = source.load().expect("loads");
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let table: &[(Value, Result<&str, &str>)] = &[
            (json!({"iss": "https://gitlab.com"}), Ok("gitlab")),
            (json!({"iss": "http://127.0.0.1:8403"}), Ok("buildkite")),
            (
                json!({"iss": "https://gitlab.example.com"}),
                Err(
                    "no configured issuer has `iss` \"https://gitlab.example.com\"; give --as-issuer NAME (one of: gitlab, buildkite)",
                ),
            ),
            (
                json!({"sub": "x"}),
                Err("the claims have no `iss`; give --as-issuer NAME (one of: gitlab, buildkite)"),
            ),
            (json!({"iss": 7}), Err("the claims have no `iss`")),
        ];
        for (c, want) in table {
            let got = issuer_of(&l, &claims(c.clone()));
            match (want, &got) {
                (Ok(name), Ok(got)) => assert_eq!(got, name, "{c}"),
                (Err(fragment), Err(e)) => {
                    assert!(e.contains(fragment), "{c}: {e}");
                    assert!(!e.contains("Some("), "{e}");
                }
                (want, got) => panic!("{c}: want {want:?}, got {got:?}"),
            }
        }
    }
}
