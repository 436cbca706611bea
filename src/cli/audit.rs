//! `jobkey audit query`, `audit show` and `audit export`: the audit log
//! read back for auditors and SIEMs. Thin wrappers over
//! `crate::audit::query` and `crate::audit::export`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use clap::{Args, ValueEnum};

use super::policy::Source;
use crate::audit::query::{
    Filter, JsonRow, LogSet, Record, Story, TABLE_HEADER, parse_since, table_row,
};
use crate::audit::{Action, Decision, Event};

/// `jobkey audit verify`'s arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log (with its rotated files beside it), a directory (its
    /// `*.jsonl*` files), or several files: a rotated set, several
    /// replicas' logs.
    #[arg(required = true, value_name = "LOG")]
    pub files: Vec<PathBuf>,
    /// The latest checkpoint from the second sink: its JSON line, or a
    /// file whose last line it is (the checkpoint file, or a copy of
    /// jobkey's stdout). Its key is trusted unless --public-key is given.
    #[arg(long, value_name = "FILE_OR_LINE")]
    pub checkpoint: Option<String>,
    /// A public key checkpoints must be signed with (`ed25519:…`, as
    /// `jobkey audit public-key` prints it). May be repeated.
    #[arg(long = "public-key", value_name = "KEY")]
    pub public_key: Vec<String>,
    /// A sequence number known to exist: a log that ends before it is
    /// truncated.
    #[arg(long, value_name = "N")]
    pub min_seq: Option<u64>,
    /// Older rotated files were archived elsewhere: a chain may start
    /// after seq 1 (its first file's first record is then taken as the
    /// start, unchecked). Files missing between two given ones are still
    /// reported.
    #[arg(long)]
    pub archived: bool,
    /// Verify only this replica's chain (the `replica` on its lines);
    /// needed with --checkpoint or --min-seq when the files hold several.
    #[arg(long, value_name = "ID")]
    pub replica: Option<String>,
}

/// The files `audit verify` reads: one file and its rotated files beside
/// it, or what [`LogSet::new`] makes of several paths or a directory.
fn verify_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    if let [one] = paths
        && !one.is_dir()
    {
        let mut files = crate::audit::rotated_files(one);
        files.sort();
        files.push(one.clone());
        return Ok(files);
    }
    Ok(LogSet::new(paths)
        .map_err(|e| e.to_string())?
        .files()
        .to_vec())
}

/// `jobkey audit verify`: each chain, its checkpoints, what is known from
/// outside the log, and a torn last line if there is one.
pub(super) fn verify(a: &VerifyArgs) -> Result<(), String> {
    let mut known = crate::audit::VerifyOptions {
        min_seq: a.min_seq,
        ..Default::default()
    };
    for k in &a.public_key {
        known
            .trusted
            .push(crate::audit::PublicKey::parse(k).map_err(|e| format!("--public-key: {e}"))?);
    }
    if let Some(c) = &a.checkpoint {
        known.checkpoint =
            Some(crate::audit::Checkpoint::from_arg(c).map_err(|e| format!("--checkpoint: {e}"))?);
    }
    let trusted = !known.trusted.is_empty() || known.checkpoint.is_some();
    let outside = known.checkpoint.is_some() || known.min_seq.is_some();
    let opts = crate::audit::SetOptions {
        known,
        archived: a.archived,
        replica: a.replica.clone(),
    };
    let files = verify_files(&a.files)?;
    let set = crate::audit::verify_set(&files, &opts).map_err(|e| e.to_string())?;
    if outside && !set.known_checked {
        let names: Vec<String> = set.chains.iter().map(|c| c.name()).collect();
        return Err(format!(
            "these files hold {} chains ({}): say which one --checkpoint or --min-seq is about with --replica",
            set.chains.len(),
            names.join("; ")
        ));
    }
    let single = set.chains.len() == 1 && set.chains[0].files.len() == 1 && set.empty.is_empty();
    let mut errors = Vec::new();
    for c in &set.chains {
        if single && c.outcome.is_ok() {
            let f = &c.files[0];
            println!(
                "{}: {} records, chain intact (last hash {})",
                f.path.display(),
                f.report.lines,
                f.report.last_hash
            );
        } else {
            for f in &c.files {
                println!(
                    "{}: seq {} to {} ({} records, {} checkpoint(s))",
                    f.path.display(),
                    f.report.first_seq,
                    f.report.last_seq(),
                    f.report.lines,
                    f.report.checkpoints
                );
            }
            match &c.outcome {
                Ok(()) => println!(
                    "{}: {} file(s), seq {} to {}: {} records, chain intact (last hash {})",
                    c.name(),
                    c.files.len(),
                    c.first_seq(),
                    c.last_seq(),
                    c.records(),
                    c.last_hash()
                ),
                Err(e) => {
                    println!("{}: BROKEN (see below)", c.name());
                    errors.push(if set.chains.len() > 1 {
                        format!("{}: {e}", c.name())
                    } else {
                        e.to_string()
                    });
                    continue;
                }
            }
        }
        match c.last_checkpoint() {
            Some(cp) => println!(
                "{} checkpoint(s) verified{}; the last signs seq {} (key id {}); {} record(s) after it are not signed yet",
                c.checkpoints(),
                if trusted {
                    " with the trusted key"
                } else {
                    " with the key each names (pass --public-key or --checkpoint to check the key)"
                },
                cp.seq,
                cp.key_id,
                c.since_checkpoint()
            ),
            None => println!("no checkpoints: records are not signed yet"),
        }
        if let Some(cp) = &opts.known.checkpoint {
            println!(
                "the external checkpoint (seq {}) is in the log: not truncated before it",
                cp.seq
            );
        }
        if opts.archived && c.first_seq() > 1 {
            println!(
                "the chain starts at seq {} (--archived: the files before it were not checked)",
                c.first_seq()
            );
        }
        if let Some((path, torn)) = c.torn() {
            torn_warning(path, torn);
        }
    }
    for (path, torn) in &set.empty {
        println!("{}: no records yet", path.display());
        if let Some(torn) = torn {
            torn_warning(path, torn);
        }
    }
    match errors.len() {
        0 => Ok(()),
        _ => Err(errors.join("\nerror: ")),
    }
}

fn torn_warning(path: &std::path::Path, torn: &crate::audit::TornLine) {
    eprintln!(
        "warning: {}: line {} ({} bytes) is torn and not part of the chain: {}. A write was cut off (a crash or a full disk); `jobkey serve` moves it to a file beside the log at its next start and records that",
        path.display(),
        torn.line,
        torn.bytes,
        torn.why
    );
}

/// Which logs to read.
#[derive(Debug, Args)]
pub struct Logs {
    /// Audit log files, or directories (their `*.jsonl*` files): a rotated
    /// set, or several replicas' logs, merged by time.
    #[arg(required_unless_present = "config")]
    pub logs: Vec<PathBuf>,
    /// The server config: its audit log and the rotated files beside it.
    #[arg(long, short, env = "JOBKEY_CONFIG")]
    pub config: Option<PathBuf>,
}

impl Logs {
    pub fn open(&self) -> Result<LogSet, String> {
        if !self.logs.is_empty() {
            return LogSet::new(&self.logs).map_err(|e| e.to_string());
        }
        let Some(c) = &self.config else {
            return Err("give audit log files, or --config FILE".into());
        };
        let cfg = crate::config::Config::load(c).map_err(|e| e.to_string())?;
        LogSet::rotated(&cfg.audit_path).map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TableOrJsonLines {
    Table,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Allow,
    Deny,
    Error,
}

/// `jobkey audit query`'s filters.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub logs: Logs,
    /// From this instant: RFC 3339, or a duration before now (1h, 7d).
    #[arg(long)]
    pub since: Option<String>,
    /// Before this instant: RFC 3339, or a duration before now.
    #[arg(long)]
    pub until: Option<String>,
    #[arg(long = "env")]
    pub environment: Option<String>,
    /// The issuer's configured name.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The repository, project or pipeline, exactly (`acme/api`).
    #[arg(long, alias = "project")]
    pub repository: Option<String>,
    #[arg(long, value_enum)]
    pub decision: Option<DecisionArg>,
    /// The error code the caller got (`no_rule_matched`, `bad_signature`).
    #[arg(long)]
    pub code: Option<String>,
    /// A credential asked for or issued.
    #[arg(long)]
    pub credential: Option<String>,
    /// A rule that issued a credential or denied the request.
    #[arg(long)]
    pub rule: Option<String>,
    /// A request id: its line, the revocations that name it, the summary
    /// that counted it.
    #[arg(long)]
    pub request_id: Option<String>,
    #[arg(long, value_enum, default_value_t = TableOrJsonLines::Table)]
    pub format: TableOrJsonLines,
    /// Report progress on stderr (every 64 MiB read); the default when
    /// stderr is a terminal.
    #[arg(long)]
    pub progress: bool,
}

const PROGRESS_EVERY: u64 = 64 * 1024 * 1024;

/// Prints "read N MiB of M MiB" on stderr each time another
/// [`PROGRESS_EVERY`] bytes have been read.
pub(super) struct Progress {
    on: bool,
    total: u64,
    next: u64,
}

impl Progress {
    pub(super) fn new(on: bool, set: &LogSet) -> Progress {
        Progress {
            on: on || std::io::stderr().is_terminal(),
            total: set.total_bytes(),
            next: PROGRESS_EVERY,
        }
    }

    pub(super) fn update(&mut self, read: u64) {
        if self.on && read >= self.next {
            eprintln!(
                "progress: read {} MiB of {} MiB",
                read / (1024 * 1024),
                self.total / (1024 * 1024)
            );
            while self.next <= read {
                self.next += PROGRESS_EVERY;
            }
        }
    }
}

fn unreadable_warning(set: &LogSet, unreadable: &[(usize, usize)]) {
    if let Some((f, line)) = unreadable.first() {
        eprintln!(
            "warning: {} line(s) are not audit records and were skipped (first: {} line {}); run `jobkey audit verify`",
            unreadable.len(),
            set.files()[*f].display(),
            line
        );
    }
}

/// `jobkey audit query`. Exit status: `Ok(true)` when a record matched.
pub(super) fn query(a: &QueryArgs) -> Result<bool, String> {
    let set = a.logs.open()?;
    let now = SystemTime::now();
    let filter = Filter {
        since_ms: a
            .since
            .as_deref()
            .map(|s| parse_since(s, now))
            .transpose()
            .map_err(|e| format!("--since {e}"))?,
        until_ms: a
            .until
            .as_deref()
            .map(|s| parse_since(s, now))
            .transpose()
            .map_err(|e| format!("--until {e}"))?,
        environment: a.environment.clone(),
        issuer: a.issuer.clone(),
        repository: a.repository.clone(),
        decision: a.decision.map(|d| match d {
            DecisionArg::Allow => Decision::Allow,
            DecisionArg::Deny => Decision::Deny,
            DecisionArg::Error => Decision::Error,
        }),
        code: a.code.clone(),
        credential: a.credential.clone(),
        rule: a.rule.clone(),
        request_id: a.request_id.clone(),
    };
    let mut progress = Progress::new(a.progress, &set);
    let names: Vec<String> = set
        .files()
        .iter()
        .map(|f| f.display().to_string())
        .collect();
    let mut records = set.records().map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if matches!(a.format, TableOrJsonLines::Table) {
        let _ = writeln!(out, "{TABLE_HEADER}");
    }
    let mut matched = false;
    let mut n: u64 = 0;
    while let Some(r) = records.next_record().map_err(|e| e.to_string())? {
        n += 1;
        if n.is_multiple_of(4096) {
            progress.update(records.bytes_read());
        }
        if !filter.matches(&r) {
            continue;
        }
        matched = true;
        let line = match a.format {
            TableOrJsonLines::Table => table_row(&r),
            TableOrJsonLines::Json => {
                serde_json::to_string(&JsonRow::new(&set, &names[r.file], &r))
                    .map_err(|e| e.to_string())?
            }
        };
        if writeln!(out, "{line}").is_err() {
            // stdout closed (`| head`): stop reading.
            break;
        }
    }
    let _ = out.flush();
    unreadable_warning(&set, &records.unreadable);
    Ok(matched)
}

/// `jobkey audit show`'s arguments.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The request id (from the job's error message or jobkey's log).
    pub request_id: String,
    #[command(flatten)]
    pub logs: Logs,
    /// Decide the recorded request again under these policies and show
    /// every rule's first failing condition, with expected and actual
    /// values (issuers from --config or --issuer).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// An issuer as NAME=URL or NAME=PROVIDER:URL (repeatable), for
    /// --policies without --config.
    #[arg(long = "issuer", value_name = "NAME=[PROVIDER:]URL")]
    pub issuers: Vec<String>,
}

/// `jobkey audit show`. `Ok(false)`: no record of that request.
pub(super) fn show(a: &ShowArgs) -> Result<bool, String> {
    let set = a.logs.open()?;
    let story = Story::gather(&set, &a.request_id).map_err(|e| e.to_string())?;
    if story.is_empty() {
        println!("no record of request {}", a.request_id);
        return Ok(false);
    }
    let mut out = String::new();
    for r in &story.request {
        describe(&mut out, &set, r);
    }
    if let Some(e) = story.exchange()
        && e.decision() != Some(Decision::Allow)
    {
        match &a.policies {
            Some(dir) => out.push_str(&reexplain(a, dir, e)?),
            None => {
                out.push_str("  (give --policies DIR to see every rule's first failing condition under those policies)\n");
            }
        }
    }
    if story
        .exchange()
        .is_some_and(|e| !e.credentials().is_empty())
    {
        if story.revocations.is_empty() {
            out.push_str("revocations: none recorded (the credentials expire at their TTL)\n");
        }
        for r in &story.revocations {
            out.push_str("revoked by:\n");
            describe(&mut out, &set, r);
        }
    }
    for r in &story.summaries {
        out.push_str("counted in a summary of repeated refusals:\n");
        describe(&mut out, &set, r);
    }
    print!("{out}");
    Ok(true)
}

fn describe(out: &mut String, set: &LogSet, r: &Record) {
    use std::fmt::Write as _;
    let file = set.files()[r.file].display();
    let seq = r.seq.map(|s| format!("seq {s}, ")).unwrap_or_default();
    let Some(e) = r.event() else {
        let _ = writeln!(out, "{} line ({seq}{file}:{})", r.kind(), r.line);
        return;
    };
    let _ = writeln!(
        out,
        "{} {} {} at {} ({seq}{file}:{})",
        crate::audit::query::action_name(e.action()),
        e.request_id(),
        e.decision().map_or("-", crate::audit::query::decision_name),
        e.time(),
        r.line
    );
    if let Some(env) = e.environment() {
        let _ = writeln!(out, "  environment: {env}");
    }
    if let Some(src) = e.source() {
        let _ = writeln!(out, "  source: {src}");
    }
    if let Some(i) = e.identity() {
        let _ = writeln!(
            out,
            "  identity: issuer {}, {}",
            i.issuer().unwrap_or("(not established)"),
            if i.is_verified() {
                "verified"
            } else {
                "NOT verified (claims as the caller wrote them)"
            }
        );
        for (k, v) in i.claims() {
            let _ = writeln!(out, "    {k} = {}", v.to_text());
        }
    }
    if e.action() == Action::Exchange && !e.requested().is_empty() {
        let _ = writeln!(out, "  requested: {}", e.requested().join(", "));
    }
    for c in e.credentials() {
        let _ = writeln!(
            out,
            "  issued: {} ({}) by rule `{}`, ttl {}s{}",
            c.name,
            c.kind,
            c.rule,
            c.ttl_s,
            if c.wrapped { ", wrapped" } else { "" }
        );
    }
    if let Some(n) = e.revoked() {
        let _ = writeln!(out, "  revoked items: {n}");
    }
    if let Some(x) = e.exchange_id() {
        let _ = writeln!(out, "  exchange: {x}");
    }
    if let Some(code) = e.code() {
        let stage = e
            .stage()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(out, "  refused at stage `{stage}` with `{code}`");
    }
    if let Some(reason) = e.reason() {
        let _ = writeln!(out, "  recorded reason:");
        for line in recorded_reason(reason) {
            let _ = writeln!(out, "    {line}");
        }
    }
    if let Some(s) = e.summary() {
        let _ = writeln!(
            out,
            "  {} refusal(s) from {} to {} ({} … {})",
            s.count, s.first, s.last, s.first_request_id, s.last_request_id
        );
    }
}

/// A recorded reason: a policy denial's rule failures one per line, any
/// other reason as JSON.
fn recorded_reason(reason: &serde_json::Value) -> Vec<String> {
    let failures = reason
        .get("failures")
        .and_then(|f| serde_json::from_value::<Vec<RecordedFailure>>(f.clone()).ok());
    let mut lines = Vec::new();
    if let Some(kind) = reason.get("kind").and_then(|k| k.as_str()) {
        lines.push(format!("kind: {kind}"));
    }
    match failures {
        Some(fs) => {
            for f in fs {
                lines.push(format!("rule `{}`: {}", f.rule, f.failed.describe()));
            }
        }
        None => lines.push(reason.to_string()),
    }
    lines
}

#[derive(serde::Deserialize)]
struct RecordedFailure {
    rule: String,
    failed: RecordedCondition,
}

#[derive(serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum RecordedCondition {
    Issuer {
        expected: String,
        actual: String,
    },
    Claim {
        claim: String,
        expected: String,
        actual: Option<String>,
    },
}

impl RecordedCondition {
    fn describe(&self) -> String {
        match self {
            RecordedCondition::Issuer { expected, actual } => {
                format!("issuer: expected `{expected}`, got `{actual}`")
            }
            RecordedCondition::Claim {
                claim,
                expected,
                actual: Some(a),
            } => format!("claim `{claim}`: expected {expected}, got {a:?}"),
            RecordedCondition::Claim {
                claim, expected, ..
            } => format!("claim `{claim}`: expected {expected}, but the token had no such claim"),
        }
    }
}

/// The recorded request decided again under `dir`'s policies.
fn reexplain(a: &ShowArgs, dir: &std::path::Path, e: &Event) -> Result<String, String> {
    use crate::policy::tools::{explain, replay};
    let source = Source {
        config: a.logs.config.clone(),
        policies: Some(dir.to_owned()),
        issuers: a.issuers.clone(),
    };
    let l = source.load()?;
    let mut out = format!("under the policies in {}:\n", dir.display());
    let Some((_, claims, issuer)) = replay::recorded(e) else {
        out.push_str(
            "  not replayable: the request did not reach the policy with a verified identity\n",
        );
        return Ok(out);
    };
    let req = crate::policy::Request {
        environment: e.environment().unwrap_or_default(),
        issuer,
        claims: &claims,
        credentials: e.requested(),
    };
    let x = l.set.explain(&req);
    out.push_str(&format!(
        "  decision: {}\n",
        explain::describe_decision(&x.decision)
    ));
    for line in explain::explain_lines(&x) {
        out.push_str(&format!("  {line}\n"));
    }
    Ok(out)
}

/// `jobkey audit export`'s arguments.
#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub logs: Logs,
    #[arg(long, value_enum, default_value_t = ExportFormat::Ocsf)]
    pub format: ExportFormat,
    /// From this instant: RFC 3339, or a duration before now (1h, 7d).
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// OCSF Authentication (exchanges) and API Activity (revocations)
    /// events, one JSON object per line.
    Ocsf,
}

/// `jobkey audit export`.
pub(super) fn export(a: &ExportArgs) -> Result<(), String> {
    let set = a.logs.open()?;
    let since = a
        .since
        .as_deref()
        .map(|s| parse_since(s, SystemTime::now()))
        .transpose()
        .map_err(|e| format!("--since {e}"))?;
    let mut records = set.records().map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut skipped = 0u64;
    while let Some(r) = records.next_record().map_err(|e| e.to_string())? {
        if since.is_some_and(|s| r.time_ms < s) {
            continue;
        }
        match crate::audit::export::to_ocsf(&r) {
            Some(o) => {
                let line = serde_json::to_string(&o).map_err(|e| e.to_string())?;
                if writeln!(out, "{line}").is_err() {
                    break;
                }
            }
            None => skipped += 1,
        }
    }
    let _ = out.flush();
    if skipped > 0 {
        eprintln!("{skipped} line(s) of the log's own (no OCSF counterpart) were not exported");
    }
    unreadable_warning(&set, &records.unreadable);
    Ok(())
}
