//! The audit log: one JSON line per request (its decision), hash-chained,
//! on disk before the response leaves.
//!
//! Each line carries `seq`, `prev` (the previous line's `hash`) and `hash`
//! = SHA-256 over `prev` and the line's other fields. Editing, removing or
//! reordering a line breaks the chain, which [`verify_file`] reports.
//! Appends are flushed and `fsync`ed; when that fails the caller must not
//! release any credential (the server answers 503).
//!
//! Each line is one [`Event`] (`event.rs`): a typed record that no secret
//! type can enter.
//!
//! Architecture invariant: nothing secret is passed to this module; events
//! are built from claims, decisions, credential names, rules, TTLs and
//! fingerprints, and a secret value enters only as the argument of
//! [`Fingerprinter::fingerprint`], which keeps nothing.

mod chain;
mod event;
mod find;
mod fingerprint;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use thiserror::Error;

pub use chain::{VerifyReport, verify_file};
pub use event::{
    Action, Auth, ClaimValue, Decision, Event, EventBuilder, Identity, IssuedCredential,
    MAX_IDENTITY_CLAIMS, MAX_REQUESTED, MAX_STRING_BYTES, Refusal, Stage, bounded,
};
pub use find::{Found, Match, find_value};
pub use fingerprint::{Fingerprint, Fingerprinter, default_key_path};

/// Why the audit log could not be opened, written or verified.
#[derive(Debug, Error)]
pub enum AuditError {
    #[error("audit log {path}: {reason}")]
    Io { path: String, reason: String },
    #[error("audit log {path}, line {line}: {reason}")]
    Corrupt {
        path: String,
        line: usize,
        reason: String,
    },
}

struct State {
    file: File,
    seq: u64,
    prev: String,
    /// Set when a write failed part way: whether the line reached the disk
    /// is unknown, so the chain cannot continue safely. Every later append
    /// fails (fail closed) until an operator checks the log and restarts.
    broken: bool,
}

/// An append-only, hash-chained JSON-lines file.
#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
    state: Arc<Mutex<State>>,
}

impl AuditLog {
    /// Opens (or creates) the log; an existing log is verified and the chain
    /// continues from its last line. A log that fails verification is
    /// refused: jobkey does not write after a tampered record.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Only a regular file has a chain to continue (a device such as
        // /dev/full or a FIFO is written to as is).
        let (seq, prev) = if path.is_file() {
            let report = verify_file(path)?;
            (report.lines, report.last_hash)
        } else {
            (0, chain::GENESIS.to_owned())
        };
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(io)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            state: Arc::new(Mutex::new(State {
                file,
                seq,
                prev,
                broken: false,
            })),
        })
    }

    /// Appends one event and waits until it is on disk.
    pub async fn append(&self, event: &Event) -> Result<(), AuditError> {
        let this = self.clone();
        let event = event.clone();
        tokio::task::spawn_blocking(move || this.append_blocking(&event))
            .await
            .map_err(|e| AuditError::Io {
                path: self.path.display().to_string(),
                reason: format!("writer task failed: {e}"),
            })?
    }

    /// The synchronous append (for the CLI and tests).
    pub fn append_blocking(&self, event: &Event) -> Result<(), AuditError> {
        let mut event = event.to_map().map_err(|reason| AuditError::Io {
            path: self.path.display().to_string(),
            reason,
        })?;
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if st.broken {
            return Err(AuditError::Io {
                path: self.path.display().to_string(),
                reason: "an earlier write failed; refusing to continue the chain until restarted (run `jobkey audit verify`)".into(),
            });
        }
        let seq = st.seq + 1;
        event.insert("seq".into(), Value::from(seq));
        event.insert("prev".into(), Value::from(st.prev.clone()));
        let hash = chain::hash(&st.prev, &event);
        event.insert("hash".into(), Value::from(hash.clone()));
        let mut line = Value::Object(event).to_string();
        line.push('\n');
        let io = |e: std::io::Error| AuditError::Io {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let written = st
            .file
            .write_all(line.as_bytes())
            .and_then(|()| st.file.flush())
            .and_then(|()| st.file.sync_data());
        if let Err(e) = written {
            st.broken = true;
            return Err(io(e));
        }
        st.seq = seq;
        st.prev = hash;
        Ok(())
    }
}

/// Now, as RFC 3339 with milliseconds (UTC).
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests;
