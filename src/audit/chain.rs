//! The hash chain and its verification.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use ring::digest;
use serde_json::{Map, Value};

use super::AuditError;
use super::checkpoint::{Checkpoint, PublicKey};

/// `prev` of the first line.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over `prev`, a newline, and the record's canonical JSON
/// (`canonical`: its object without the `hash` field, keys sorted, as
/// [`canonical`] makes it).
pub(super) fn hash_bytes(prev: &str, canonical: &[u8]) -> String {
    let mut ctx = start(prev);
    ctx.update(canonical);
    crate::random::hex(ctx.finish().as_ref())
}

/// [`hash_bytes`] of a record read back as a map (without `hash`): the
/// same bytes, hashed as they are produced (no copy of the record).
pub(super) fn hash(prev: &str, record: &Map<String, Value>) -> Result<String, String> {
    let mut ctx = Digesting(start(prev));
    serde_json::to_writer(&mut ctx, record)
        .map_err(|e| format!("the record could not be serialized: {e}"))?;
    Ok(crate::random::hex(ctx.0.finish().as_ref()))
}

fn start(prev: &str) -> digest::Context {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(b"\n");
    ctx
}

/// The record's canonical JSON: keys sorted (serde_json's map is ordered,
/// and so is every object inside it), no whitespace.
pub(super) fn canonical(record: &Map<String, Value>) -> Result<Vec<u8>, String> {
    serde_json::to_vec(record).map_err(|e| format!("the record could not be serialized: {e}"))
}

/// The line for a record: its canonical JSON (`canonical`, hashed into
/// `hash`) with `"hash":"…"` added as the last field, and a newline. The
/// record is serialized once; `hash` is the only key out of sorted order,
/// which no reader minds (they parse the line, and verification takes
/// `hash` out before re-serializing the rest).
pub(super) fn seal(mut canonical: Vec<u8>, hash: &str) -> Result<Vec<u8>, String> {
    if canonical.pop() != Some(b'}') {
        return Err("the record is not a JSON object".into());
    }
    if canonical.len() > 1 {
        canonical.push(b',');
    }
    canonical.extend_from_slice(b"\"hash\":\"");
    canonical.extend_from_slice(hash.as_bytes());
    canonical.extend_from_slice(b"\"}\n");
    Ok(canonical)
}

/// Feeds what is written into a SHA-256.
struct Digesting(digest::Context);

impl std::io::Write for Digesting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a verification is given besides the log: the keys an auditor
/// trusts, and what is known to exist from outside the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerifyOptions {
    /// Checkpoints must be signed by one of these (empty: each checkpoint
    /// is checked against the key it names, or the external checkpoint's).
    pub trusted: Vec<PublicKey>,
    /// The latest checkpoint from the second sink: the log must still hold
    /// its record, with its hash.
    pub checkpoint: Option<Checkpoint>,
    /// A sequence number known to exist: the log must reach it.
    pub min_seq: Option<u64>,
}

/// The result of checking a whole log, or one file of a rotated set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The seq of the file's first record (1 for a log that starts the
    /// chain; where the next record goes when the file holds none).
    pub first_seq: u64,
    /// The records of the intact chain in this file.
    pub lines: u64,
    pub last_hash: String,
    /// The length of the intact chain, in bytes.
    pub bytes: u64,
    /// A damaged last line, outside the chain (see [`TornLine`]).
    pub torn: Option<TornLine>,
    /// How many checkpoint records were found (each one's signature
    /// verified), and the last of them.
    pub checkpoints: u64,
    pub last_checkpoint: Option<Checkpoint>,
    /// Records after the last checkpoint record (not yet signed).
    pub since_checkpoint: u64,
}

impl VerifyReport {
    /// The seq of the file's last intact record (`first_seq - 1` when it
    /// holds none).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + self.lines).saturating_sub(1)
    }
}

/// A last line that is not a complete record: a write cut off by a crash
/// or a full disk. It is not part of the chain; `jobkey serve` moves it to
/// a file beside the log at start-up and records that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornLine {
    /// Its line number.
    pub line: u64,
    /// Where it starts in the file, and how long it is.
    pub offset: u64,
    pub bytes: u64,
    pub why: String,
}

/// [`verify_with`] no outside knowledge: the chain, and each checkpoint
/// against the key it names.
pub fn verify_file(path: &Path) -> Result<VerifyReport, AuditError> {
    verify_with(path, &VerifyOptions::default())
}

/// Checks every line: valid JSON, `seq` counting up from 1, `prev` equal to
/// the previous `hash`, and `hash` recomputed, each line ended by a
/// newline; every checkpoint record signs the record before it, with a
/// trusted key. The first broken line is the error, unless it is the last
/// line: that one is reported as [`VerifyReport::torn`] (a hash chain
/// alone cannot tell a cut-off last line from a removed one, so nothing
/// is lost by naming it rather than refusing the log). Then what `opts`
/// knows from outside: a log that ends before the external checkpoint's
/// (or `min_seq`'s) record is [`AuditError::Truncated`].
pub(crate) fn verify_with(path: &Path, opts: &VerifyOptions) -> Result<VerifyReport, AuditError> {
    let trusted = trusted_keys(opts)?;
    let wanted = opts.checkpoint.as_ref().map(|c| c.seq);
    let seg = verify_segment(path, Start::Genesis, &trusted, wanted)?;
    let p = path.display().to_string();
    let found = seg.head_at_wanted.as_deref().map(|head| FoundHead {
        path: &p,
        line: wanted.unwrap_or(0),
        head,
    });
    check_known(&p, seg.report.last_seq(), found, opts)?;
    Ok(seg.report)
}

/// The keys checkpoints must be signed with: `opts.trusted`, or the
/// external checkpoint's own key (the auditor kept it off-host), whose
/// signature is checked here.
pub(super) fn trusted_keys(opts: &VerifyOptions) -> Result<Vec<PublicKey>, AuditError> {
    let mut trusted = opts.trusted.clone();
    if let Some(cp) = &opts.checkpoint {
        let bad = |why| AuditError::BadCheckpoint {
            path: "the external checkpoint".into(),
            line: 0,
            reason: why,
        };
        cp.check(&trusted).map_err(bad)?;
        if trusted.is_empty() {
            trusted.push(PublicKey::parse(&cp.public_key).map_err(bad)?);
        }
    }
    Ok(trusted)
}

/// What is known from outside the log, against a chain that ends at
/// `ends_at` and whose record at the external checkpoint's seq has the
/// hash `head_at_wanted` (`None`: the chain does not reach it).
pub(super) fn check_known(
    path: &str,
    ends_at: u64,
    found: Option<FoundHead<'_>>,
    opts: &VerifyOptions,
) -> Result<(), AuditError> {
    if let Some(cp) = &opts.checkpoint {
        match found {
            None => {
                return Err(AuditError::Truncated {
                    path: path.to_owned(),
                    ends_at,
                    known: format!("checkpoint seq {} exists", cp.seq),
                });
            }
            Some(f) if f.head != cp.head => {
                return Err(AuditError::Corrupt {
                    path: f.path.to_owned(),
                    line: f.line as usize,
                    reason: format!(
                        "its hash {} is not the {} the external checkpoint signed (the log was rewritten up to here)",
                        f.head, cp.head
                    ),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(min) = opts.min_seq
        && ends_at < min
    {
        return Err(AuditError::Truncated {
            path: path.to_owned(),
            ends_at,
            known: format!("seq {min} is known to exist"),
        });
    }
    Ok(())
}

/// Where the record an external checkpoint signs was found: its file,
/// its line there and its hash.
#[derive(Debug, Clone, Copy)]
pub(super) struct FoundHead<'a> {
    pub path: &'a str,
    pub line: u64,
    pub head: &'a str,
}

/// The highest seq a file may start at: far beyond any real log, and far
/// enough below `u64::MAX` that counting on from it cannot overflow.
const MAX_FIRST_SEQ: u64 = 1 << 48;

/// Where a file's part of the chain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// At seq 1, after [`GENESIS`]: a whole log.
    Genesis,
    /// Where its first line says (seq 1 still needs [`GENESIS`]): one
    /// file of a rotated set, whose link to the file before it the caller
    /// checks.
    FirstLine,
}

/// One file's part of the chain, checked.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    pub report: VerifyReport,
    /// The first record's `prev` (the hash of the record before the file).
    pub first_prev: String,
    /// The first record's `time` and `replica`.
    pub first_time: Option<String>,
    pub replica: Option<String>,
    /// The hash of the record the external checkpoint signs, when this
    /// file holds it (or it is the record just before the file).
    pub head_at_wanted: Option<String>,
}

/// Checks one file (see [`verify_with`]), starting at `start`, with
/// checkpoints signed by one of `trusted` (empty: the key each names).
pub(super) fn verify_segment(
    path: &Path,
    start: Start,
    trusted: &[PublicKey],
    wanted: Option<u64>,
) -> Result<Segment, AuditError> {
    let p = path.display().to_string();
    let (f, _) = crate::files::open_regular(path).map_err(|e| AuditError::Io {
        path: p.clone(),
        reason: e.reason(),
    })?;
    let mut reader = BufReader::new(f);
    let mut prev = GENESIS.to_owned();
    let mut n: u64 = 0;
    let mut first: Option<(u64, String)> = None;
    let mut first_time = None;
    let mut replica = None;
    let mut offset: u64 = 0;
    let mut buf = Vec::new();
    let mut checkpoints = 0;
    let mut last_checkpoint = None;
    let mut since_checkpoint = 0;
    let mut head_at_wanted = None;
    let mut torn = None;
    loop {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| AuditError::Io {
                path: p.clone(),
                reason: e.to_string(),
            })?;
        if read == 0 {
            break;
        }
        let complete = buf.last() == Some(&b'\n');
        let body = if complete {
            &buf[..buf.len() - 1]
        } else {
            &buf[..]
        };
        if first.is_none() {
            let head = serde_json::from_slice::<Value>(body).ok();
            let field = |k: &str| head.as_ref().and_then(|h| h.get(k));
            if start == Start::FirstLine
                && let Some(seq) = field("seq")
                    .and_then(Value::as_u64)
                    .filter(|&s| s > 1 && s <= MAX_FIRST_SEQ)
                && let Some(before) = field("prev").and_then(Value::as_str)
            {
                n = seq - 1;
                prev = before.to_owned();
            }
            first = Some((n + 1, prev.clone()));
            first_time = field("time").and_then(Value::as_str).map(str::to_owned);
            replica = field("replica").and_then(Value::as_str).map(str::to_owned);
            if wanted == Some(n) {
                head_at_wanted = Some(prev.clone());
            }
        }
        let lineno = offset_line(n, first.as_ref());
        let checked = if complete {
            check_line(body, n, &prev)
        } else {
            check_line(body, n, &prev).and(Err(
                "no newline at its end (the write was cut off)".to_owned()
            ))
        };
        match checked {
            Ok((hash, cp)) => {
                if let Some(cp) = cp {
                    cp.check(trusted).map_err(|why| AuditError::BadCheckpoint {
                        path: p.clone(),
                        line: lineno as usize,
                        reason: why,
                    })?;
                    checkpoints += 1;
                    last_checkpoint = Some(cp);
                    since_checkpoint = 0;
                } else {
                    since_checkpoint += 1;
                }
                prev = hash;
                n += 1;
                offset += read as u64;
                if wanted == Some(n) {
                    head_at_wanted = Some(prev.clone());
                }
            }
            Err(why) => {
                let last = reader
                    .fill_buf()
                    .map(|rest| rest.is_empty())
                    .unwrap_or(false);
                if !last {
                    return Err(AuditError::Corrupt {
                        path: p,
                        line: lineno as usize,
                        reason: why,
                    });
                }
                torn = Some(TornLine {
                    line: lineno,
                    offset,
                    bytes: read as u64,
                    why,
                });
                break;
            }
        }
    }
    let (first_seq, first_prev) = first.unwrap_or_else(|| (n + 1, prev.clone()));
    if wanted == Some(n) && head_at_wanted.is_none() {
        head_at_wanted = Some(prev.clone());
    }
    Ok(Segment {
        report: VerifyReport {
            first_seq,
            lines: n + 1 - first_seq,
            last_hash: prev,
            bytes: offset,
            torn,
            checkpoints,
            last_checkpoint,
            since_checkpoint,
        },
        first_prev,
        first_time,
        replica,
        head_at_wanted,
    })
}

/// The line number in its file of the record after `n`, for a file whose
/// first record is `first`'s seq.
fn offset_line(n: u64, first: Option<&(u64, String)>) -> u64 {
    n + 2 - first.map_or(1, |(seq, _)| *seq)
}

/// The `seq` and `replica` of a file's first line, if it has a readable
/// one.
pub(super) fn peek_first(path: &Path) -> Option<(u64, Option<String>)> {
    let (f, _) = crate::files::open_regular(path).ok()?;
    let mut line = Vec::new();
    BufReader::new(f)
        .take(crate::files::MIB)
        .read_until(b'\n', &mut line)
        .ok()?;
    let v = serde_json::from_slice::<Value>(&line).ok()?;
    let replica = v.get("replica").and_then(Value::as_str).map(str::to_owned);
    Some((v.get("seq").and_then(Value::as_u64)?, replica))
}

/// One line (without its newline) after `n` good ones whose last hash is
/// `prev`: its own hash and, for a checkpoint record, its checkpoint
/// (whose signature the caller checks), or what is wrong with it.
fn check_line(line: &[u8], n: u64, prev: &str) -> Result<(String, Option<Checkpoint>), String> {
    let mut obj = match serde_json::from_slice::<Value>(line) {
        Ok(Value::Object(o)) => o,
        _ => return Err("not a JSON object (truncated or edited?)".into()),
    };
    let stored = match obj.remove("hash") {
        Some(Value::String(h)) => h,
        _ => return Err("no `hash` field".into()),
    };
    if obj.get("seq").and_then(Value::as_u64) != Some(n + 1) {
        return Err(format!(
            "expected seq {} (a line was removed or reordered)",
            n + 1
        ));
    }
    if obj.get("prev").and_then(Value::as_str) != Some(prev) {
        return Err("`prev` does not match the previous line's hash".into());
    }
    if hash(prev, &obj)? != stored {
        return Err("the line's content does not match its hash (edited?)".into());
    }
    let cp = if obj.get("action").and_then(Value::as_str) == Some("checkpoint") {
        let cp: Checkpoint = obj
            .get("checkpoint")
            .cloned()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| "a checkpoint record without a readable `checkpoint`".to_owned())?;
        if cp.seq != n || cp.head != prev {
            return Err(format!(
                "its checkpoint signs seq {} but follows seq {n} (moved?)",
                cp.seq
            ));
        }
        Some(cp)
    } else {
        None
    };
    Ok((stored, cp))
}
