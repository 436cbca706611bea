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
    pub lines: u64,
    pub last_hash: String,
}

/// Checks every line: valid JSON, `seq` counting up from 1, `prev` equal to
/// the previous `hash`, and `hash` recomputed. The first broken line is the
/// error.
pub fn verify_file(path: &Path) -> Result<VerifyReport, AuditError> {
    let p = path.display().to_string();
    let (f, _) = crate::files::open_regular(path).map_err(|e| AuditError::Io {
        path: p.clone(),
        reason: e.reason(),
    })?;
    let mut prev = GENESIS.to_owned();
    let mut n: u64 = 0;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let lineno = i + 1;
        let corrupt = |reason: String| AuditError::Corrupt {
            path: p.clone(),
            line: lineno,
            reason,
        };
        let line = line.map_err(|e| corrupt(e.to_string()))?;
        let mut obj = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(o)) => o,
            _ => return Err(corrupt("not a JSON object (truncated or edited?)".into())),
        };
        let stored = match obj.remove("hash") {
            Some(Value::String(h)) => h,
            _ => return Err(corrupt("no `hash` field".into())),
        };
        if obj.get("seq").and_then(Value::as_u64) != Some(n + 1) {
            return Err(corrupt(format!(
                "expected seq {} (a line was removed or reordered)",
                n + 1
            )));
        }
        if obj.get("prev").and_then(Value::as_str) != Some(prev.as_str()) {
            return Err(corrupt(
                "`prev` does not match the previous line's hash".into(),
            ));
        }
        if hash(&prev, &obj) != stored {
            return Err(corrupt(
                "the line's content does not match its hash (edited?)".into(),
            ));
        }
        prev = stored;
        n += 1;
    }
    Ok(VerifyReport {
        lines: n,
        last_hash: prev,
    })
}
