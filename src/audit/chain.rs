//! The hash chain and its verification.

use std::io::{BufRead, BufReader};
use std::path::Path;

use ring::digest;
use serde_json::{Map, Value};

use super::AuditError;
use super::checkpoint::{Checkpoint, PublicKey};

/// `prev` of the first line.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over `prev`, a newline, and the event's canonical JSON (keys
/// sorted: serde_json's map is ordered), without the `hash` field.
pub(super) fn hash(prev: &str, event: &Map<String, Value>) -> String {
    let mut ctx = Digesting(digest::Context::new(&digest::SHA256));
    ctx.0.update(prev.as_bytes());
    ctx.0.update(b"\n");
    // The same bytes as `Value::Object(event).to_string()`, hashed as they
    // are produced: no copy of the event and no string (once per record).
    if serde_json::to_writer(&mut ctx, event).is_err() {
        // Writing into a digest cannot fail, and a map of JSON values always
        // serializes; should it ever, no line can match this hash.
        return String::new();
    }
    crate::random::hex(ctx.0.finish().as_ref())
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

/// The result of checking a whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The records of the intact chain.
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
    let p = path.display().to_string();
    let mut trusted = opts.trusted.clone();
    if let Some(cp) = &opts.checkpoint {
        cp.check(&trusted)
            .map_err(|why| AuditError::BadCheckpoint {
                path: "the external checkpoint".into(),
                line: 0,
                reason: why,
            })?;
        if trusted.is_empty() {
            // The auditor kept it off-host: its key is the one to trust.
            trusted.push(PublicKey::parse(&cp.public_key).map_err(|why| {
                AuditError::BadCheckpoint {
                    path: "the external checkpoint".into(),
                    line: 0,
                    reason: why,
                }
            })?);
        }
    }
    let (f, _) = crate::files::open_regular(path).map_err(|e| AuditError::Io {
        path: p.clone(),
        reason: e.reason(),
    })?;
    let mut reader = BufReader::new(f);
    let mut prev = GENESIS.to_owned();
    let mut n: u64 = 0;
    let mut offset: u64 = 0;
    let mut buf = Vec::new();
    let mut checkpoints = 0;
    let mut last_checkpoint = None;
    let mut since_checkpoint = 0;
    let wanted = opts.checkpoint.as_ref().map(|c| c.seq);
    let mut head_at_wanted = (wanted == Some(0)).then(|| GENESIS.to_owned());
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
        let lineno = n + 1;
        let complete = buf.last() == Some(&b'\n');
        let checked = if complete {
            check_line(&buf[..buf.len() - 1], n, &prev)
        } else {
            check_line(&buf, n, &prev).and(Err(
                "no newline at its end (the write was cut off)".to_owned()
            ))
        };
        match checked {
            Ok((hash, cp)) => {
                if let Some(cp) = cp {
                    cp.check(&trusted)
                        .map_err(|why| AuditError::BadCheckpoint {
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
    if let Some(cp) = &opts.checkpoint {
        match head_at_wanted {
            None => {
                return Err(AuditError::Truncated {
                    path: p,
                    ends_at: n,
                    known: format!("checkpoint seq {} exists", cp.seq),
                });
            }
            Some(head) if head != cp.head => {
                return Err(AuditError::Corrupt {
                    path: p,
                    line: cp.seq as usize,
                    reason: format!(
                        "its hash {head} is not the {} the external checkpoint signed (the log was rewritten up to here)",
                        cp.head
                    ),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(min) = opts.min_seq
        && n < min
    {
        return Err(AuditError::Truncated {
            path: p,
            ends_at: n,
            known: format!("seq {min} is known to exist"),
        });
    }
    Ok(VerifyReport {
        lines: n,
        last_hash: prev,
        bytes: offset,
        torn,
        checkpoints,
        last_checkpoint,
        since_checkpoint,
    })
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
    if hash(prev, &obj) != stored {
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
