//! `jobkey audit find`: which exchanges issued this value?

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Action, AuditError, Decision, Event, Fingerprinter, Identity};

/// One issued credential field whose fingerprint matches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Match {
    pub seq: u64,
    pub time: String,
    pub request_id: String,
    pub environment: String,
    pub credential: String,
    pub field: String,
    pub rule: String,
    /// Who received it (the audit record's `identity`).
    pub identity: Option<Identity>,
    /// The replica that wrote the record, when the log names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Found {
    pub matches: Vec<Match>,
    /// Line numbers that are not audit records (a cut-off last line, an
    /// edit): they were not searched. `jobkey audit verify` says more.
    pub unreadable: Vec<usize>,
}

/// A line as stored: the event and its place in the chain.
#[derive(Deserialize)]
struct Stored {
    seq: u64,
    #[serde(flatten)]
    event: Event,
}

/// Scans the log for allowed exchanges that issued `value` (compared by
/// fingerprint; the value itself is never in the log). The value is tried
/// as given and with surrounding whitespace trimmed, since a value copied
/// out of a build log often carries a newline.
pub(crate) fn find_value(log: &Path, fp: &Fingerprinter, value: &str) -> Result<Found, AuditError> {
    let wanted = [fp.fingerprint(value), fp.fingerprint(value.trim())];
    let (f, _) = crate::files::open_regular(log).map_err(|e| AuditError::Io {
        path: log.display().to_string(),
        reason: e.reason(),
    })?;
    let mut found = Found::default();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| AuditError::Io {
            path: log.display().to_string(),
            reason: e.to_string(),
        })?;
        let Ok(Stored { seq, event }) = serde_json::from_str::<Stored>(&line) else {
            found.unreadable.push(i + 1);
            continue;
        };
        if event.action() != Action::Exchange || event.decision() != Some(Decision::Allow) {
            continue;
        }
        for c in event.credentials() {
            for (field, f) in &c.fingerprints {
                if wanted.contains(f) {
                    found.matches.push(Match {
                        seq,
                        time: event.time().to_owned(),
                        request_id: event.request_id().to_owned(),
                        environment: event.environment().unwrap_or_default().to_owned(),
                        credential: c.name.clone(),
                        field: field.clone(),
                        rule: c.rule.clone(),
                        identity: event.identity().cloned(),
                        replica: event.replica().map(str::to_owned),
                    });
                }
            }
        }
    }
    Ok(found)
}
