//! Rotation: the live file is closed and renamed once it is big or old
//! enough, and the chain goes on in a fresh file.
//!
//! When the live file reaches [`RotateSettings::max_bytes`] or is older
//! than [`RotateSettings::max_age`] (checked before each sync an `allow`
//! waits for, and on each tick: on the log's syncer thread or a blocking
//! thread, never on the task that writes a line), the writer:
//! 1. appends a signed checkpoint, the old file's last line (unless its
//!    last line is one already);
//! 2. syncs the file (so everything in it is on disk, and the checkpoints
//!    go to the second sink);
//! 3. renames it to `<log>.<UTC time>` (`audit.jsonl.20261201T171500Z`;
//!    `-1`, `-2`, … when that name is taken), opens a fresh live file
//!    (mode 0600) and syncs the directory;
//! 4. keeps appending: `seq` goes on and the new file's first `prev` is the
//!    closing checkpoint's hash.
//!
//! A rename or open that fails loses nothing: the records go on into the
//! old file (under whichever name it has), a warning is logged, and the
//! rotation is tried again [`RETRY_AFTER`] later.
//!
//! At start-up ([`resume`]), a live file that is missing or holds no
//! record (a crash between the rename and the first new line) continues
//! the chain from the newest rotated file, and a live file that starts
//! after seq 1 must continue it: the chain never silently restarts.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::chain::{self, Segment, Start};
use super::{AuditError, Position, State, TornLine};

/// How long after a failed rotation it is tried again.
pub(super) const RETRY_AFTER: Duration = Duration::from_secs(60);

/// When the live file is rotated (`[audit] rotate_bytes`,
/// `rotate_after`). Both off by default: one file grows for ever.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotateSettings {
    /// Once the live file is this many bytes long.
    pub max_bytes: Option<u64>,
    /// Once the live file's first record is this old.
    pub max_age: Option<Duration>,
}

impl RotateSettings {
    fn enabled(&self) -> bool {
        self.max_bytes.is_some() || self.max_age.is_some()
    }
}

/// The writer's rotation state.
#[derive(Debug)]
pub(super) struct Rotation {
    settings: RotateSettings,
    /// The live file's age when it was opened, and when that was.
    age_at_open: Duration,
    opened: Instant,
    /// Where the file being written is, when a failed rotation left it
    /// under its rotated name (`None`: at the log's path).
    renamed: Option<PathBuf>,
    /// No rotation before this (a rotation failed).
    not_before: Option<Instant>,
}

impl Rotation {
    pub(super) fn new(settings: RotateSettings, age: Duration) -> Rotation {
        Rotation {
            settings,
            age_at_open: age,
            opened: Instant::now(),
            renamed: None,
            not_before: None,
        }
    }

    /// Whether a file of `len` bytes is due at `now`, and why.
    fn due(&self, len: u64, now: Instant) -> Option<String> {
        if len == 0 || self.not_before.is_some_and(|t| now < t) {
            return None;
        }
        if let Some(max) = self.settings.max_bytes
            && len >= max
        {
            return Some(format!("it reached {len} bytes (rotate_bytes {max})"));
        }
        let age = self.age_at_open + now.saturating_duration_since(self.opened);
        match self.settings.max_age {
            Some(max) if age >= max => Some(format!(
                "it is {} old (rotate_after {})",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(max)
            )),
            _ => None,
        }
    }
}

impl State {
    /// Rotates the live file if it is due at `now` (see the module docs).
    /// An `Err` is a failed write or sync, as for any record; a failed
    /// rename or open is logged and retried later.
    pub(super) fn rotate_if_due(&mut self, path: &Path, now: Instant) -> Result<(), AuditError> {
        if !self.regular || !self.rotation.settings.enabled() {
            return Ok(());
        }
        let Some(why) = self.rotation.due(self.written.len, now) else {
            return Ok(());
        };
        if self.checkpoints.since > 0 {
            self.write_checkpoint(path)?;
        }
        self.sync(path)?;
        match self.switch(path) {
            Ok(rotated) => {
                tracing::info!(
                    log = %path.display(),
                    rotated = %rotated.display(),
                    seq = self.written.seq,
                    why = %why,
                    "rotated the audit log"
                );
                self.rotation.not_before = None;
            }
            Err(e) => {
                tracing::warn!(
                    log = %path.display(),
                    error = %e,
                    why = %why,
                    retry_in = %humantime::format_duration(RETRY_AFTER),
                    "could not rotate the audit log; records go on into the current file"
                );
                self.rotation.not_before = Some(now + RETRY_AFTER);
            }
        }
        Ok(())
    }

    /// Renames the (synced) current file aside and opens a fresh live
    /// file. Returns the rotated file's path.
    fn switch(&mut self, path: &Path) -> Result<PathBuf, std::io::Error> {
        let rotated = match self.rotation.renamed.clone() {
            Some(p) => p,
            None => {
                let target = free_name(path, SystemTime::now())?;
                std::fs::rename(path, &target)?;
                self.rotation.renamed = Some(target.clone());
                target
            }
        };
        // The rename (and the new file, if any) reach the disk.
        let opened = create_live(path);
        if let Err(e) = sync_dir(path) {
            tracing::warn!(log = %path.display(), error = %e, "could not sync the audit log's directory after rotating it");
        }
        let file = opened?;
        self.sync_file = std::sync::Arc::new(file.try_clone()?);
        self.file = file;
        self.truncate_pending = false;
        let start = Position {
            len: 0,
            ..self.written.clone()
        };
        self.written = start.clone();
        self.synced = start;
        self.rotation.renamed = None;
        self.rotation.age_at_open = Duration::ZERO;
        self.rotation.opened = Instant::now();
        Ok(rotated)
    }
}

/// A fresh live file: created (mode 0600), never one that exists.
fn create_live(path: &Path) -> Result<File, std::io::Error> {
    let mut opts = OpenOptions::new();
    opts.create_new(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

fn sync_dir(path: &Path) -> Result<(), std::io::Error> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// `20261201T171500Z`: `at` in UTC, to the second.
fn stamp(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect()
}

/// `<log>.<stamp>`, or `<log>.<stamp>-N` for the first N that is free.
fn free_name(path: &Path, at: SystemTime) -> Result<PathBuf, std::io::Error> {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let stamp = stamp(at);
    for n in 0..1000 {
        let name = match n {
            0 => format!("{base}.{stamp}"),
            n => format!("{base}.{stamp}-{n}"),
        };
        let candidate = path.with_file_name(name);
        if std::fs::symlink_metadata(&candidate).is_err() {
            return Ok(candidate);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("every name for the rotated file {base}.{stamp}-N is taken"),
    ))
}

/// Where a rotated file's name puts it among the log's rotated files:
/// its stamp and collision number, when `name` is `<log>.<stamp>[-N]`.
pub(super) fn rotated_rank(log_name: &str, name: &str) -> Option<(String, u64)> {
    let rest = name.strip_prefix(log_name)?.strip_prefix('.')?;
    let (stamp, n) = match rest.split_once('-') {
        Some((s, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (s, n.parse().ok()?)
        }
        Some(_) => return None,
        None => (rest, 0),
    };
    let b = stamp.as_bytes();
    let shape = b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
    shape.then(|| (stamp.to_owned(), n))
}

/// The rotated files beside the log (`<log>.<stamp>[-N]`), in no order.
pub(crate) fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| {
            f.file_name()
                .is_some_and(|n| rotated_rank(&name, &n.to_string_lossy()).is_some())
                && f.is_file()
        })
        .collect()
}

/// Where the writer goes on at start-up.
#[derive(Debug)]
pub(super) struct Resume {
    /// After the last good record (`len` into the live file).
    pub start: Position,
    /// Records since the last checkpoint.
    pub since_checkpoint: u64,
    /// The live file's torn last line, to set aside.
    pub torn: Option<TornLine>,
    /// The live file's age (from its first record's time).
    pub age: Duration,
}

/// Verifies the live file (`regular`: it is a regular file) and, when it
/// is missing, holds no record or starts after seq 1, the newest rotated
/// file, whose end the live file must continue.
pub(super) fn resume(path: &Path, regular: bool) -> Result<Resume, AuditError> {
    let live = if regular {
        Some(chain::verify_segment(path, Start::FirstLine, &[], None)?)
    } else {
        None
    };
    let mut resume = match &live {
        Some(seg) => Resume {
            start: Position {
                seq: seg.report.last_seq(),
                prev: seg.report.last_hash.clone(),
                len: seg.report.bytes,
            },
            since_checkpoint: seg.report.since_checkpoint,
            torn: seg.report.torn.clone(),
            age: seg
                .first_time
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default(),
        },
        None => Resume {
            start: Position {
                seq: 0,
                prev: chain::GENESIS.to_owned(),
                len: 0,
            },
            since_checkpoint: 0,
            torn: None,
            age: Duration::ZERO,
        },
    };
    let holds_records = live.as_ref().is_some_and(|s| s.report.lines > 0);
    let device = !regular && path.exists();
    if device
        || live
            .as_ref()
            .is_some_and(|s| s.report.first_seq == 1 && holds_records)
    {
        return Ok(resume);
    }
    let Some((before_path, before)) = newest_rotated(path)? else {
        return Ok(resume);
    };
    if let Some(t) = &before.report.torn {
        return Err(AuditError::Corrupt {
            path: before_path.display().to_string(),
            line: t.line as usize,
            reason: format!("a rotated file's last line is torn ({})", t.why),
        });
    }
    match &live {
        Some(seg) if holds_records => {
            let continues = seg.report.first_seq == before.report.last_seq() + 1
                && seg.first_prev == before.report.last_hash;
            if !continues {
                return Err(AuditError::Corrupt {
                    path: path.display().to_string(),
                    line: 1,
                    reason: format!(
                        "the log starts at seq {} but does not continue the newest rotated file, {} (which ends at seq {}); jobkey does not write after a broken link",
                        seg.report.first_seq,
                        before_path.display(),
                        before.report.last_seq()
                    ),
                });
            }
        }
        _ => {
            resume.start.seq = before.report.last_seq();
            resume.start.prev = before.report.last_hash.clone();
            resume.since_checkpoint = before.report.since_checkpoint;
            resume.age = Duration::ZERO;
        }
    }
    Ok(resume)
}

/// The rotated file that holds the highest seqs (by its first line),
/// verified.
fn newest_rotated(path: &Path) -> Result<Option<(PathBuf, Segment)>, AuditError> {
    let newest = rotated_files(path)
        .into_iter()
        .map(|f| (chain::peek_first(&f).map_or(0, |(seq, _)| seq), f))
        .max();
    match newest {
        Some((_, f)) => {
            let seg = chain::verify_segment(&f, Start::FirstLine, &[], None)?;
            Ok(Some((f, seg)))
        }
        None => Ok(None),
    }
}

#[cfg(test)]
#[path = "rotate_tests.rs"]
mod tests;
