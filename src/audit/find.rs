//! `jobkey audit find`: which exchanges issued this value?

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::{AuditError, Fingerprinter};

/// One issued credential field whose fingerprint matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Match {
    pub seq: u64,
    pub time: String,
    pub request_id: String,
    pub environment: String,
    pub credential: String,
    pub field: String,
    pub rule: String,
    /// Who received it (the audit record's `identity`).
    pub identity: Value,
}

/// Scans the log for allowed exchanges that issued `value` (compared by
/// fingerprint; the value itself is never in the log). The value is tried
/// as given and with surrounding whitespace trimmed, since a value copied
/// out of a build log often carries a newline.
pub fn find_value(log: &Path, fp: &Fingerprinter, value: &str) -> Result<Vec<Match>, AuditError> {
    let wanted: Vec<String> = [value, value.trim()]
        .iter()
        .map(|v| fp.fingerprint(v))
        .collect();
    let f = std::fs::File::open(log).map_err(|e| AuditError::Io {
        path: log.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for line in BufReader::new(f).lines() {
        let line = line.map_err(|e| AuditError::Io {
            path: log.display().to_string(),
            reason: e.to_string(),
        })?;
        let Ok(rec) = serde_json::from_str::<Value>(&line) else {
            continue; // `jobkey audit verify` reports broken lines
        };
        let Some(creds) = rec.get("credentials").and_then(Value::as_array) else {
            continue;
        };
        let text = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        for c in creds {
            let Some(fps) = c.get("fingerprints").and_then(Value::as_object) else {
                continue;
            };
            for (field, f) in fps {
                if f.as_str().is_some_and(|f| wanted.iter().any(|w| w == f)) {
                    out.push(Match {
                        seq: rec.get("seq").and_then(Value::as_u64).unwrap_or_default(),
                        time: text(&rec, "time"),
                        request_id: text(&rec, "request_id"),
                        environment: text(&rec, "environment"),
                        credential: text(c, "name"),
                        field: field.clone(),
                        rule: text(c, "rule"),
                        identity: rec.get("identity").cloned().unwrap_or(Value::Null),
                    });
                }
            }
        }
    }
    Ok(out)
}
