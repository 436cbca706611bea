//! Reading audit logs back for people: `jobkey audit query`, `audit show`,
//! `audit export`, the review page and the policy backtest.
//!
//! A [`LogSet`] is one or more log files (a rotated set, or several
//! replicas' logs; a directory stands for the `*.jsonl*` files in it),
//! read line by line and merged by time ([`Records`]). Each line is read
//! as an [`Event`]; a JSON object that is not one (a line kind this version
//! does not know, such as a checkpoint) becomes [`Entry::Other`] with its
//! kind, and a line that is not JSON at all is counted as unreadable
//! (`jobkey audit verify` says more). Nothing here writes.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;

use super::{Action, AuditError, Decision, Event};
use crate::provider::{Provider, Role};

/// What one line holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Event(Box<Event>),
    /// A JSON object that is not an [`Event`] this version knows: its
    /// `kind` (or `action`, `type`; `unknown` when none) and the object.
    Other {
        kind: String,
        value: Value,
    },
}

/// One line of one log, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Index into [`LogSet::files`].
    pub file: usize,
    /// Line number in that file (from 1).
    pub line: usize,
    pub seq: Option<u64>,
    /// The line's `time`, in milliseconds since the epoch (0 when it has
    /// none or it does not parse).
    pub time_ms: u64,
    pub entry: Entry,
}

impl Record {
    pub fn event(&self) -> Option<&Event> {
        match &self.entry {
            Entry::Event(e) => Some(e),
            Entry::Other { .. } => None,
        }
    }

    /// The line's kind: the event's action, or the other line's kind.
    pub fn kind(&self) -> String {
        match &self.entry {
            Entry::Event(e) => action_name(e.action()).to_owned(),
            Entry::Other { kind, .. } => kind.clone(),
        }
    }
}

/// The snake_case name of an action, as written in the log.
pub(crate) fn action_name(a: Action) -> &'static str {
    match a {
        Action::Exchange => "exchange",
        Action::Revoke => "revoke",
        Action::RefusalsSummarized => "refusals_summarized",
        Action::LogRecovered => "log_recovered",
        Action::LogResumed => "log_resumed",
        Action::Checkpoint => "checkpoint",
    }
}

/// The snake_case name of a decision, as written in the log.
pub(crate) fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::Error => "error",
    }
}

/// The log files to read.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSet {
    files: Vec<PathBuf>,
}

impl LogSet {
    /// `paths`: files, or directories standing for the files in them whose
    /// name contains `.jsonl` (torn lines set aside, `*.torn-*`, are not
    /// log files). At least one file.
    pub fn new(paths: &[PathBuf]) -> Result<LogSet, AuditError> {
        let mut files = Vec::new();
        for p in paths {
            let meta = std::fs::metadata(p).map_err(|e| io(p, &e))?;
            if meta.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| io(p, &e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| is_log_name(f) && f.is_file())
                    .collect();
                found.sort();
                files.extend(found);
            } else {
                files.push(p.clone());
            }
        }
        if files.is_empty() {
            return Err(AuditError::Io {
                path: paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason: "no audit log files (a directory's are its `*.jsonl*` files)".into(),
            });
        }
        Ok(LogSet { files })
    }

    /// A served log and its rotated files beside it (`audit.jsonl`,
    /// `audit.jsonl.1`, `audit.jsonl.2025-…`): the files in its directory
    /// whose name starts with the log's, and the files jobkey rotated
    /// (`<log>.20261201T171500Z`, whatever the log's name).
    pub fn rotated(path: &Path) -> Result<LogSet, AuditError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let mut files: Vec<PathBuf> = match (std::fs::read_dir(dir), name) {
            (Ok(entries), Some(name)) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&name))
                        && is_log_name(f)
                        && f.is_file()
                })
                .collect(),
            _ => Vec::new(),
        };
        for f in super::rotated_files(path) {
            if !files.contains(&f) {
                files.push(f);
            }
        }
        if !files.iter().any(|f| f == path) {
            files.push(path.to_owned());
        }
        files.sort();
        Ok(LogSet { files })
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Their total size, in bytes (for progress).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Opens every file; the records come merged by time.
    pub fn records(&self) -> Result<Records, AuditError> {
        let mut readers = Vec::with_capacity(self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            let (file, _) = crate::files::open_regular(f).map_err(|e| AuditError::Io {
                path: f.display().to_string(),
                reason: e.reason(),
            })?;
            readers.push(FileReader {
                index: i,
                path: f.clone(),
                reader: BufReader::with_capacity(256 * 1024, file),
                line: 0,
                buf: String::new(),
                next: None,
                done: false,
            });
        }
        Ok(Records {
            readers,
            bytes_read: 0,
            unreadable: Vec::new(),
        })
    }
}

/// `audit.jsonl`, or a rotated one: `audit.jsonl.` and a number or a
/// timestamp (`audit.jsonl.1`, `audit.jsonl.2026-12-01T16:00:00Z`). The
/// files jobkey keeps beside the log are not logs: its keys
/// (`audit.jsonl.key`, `audit.jsonl.checkpoint-key`) and set-aside torn
/// lines (`audit.jsonl.torn-…`).
fn is_log_name(f: &Path) -> bool {
    f.file_name().is_some_and(|n| {
        let n = n.to_string_lossy();
        let Some(at) = n.find(".jsonl") else {
            return false;
        };
        match &n[at + ".jsonl".len()..] {
            "" => true,
            rest => rest.strip_prefix('.').is_some_and(|suffix| {
                !suffix.is_empty()
                    && suffix
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, 'T' | 'Z' | ':' | '-' | '.'))
            }),
        }
    })
}

fn io(p: &Path, e: &std::io::Error) -> AuditError {
    AuditError::Io {
        path: p.display().to_string(),
        reason: e.to_string(),
    }
}

struct FileReader {
    index: usize,
    path: PathBuf,
    reader: BufReader<File>,
    line: usize,
    buf: String,
    next: Option<Record>,
    done: bool,
}

/// The line's `seq`, without parsing it again: the last `"seq":` in the
/// text (a quote inside a JSON string is escaped, so this is a key; the
/// log's keys are sorted but for `hash`, written last, and no field after
/// `seq` holds one).
fn seq_of(text: &str) -> Option<u64> {
    let at = text.rfind("\"seq\":")? + 6;
    let digits = text[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    digits.parse().ok()
}

impl FileReader {
    /// Fills `next` with the file's next record, if any. Returns the bytes
    /// read and the line numbers that were not JSON objects.
    fn fill(&mut self, unreadable: &mut Vec<(usize, usize)>) -> Result<u64, AuditError> {
        let mut bytes = 0;
        while self.next.is_none() && !self.done {
            self.buf.clear();
            let n = self
                .reader
                .read_line(&mut self.buf)
                .map_err(|e| io(&self.path, &e))?;
            bytes += n as u64;
            if n == 0 {
                self.done = true;
                break;
            }
            self.line += 1;
            let text = self.buf.trim_end();
            if text.is_empty() {
                continue;
            }
            match parse_line(text) {
                Some((seq, time_ms, entry)) => {
                    self.next = Some(Record {
                        file: self.index,
                        line: self.line,
                        seq,
                        time_ms,
                        entry,
                    })
                }
                None => unreadable.push((self.index, self.line)),
            }
        }
        Ok(bytes)
    }
}

/// One line: its `seq`, its time and what it holds; `None` when it is not
/// a JSON object.
pub(crate) fn parse_line(text: &str) -> Option<(Option<u64>, u64, Entry)> {
    // A line of a kind this version does not know may still read as an
    // `Event` (every field but `time` has a default): a request always
    // has an id and a decision, so one without both is not a request.
    if let Ok(event) = serde_json::from_str::<Event>(text)
        && (event.decision().is_some()
            || !event.request_id().is_empty()
            || !matches!(event.action(), Action::Exchange | Action::Revoke))
    {
        let seq = seq_of(text);
        let t = time_ms(event.time());
        return Some((seq, t, Entry::Event(Box::new(event))));
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let kind = ["kind", "action", "type"]
        .iter()
        .find_map(|k| map.get(*k).and_then(Value::as_str))
        .unwrap_or("unknown")
        .to_owned();
    let seq = map.get("seq").and_then(Value::as_u64);
    let t = map.get("time").and_then(Value::as_str).map_or(0, time_ms);
    Some((
        seq,
        t,
        Entry::Other {
            kind,
            value: Value::Object(map),
        },
    ))
}

/// RFC 3339 → milliseconds since the epoch; 0 when it does not parse.
pub(crate) fn time_ms(text: &str) -> u64 {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The records of a [`LogSet`], merged by time (within one file, in file
/// order; lines of the same millisecond by seq, then in file order).
pub struct Records {
    readers: Vec<FileReader>,
    bytes_read: u64,
    /// (file index, line) of the lines that are not JSON objects.
    pub unreadable: Vec<(usize, usize)>,
}

impl Records {
    /// The next record by time, or `None` at the end of every file.
    pub fn next_record(&mut self) -> Result<Option<Record>, AuditError> {
        let mut best: Option<usize> = None;
        for i in 0..self.readers.len() {
            let r = &mut self.readers[i];
            self.bytes_read += r.fill(&mut self.unreadable)?;
            if let Some(rec) = &self.readers[i].next {
                let better = match best {
                    None => true,
                    // Same millisecond: the lower seq first. A rotated
                    // file sorts after its live file, and records of one
                    // chain must still come out in chain order.
                    Some(b) => self.readers[b].next.as_ref().is_some_and(|cur| {
                        let key = |r: &Record| (r.time_ms, r.seq.unwrap_or(u64::MAX));
                        rec.time_ms != 0 && cur.time_ms != 0 && key(rec) < key(cur)
                    }),
                };
                if better {
                    best = Some(i);
                }
            }
        }
        Ok(best.and_then(|b| self.readers[b].next.take()))
    }

    /// Bytes read so far, over every file.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }
}

/// Which records `audit query` keeps. Every field set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Filter {
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    pub environment: Option<String>,
    /// The issuer's configured name.
    pub issuer: Option<String>,
    /// A claim naming the repository, project or pipeline
    /// (`repository`, `project_path`, …), exactly.
    pub repository: Option<String>,
    pub decision: Option<Decision>,
    /// The error code the caller got.
    pub code: Option<String>,
    /// A credential asked for or issued.
    pub credential: Option<String>,
    /// A rule that issued a credential or denied the request.
    pub rule: Option<String>,
    /// The request's id, a revocation's exchange, or a summary's first or
    /// last request.
    pub request_id: Option<String>,
}

impl Filter {
    /// Whether a field other than the time range is set (lines that are
    /// not events then never match).
    fn looks_inside(&self) -> bool {
        self.environment.is_some()
            || self.issuer.is_some()
            || self.repository.is_some()
            || self.decision.is_some()
            || self.code.is_some()
            || self.credential.is_some()
            || self.rule.is_some()
            || self.request_id.is_some()
    }

    pub(crate) fn matches(&self, r: &Record) -> bool {
        if self.since_ms.is_some_and(|s| r.time_ms < s) {
            return false;
        }
        if self.until_ms.is_some_and(|u| r.time_ms >= u) {
            return false;
        }
        let Some(e) = r.event() else {
            return !self.looks_inside();
        };
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        if !eq(&self.environment, e.environment()) || !eq(&self.code, e.code()) {
            return false;
        }
        if self.decision.is_some() && e.decision() != self.decision {
            return false;
        }
        if !eq(&self.issuer, e.identity().and_then(|i| i.issuer())) {
            return false;
        }
        if let Some(repo) = &self.repository
            && !repositories(e).any(|r| r == repo)
        {
            return false;
        }
        if let Some(c) = &self.credential
            && !e.requested().iter().any(|n| n == c)
            && !e.credentials().iter().any(|i| &i.name == c)
        {
            return false;
        }
        if let Some(rule) = &self.rule
            && !e.credentials().iter().any(|i| &i.rule == rule)
            && denied_by_rule(e) != Some(rule.as_str())
        {
            return false;
        }
        if let Some(id) = &self.request_id {
            let s = e.summary();
            let hit = e.request_id() == id
                || e.exchange_id() == Some(id.as_str())
                || s.is_some_and(|s| &s.first_request_id == id || &s.last_request_id == id);
            if !hit {
                return false;
            }
        }
        true
    }
}

/// The identity's claims that name a repository, project or pipeline.
pub(crate) fn repositories(e: &Event) -> impl Iterator<Item = &str> {
    e.identity().into_iter().flat_map(|i| {
        i.claims().iter().filter_map(|(k, v)| match v {
            super::ClaimValue::String(s)
                if Provider::Generic.role_of(k) == Some(Role::Repository) =>
            {
                Some(s.as_str())
            }
            _ => None,
        })
    })
}

/// Who made the request, in a few words: `issuer:repository` (or the
/// subject), `?` when unknown; `(unverified)` marks claims nobody proved.
pub(crate) fn who(e: &Event) -> String {
    let Some(i) = e.identity() else {
        return "?".into();
    };
    let name = ["repository", "project_path"]
        .iter()
        .find_map(|k| i.claim(k).map(|v| v.to_text()))
        .or_else(|| repositories(e).next().map(str::to_owned))
        .or_else(|| i.claim("sub").map(|v| v.to_text()))
        .unwrap_or_else(|| "?".into());
    match (i.issuer(), i.is_verified()) {
        (Some(iss), true) => format!("{iss}:{name}"),
        _ => format!("{name} (unverified)"),
    }
}

/// A policy denial's deny rule (`reason.kind = denied_by_rule`).
pub(crate) fn denied_by_rule(e: &Event) -> Option<&str> {
    let r = e.reason()?;
    (r.get("kind")?.as_str()? == "denied_by_rule").then_some(())?;
    r.get("rule")?.as_str()
}

/// `--since`: RFC 3339, or a duration before `now` (`1h`, `30m`, `7d`).
pub(crate) fn parse_since(text: &str, now: SystemTime) -> Result<u64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64));
    }
    let d: Duration = humantime::parse_duration(text).map_err(|e| {
        format!("{text:?}: {e}; write RFC 3339 (2025-11-27T21:40:12Z) or a duration (1h, 30m, 7d)")
    })?;
    let t = now.checked_sub(d).unwrap_or(UNIX_EPOCH);
    Ok(t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64))
}

/// A record as `audit query --format json` writes it: the line's own
/// fields, and which log it came from.
#[derive(Debug, Serialize)]
pub(crate) struct JsonRow<'a> {
    pub log: &'a str,
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<&'a Event>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<&'a Value>,
}

impl<'a> JsonRow<'a> {
    pub(crate) fn new(set: &'a LogSet, log: &'a str, r: &'a Record) -> JsonRow<'a> {
        let _ = set;
        let (event, other) = match &r.entry {
            Entry::Event(e) => (Some(e.as_ref()), None),
            Entry::Other { value, .. } => (None, Some(value)),
        };
        JsonRow {
            log,
            line: r.line,
            seq: r.seq,
            event,
            other,
        }
    }
}

/// The table's header, for [`table_row`].
pub(crate) const TABLE_HEADER: &str = "TIME                      REQUEST                           ACTION    DECISION  ENVIRONMENT   REPLICA      WHO / WHAT";

/// One record as a table row.
pub(crate) fn table_row(r: &Record) -> String {
    let Some(e) = r.event() else {
        return format!("{:<25} {:<33} {}", time_of(r), "-", r.kind());
    };
    let what = match (e.action(), e.decision()) {
        (Action::Exchange, Some(Decision::Allow)) => e
            .credentials()
            .iter()
            .map(|c| format!("{} ({}, {}s)", c.name, c.rule, c.ttl_s))
            .collect::<Vec<_>>()
            .join(", "),
        (Action::Revoke, _) => format!(
            "exchange {} ({} revoked)",
            e.exchange_id().unwrap_or("?"),
            e.revoked().unwrap_or(0)
        ),
        (Action::RefusalsSummarized, _) => e.summary().map_or(String::new(), |s| {
            format!(
                "{} more {} refusals ({} … {})",
                s.count,
                action_name(s.of),
                s.first_request_id,
                s.last_request_id
            )
        }),
        _ => String::new(),
    };
    let code = e.code().map(|c| format!("{c}: ")).unwrap_or_default();
    let id = match e.request_id() {
        "" => "-",
        id => id,
    };
    format!(
        "{:<25} {:<33} {:<9} {:<9} {:<13} {:<12} {} {}{}",
        time_of(r),
        id,
        action_name(e.action()),
        e.decision().map_or("-", decision_name),
        e.environment().unwrap_or("-"),
        e.replica().unwrap_or("-"),
        who(e),
        code,
        what
    )
    .trim_end()
    .to_owned()
}

fn time_of(r: &Record) -> String {
    match &r.entry {
        Entry::Event(e) => e.time().to_owned(),
        Entry::Other { value, .. } => value
            .get("time")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned(),
    }
}

/// Everything the logs say about one request: its own lines, the
/// revocations that name it, and the summaries that counted it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Story {
    pub request: Vec<Record>,
    pub revocations: Vec<Record>,
    pub summaries: Vec<Record>,
}

impl Story {
    /// Reads every record of `set` for `request_id`.
    pub(crate) fn gather(set: &LogSet, request_id: &str) -> Result<Story, AuditError> {
        let mut story = Story::default();
        let mut records = set.records()?;
        while let Some(r) = records.next_record()? {
            let Some(e) = r.event() else { continue };
            if e.request_id() == request_id {
                story.request.push(r);
            } else if e.action() == Action::Revoke && e.exchange_id() == Some(request_id) {
                story.revocations.push(r);
            } else if e.summary().is_some_and(|s| {
                s.first_request_id == request_id || s.last_request_id == request_id
            }) {
                story.summaries.push(r);
            }
        }
        Ok(story)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.request.is_empty() && self.summaries.is_empty()
    }

    /// The request's exchange line, if it is one.
    pub(crate) fn exchange(&self) -> Option<&Event> {
        self.request
            .iter()
            .filter_map(Record::event)
            .find(|e| e.action() == Action::Exchange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_told_from_the_files_kept_beside_them() {
        let table = [
            ("audit.jsonl", true),
            ("audit.jsonl.1", true),
            ("audit.jsonl.2026-12-01T16:00:00Z", true),
            ("replica-b.jsonl", true),
            ("audit.jsonl.key", false),
            ("audit.jsonl.checkpoint-key", false),
            ("audit.jsonl.torn-2026-12-01T16:00:00Z", false),
            ("audit.jsonl.", false),
            ("notes.txt", false),
        ];
        for (name, want) in table {
            assert_eq!(is_log_name(Path::new(name)), want, "{name}");
        }
    }

    fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    }

    const ALLOW: &str = r#"{"seq":1,"time":"2025-01-01T10:00:00.000Z","request_id":"r1","action":"exchange","decision":"allow","environment":"production","requested":[],"identity":{"issuer":"github","verified":true,"repository":"acme/api","sub":"repo:acme/api"},"credentials":[{"name":"db","rule":"deploy","kind":"kv","ttl_s":300,"wrapped":false,"fingerprints":{}}],"revocable":0,"prev":"0","hash":"1"}"#;
    const DENY: &str = r#"{"seq":2,"time":"2025-01-01T12:00:00.000Z","request_id":"r2","action":"exchange","decision":"deny","stage":"policy","code":"denied_by_rule","reason":{"kind":"denied_by_rule","rule":"no-forks"},"environment":"staging","requested":["cfg"],"identity":{"issuer":"gitlab","verified":true,"project_path":"acme/web"}}"#;
    const REVOKE: &str = r#"{"seq":3,"time":"2025-01-01T10:05:00.000Z","request_id":"r3","action":"revoke","decision":"allow","exchange":"r1","revoked":1,"auth":"handle","environment":"production"}"#;
    const CHECKPOINT: &str =
        r#"{"seq":4,"time":"2025-01-01T11:00:00.000Z","kind":"checkpoint","hash":"abc"}"#;

    #[test]
    fn several_files_merge_by_time_and_unknown_kinds_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.jsonl", &[ALLOW, DENY]);
        write(dir.path(), "b.jsonl.1", &[REVOKE, CHECKPOINT, "not json"]);
        write(dir.path(), "a.jsonl.torn-1", &["{"]);
        let set = LogSet::new(&[dir.path().to_owned()]).unwrap();
        assert_eq!(set.files().len(), 2, "{:?}", set.files());
        let mut recs = set.records().unwrap();
        let mut kinds = Vec::new();
        while let Some(r) = recs.next_record().unwrap() {
            kinds.push(r.kind());
        }
        assert_eq!(kinds, ["exchange", "revoke", "checkpoint", "exchange"]);
        assert_eq!(recs.unreadable, vec![(1, 3)]);
    }

    /// Regression: the live file sorts before its rotated ones, and a
    /// rotation's last record and the live file's first could share a
    /// millisecond; they came out against the chain's order.
    #[test]
    fn records_of_the_same_millisecond_come_out_in_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let at = |seq: u64| {
            format!(r#"{{"seq":{seq},"time":"2025-01-01T10:00:00.000Z","kind":"checkpoint"}}"#)
        };
        let (one, two, three) = (at(1), at(2), at(3));
        write(dir.path(), "audit.jsonl", &[&three]);
        write(dir.path(), "audit.jsonl.20250101T100000Z", &[&one, &two]);
        let set = LogSet::new(&[dir.path().to_owned()]).unwrap();
        assert!(set.files()[0].ends_with("audit.jsonl"), "{:?}", set.files());
        let mut recs = set.records().unwrap();
        let mut seqs = Vec::new();
        while let Some(r) = recs.next_record().unwrap() {
            seqs.push(r.seq.unwrap());
        }
        assert_eq!(seqs, [1, 2, 3]);
    }

    #[test]
    fn filters_select_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = write(
            dir.path(),
            "audit.jsonl",
            &[ALLOW, REVOKE, CHECKPOINT, DENY],
        );
        let set = LogSet::new(&[log]).unwrap();
        let ids = |f: Filter| {
            let mut recs = set.records().unwrap();
            let mut out = Vec::new();
            while let Some(r) = recs.next_record().unwrap() {
                if f.matches(&r) {
                    out.push(r.event().map_or(r.kind(), |e| e.request_id().to_owned()));
                }
            }
            out
        };
        let t = |s: &str| Some(time_ms(s));
        let cases: Vec<(Filter, Vec<&str>)> = vec![
            (Filter::default(), vec!["r1", "r3", "checkpoint", "r2"]),
            (
                Filter {
                    since_ms: t("2025-01-01T10:01:00Z"),
                    until_ms: t("2025-01-01T11:30:00Z"),
                    ..Filter::default()
                },
                vec!["r3", "checkpoint"],
            ),
            (
                Filter {
                    environment: Some("production".into()),
                    ..Filter::default()
                },
                vec!["r1", "r3"],
            ),
            (
                Filter {
                    issuer: Some("gitlab".into()),
                    ..Filter::default()
                },
                vec!["r2"],
            ),
            (
                Filter {
                    repository: Some("acme/web".into()),
                    ..Filter::default()
                },
                vec!["r2"],
            ),
            (
                Filter {
                    decision: Some(Decision::Deny),
                    ..Filter::default()
                },
                vec!["r2"],
            ),
            (
                Filter {
                    code: Some("denied_by_rule".into()),
                    ..Filter::default()
                },
                vec!["r2"],
            ),
            (
                Filter {
                    credential: Some("db".into()),
                    ..Filter::default()
                },
                vec!["r1"],
            ),
            (
                Filter {
                    rule: Some("no-forks".into()),
                    ..Filter::default()
                },
                vec!["r2"],
            ),
            (
                Filter {
                    request_id: Some("r1".into()),
                    ..Filter::default()
                },
                vec!["r1", "r3"],
            ),
        ];
        for (f, want) in cases {
            assert_eq!(ids(f.clone()), want, "{f:?}");
        }
    }

    #[test]
    fn a_story_follows_the_revocation_that_names_the_exchange() {
        let dir = tempfile::tempdir().unwrap();
        let log = write(dir.path(), "audit.jsonl", &[ALLOW, REVOKE, DENY]);
        let story = Story::gather(&LogSet::new(&[log]).unwrap(), "r1").unwrap();
        assert_eq!(story.request.len(), 1);
        assert_eq!(story.revocations.len(), 1);
        assert_eq!(story.exchange().unwrap().credentials()[0].rule, "deploy");
        assert!(
            Story::gather(
                &LogSet::new(&[dir.path().join("audit.jsonl")]).unwrap(),
                "nope"
            )
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn since_takes_rfc3339_or_a_duration() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(parse_since("1h", now).unwrap(), 6_400_000);
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now).unwrap(), 1000);
        assert!(
            parse_since("yesterday", now)
                .unwrap_err()
                .contains("RFC 3339")
        );
    }
}
