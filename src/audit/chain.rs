//! The hash chain and its verification.

use std::io::{BufRead, BufReader};
use std::path::Path;

use ring::digest;
use serde_json::{Map, Value};

use super::AuditError;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 over `prev`, a newline, and the event's canonical JSON (keys
/// sorted: serde_json's map is ordered), without the `hash` field.
pub fn hash(prev: &str, event: &Map<String, Value>) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prev.as_bytes());
    ctx.update(b"\n");
    ctx.update(Value::Object(event.clone()).to_string().as_bytes());
    crate::random::hex(ctx.finish().as_ref())
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

/// Checks every line: valid JSON, `seq` counting up from 1, `prev` equal to
/// the previous `hash`, and `hash` recomputed, each line ended by a
/// newline. The first broken line is the error, unless it is the last
/// line: that one is reported as [`VerifyReport::torn`] (a hash chain
/// cannot tell a cut-off last line from a removed one anyway, so nothing
/// is lost by naming it rather than refusing the log).
pub fn verify_file(path: &Path) -> Result<VerifyReport, AuditError> {
    let p = path.display().to_string();
    let (f, _) = crate::files::open_regular(path).map_err(|e| AuditError::Io {
        path: p.clone(),
        reason: e.reason(),
    })?;
    let mut reader = BufReader::new(f);
    let mut prev = GENESIS.to_owned();
    let mut n: u64 = 0;
    let mut offset: u64 = 0;
    let mut buf = Vec::new();
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
            Ok(hash) => {
                prev = hash;
                n += 1;
                offset += read as u64;
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
                return Ok(VerifyReport {
                    lines: n,
                    last_hash: prev,
                    bytes: offset,
                    torn: Some(TornLine {
                        line: lineno,
                        offset,
                        bytes: read as u64,
                        why,
                    }),
                });
            }
        }
    }
    Ok(VerifyReport {
        lines: n,
        last_hash: prev,
        bytes: offset,
        torn: None,
    })
}

/// One line (without its newline) after `n` good ones whose last hash is
/// `prev`: its own hash, or what is wrong with it.
fn check_line(line: &[u8], n: u64, prev: &str) -> Result<String, String> {
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
    Ok(stored)
}
