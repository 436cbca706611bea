//! The audit log: one JSON line per request (its decision), hash-chained.
//!
//! Each line carries `seq`, `prev` (the previous line's `hash`) and `hash`
//! = SHA-256 over `prev` and the line's other fields. Editing, removing or
//! reordering a line breaks the chain, which [`verify_file`] reports.
//!
//! Each line is one [`Event`] (`event.rs`): a typed record that no secret
//! type can enter.
//!
//! What reaches the disk, and when ([`AuditLog::append`]):
//! - an `allow` (and the log's own lines) is written and `fsync`ed before
//!   `append` returns, and with it everything written before it: the
//!   caller may then release credentials;
//! - a refusal (`deny`, `error`) goes through the refusal table
//!   (`refusals.rs`): the first of its key in a window is written, the
//!   repeats are counted into one `refusals_summarized` line at the end of
//!   the window. A refusal costs no `fsync` of its own: it reaches the
//!   disk with the next `allow` or the next [`AuditLog::tick`].
//!
//! How an allow reaches the disk: its line is written on the caller's
//! task; then the log's syncer thread (`syncer.rs`, one per log) does a
//! group commit: one `fdatasync` for every line written before it starts
//! (rotating the file first when due), then wakes the appends it covered
//! at once. The synchronous paths (`append_blocking`, `tick`,
//! `flush`) sync on their own thread, taking turns with the syncer on the
//! same `sync_lock`.
//!
//! Each line is its record serialized once (keys sorted), hashed, with
//! `hash` added as its last field (`chain.rs`).
//!
//! A failed write or sync leaves the file at the last good record (it is
//! truncated back) and starts an outage: every append fails, and
//! [`AuditLog::is_writable`] is false, until [`AuditLog::tick`] manages to
//! write a `log_resumed` line, which counts the requests refused
//! meanwhile. No restart is needed.
//!
//! At start-up ([`AuditLog::open`]), a torn last line (a write cut off by
//! a crash or a full disk) is moved to a file beside the log, and a
//! `log_recovered` line, chained to the last good one, says so. Damage
//! anywhere before the last line refuses the log.
//!
//! With `[audit] rotate_bytes` or `rotate_after` (`rotate.rs`), the live
//! file is closed by a checkpoint and renamed to `<log>.<UTC time>`, and
//! the chain goes on in a new file; `verify_set.rs` verifies such a set
//! (and several replicas' logs) as whole chains.
//!
//! Architecture invariant: nothing secret is passed to this module; events
//! are built from claims, decisions, credential names, rules, TTLs and
//! fingerprints, and a secret value enters only as the argument of
//! [`Fingerprinter::fingerprint`], which keeps nothing.

mod chain;
mod checkpoint;
mod event;
pub(crate) mod export;
mod find;
mod fingerprint;
pub(crate) mod query;
mod refusals;
mod rotate;
mod schema;
mod syncer;
mod verify_set;

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

pub use chain::{VerifyReport, verify_file};

#[cfg(test)]
pub(crate) use chain::verify_with;
pub(crate) use chain::{TornLine, VerifyOptions};
pub use checkpoint::CheckpointSettings;
pub(crate) use checkpoint::{Checkpoint, CheckpointKey, PublicKey, default_checkpoint_key_path};
#[cfg(any(test, fuzzing))]
pub(crate) use event::MAX_STRING_BYTES;
pub(crate) use event::{
    Action, Auth, ClaimValue, EventBuilder, Identity, Outage, Recovery, bounded,
};
pub use event::{Decision, Event, IssuedCredential, Refusal, Stage};
#[cfg(test)]
pub(crate) use event::{MAX_IDENTITY_CLAIMS, MAX_REQUESTED, VERSION};
pub(crate) use find::{Found, Match, find_value};
pub use fingerprint::Fingerprinter;
pub(crate) use fingerprint::{Fingerprint, default_key_path};
pub(crate) use refusals::RefusalSettings;
pub use rotate::RotateSettings;
pub(crate) use rotate::rotated_files;
#[cfg(test)]
pub(crate) use verify_set::SetReport;
pub(crate) use verify_set::{SetOptions, verify_log, verify_set};

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
    /// A checkpoint whose signature does not verify (with a trusted key).
    #[error("audit log {path}: checkpoint at line {line}: {reason}")]
    BadCheckpoint {
        path: String,
        line: usize,
        reason: String,
    },
    /// The log ends before a record known to exist from outside it.
    #[error("audit log {path}: truncated: the log ends at seq {ends_at} but {known}")]
    Truncated {
        path: String,
        ends_at: u64,
        known: String,
    },
    /// The files given do not hold the whole chain: the files before the
    /// first one, or between two of them, are missing (a rotated file
    /// removed), or the record an external checkpoint signs is not in them.
    #[error("audit log {path}: {reason}")]
    Incomplete { path: String, reason: String },
    /// An earlier write failed and the log has not accepted a write since.
    #[error("audit log {path}: appends have failed since {since} ({error}); retrying every tick")]
    Unavailable {
        path: String,
        since: String,
        error: String,
    },
}

/// How the log writes: the refusal table and how often unsynced lines are
/// synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub refusals: RefusalSettings,
    /// How often [`AuditLog::tick`] runs (the server's timer): the longest
    /// a refusal's line waits for its `fsync`, and how soon appends are
    /// retried after a failure.
    pub sync_interval: Duration,
    /// When signed checkpoints are written, and where else they go.
    pub checkpoints: CheckpointSettings,
    /// When the live file is rotated (`rotate.rs`).
    pub rotation: RotateSettings,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            refusals: RefusalSettings::default(),
            sync_interval: Duration::from_secs(1),
            checkpoints: CheckpointSettings::default(),
            rotation: RotateSettings::default(),
        }
    }
}

/// What a [`AuditLog::group_commit`] is for: one synchronous append's
/// record (written after that many cuts, its seq), or a round of the
/// syncer thread (its counter of rounds started).
#[derive(Clone, Copy)]
enum Commit<'a> {
    Mine((usize, u64)),
    Round(&'a AtomicU64),
}

/// A place in the chain: after `seq` lines, whose last hash is `prev`,
/// `len` bytes into the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    seq: u64,
    prev: String,
    len: u64,
}

/// An outage: appends fail until a `log_resumed` line is written.
struct Down {
    since: String,
    error: String,
    refused: u64,
}

struct State {
    file: File,
    /// The same file again, to sync without holding `state` (group
    /// commit); replaced with `file` when the log rotates.
    sync_file: Arc<File>,
    /// When the live file is renamed aside and a new one started.
    rotation: rotate::Rotation,
    /// Where each failed sync cut the chain back to (the records after
    /// it were lost): an append waiting for its sync since `cuts.len()`
    /// was `n` knows its record is gone if a later cut is below it.
    cuts: Vec<u64>,
    /// `fdatasync`s done (tests and the benchmark count them).
    syncs: u64,
    /// Only a regular file has a length to truncate back to (a device such
    /// as /dev/full or a FIFO is written to as is).
    regular: bool,
    /// After the last line written.
    written: Position,
    /// After the last line known to be on disk.
    synced: Position,
    /// A truncation back to `written.len` failed; retried before writing.
    truncate_pending: bool,
    down: Option<Down>,
    refusals: refusals::RefusalTable,
    /// Summaries waiting to be written (their window ended while the log
    /// was down).
    pending: VecDeque<Event>,
    /// Written on every line as `replica` (`[audit] replica_id`).
    replica: Option<String>,
    checkpoints: Checkpointer,
    /// The thread that syncs for async appends (started by the first).
    syncer: Option<syncer::Syncer>,
}

/// Signs the chain's head every `every` records and on the timer, and
/// sends each checkpoint to the second sink once it is on disk.
struct Checkpointer {
    key: CheckpointKey,
    settings: CheckpointSettings,
    /// Records written since the last checkpoint.
    since: u64,
    last: Instant,
    /// Written, not yet on disk: sent once synced.
    unsent: Vec<Checkpoint>,
}

/// An append-only, hash-chained JSON-lines file.
#[derive(Clone)]
pub struct AuditLog {
    state: Arc<Mutex<State>>,
    common: Arc<Common>,
}

/// What every handle to a log shares besides its state (which the syncer
/// thread holds only weakly: [`WeakLog`]).
struct Common {
    path: PathBuf,
    /// Group commit: held by whoever syncs all the lines written so far
    /// (the syncer thread, or a synchronous append); the others wait on
    /// it, then find their line synced.
    sync_lock: Mutex<()>,
    writable: AtomicBool,
    sync_interval: Duration,
}

/// The log as its syncer thread holds it between rounds: without its state,
/// which goes (and the thread with it) when the last [`AuditLog`] does.
struct WeakLog {
    state: Weak<Mutex<State>>,
    common: Arc<Common>,
}

impl WeakLog {
    fn upgrade(&self) -> Option<AuditLog> {
        Some(AuditLog {
            state: self.state.upgrade()?,
            common: self.common.clone(),
        })
    }

    fn is_alive(&self) -> bool {
        self.state.strong_count() > 0
    }
}

impl AuditLog {
    /// [`open_with`](Self::open_with) the default settings.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, AuditSettings::default())
    }

    /// Opens (or creates) the log; an existing log is verified and the chain
    /// continues from its last line. A torn last line is set aside and a
    /// `log_recovered` line says so. A log damaged before its last line is
    /// refused: jobkey does not write after a tampered record.
    pub fn open_with(path: &Path, settings: AuditSettings) -> Result<Self, AuditError> {
        Self::open_as(path, settings, None)
    }

    /// [`open_with`](Self::open_with), every line written naming
    /// `replica` (the replica among several that share one audit trail).
    pub fn open_as(
        path: &Path,
        settings: AuditSettings,
        replica: Option<&str>,
    ) -> Result<Self, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let regular = path.is_file();
        let key_path = settings
            .checkpoints
            .key_file
            .clone()
            .unwrap_or_else(|| default_checkpoint_key_path(path));
        let key = CheckpointKey::load_or_create(&key_path)?;
        let resumed = rotate::resume(path, regular)?;
        let recovered = match &resumed.torn {
            Some(torn) => Some(set_aside(path, torn)?),
            None => None,
        };
        let since = resumed.since_checkpoint;
        let start = resumed.start;
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(path).map_err(io)?;
        let regular = regular || file.metadata().map(|m| m.is_file()).unwrap_or(false);
        let sync_file = Arc::new(file.try_clone().map_err(io)?);
        let log = AuditLog {
            common: Arc::new(Common {
                path: path.to_path_buf(),
                sync_lock: Mutex::new(()),
                writable: AtomicBool::new(true),
                sync_interval: settings.sync_interval,
            }),
            state: Arc::new(Mutex::new(State {
                sync_file,
                rotation: rotate::Rotation::new(settings.rotation.clone(), resumed.age),
                cuts: Vec::new(),
                syncs: 0,
                file,
                regular,
                written: start.clone(),
                synced: start,
                truncate_pending: false,
                down: None,
                refusals: refusals::RefusalTable::new(settings.refusals),
                pending: VecDeque::new(),
                replica: replica.map(str::to_owned),
                checkpoints: Checkpointer {
                    key,
                    settings: settings.checkpoints.clone(),
                    since,
                    last: Instant::now(),
                    unsent: Vec::new(),
                },
                syncer: None,
            })),
        };
        if let Some(recovery) = recovered {
            tracing::warn!(
                log = %path.display(),
                set_aside = %recovery.set_aside,
                line = recovery.line,
                why = %recovery.why,
                "the audit log's last line was torn; it was moved beside the log"
            );
            log.append_blocking(&Event::log_recovered(recovery))?;
        }
        Ok(log)
    }

    /// How often the server runs [`tick`](Self::tick).
    pub fn sync_interval(&self) -> Duration {
        self.common.sync_interval
    }

    /// Whether appends work (false during an outage). `/readyz` reports it.
    pub fn is_writable(&self) -> bool {
        self.common.writable.load(Ordering::SeqCst)
    }

    /// `Ok` when appends work. During an outage, the request that asked is
    /// counted as refused (the `log_resumed` line reports the count) and
    /// must not run: nothing may be issued that cannot be recorded.
    pub fn check_writable(&self) -> Result<(), AuditError> {
        if self.is_writable() {
            return Ok(());
        }
        let mut st = self.lock();
        match &mut st.down {
            Some(down) => {
                down.refused += 1;
                Err(self.unavailable(down))
            }
            None => Ok(()),
        }
    }

    /// Appends one event (see the module docs for when it reaches the
    /// disk). `Ok` for an `allow` means it is on disk.
    ///
    /// The line is written here, on the caller's task: a `write(2)` into
    /// the page cache under the state lock (and, at a rotation, the
    /// rename). An allow then waits for the log's syncer thread
    /// (`syncer.rs`): each of its rounds syncs every line written before
    /// it starts and wakes the appends it covered at once, so no thread
    /// is handed a task per append. A refusal waits for nothing.
    pub async fn append(&self, event: Event) -> Result<(), AuditError> {
        let started = std::time::Instant::now();
        let written = {
            let mut st = self.lock();
            self.start_syncer(&mut st, &event).and_then(|()| {
                Ok(self
                    .write_locked(&mut st, &event)?
                    .map(|mine| (mine, st.syncer.as_ref().map(syncer::Syncer::waiter))))
            })
        };
        let appended = match written {
            Ok(Some((mine, Some(waiter)))) => self.wait_synced(mine, waiter).await,
            Ok(Some((_, None))) => Err(self.syncer_stopped()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        crate::metrics::audit_append(appended.is_ok(), started.elapsed());
        appended
    }

    /// Before an allow is written: its sync will need the syncer thread;
    /// started at the first, and again should it have died.
    /// During an outage nothing is started: the write that follows
    /// refuses the append and counts it.
    fn start_syncer(&self, st: &mut State, event: &Event) -> Result<(), AuditError> {
        if event.is_refusal()
            || st.down.is_some()
            || st.syncer.as_ref().is_some_and(syncer::Syncer::is_running)
        {
            return Ok(());
        }
        let started = syncer::Syncer::start(self.downgrade()).map_err(|e| AuditError::Io {
            path: self.common.path.display().to_string(),
            reason: format!("cannot start the thread that syncs the log: {e}"),
        })?;
        st.syncer = Some(started);
        Ok(())
    }

    /// Waits until record `seq` (written after `epoch` cuts) is settled:
    /// the syncer's first round that started after it was written synced
    /// it, or cut it off (failed: the append fails).
    async fn wait_synced(
        &self,
        (epoch, seq): (usize, u64),
        mut waiter: syncer::Waiter,
    ) -> Result<(), AuditError> {
        loop {
            let Some(round) = waiter.next_round().await else {
                return Err(self.syncer_stopped());
            };
            if round.cuts == epoch && round.synced >= seq {
                return Ok(());
            }
            // A cut: the state says which records it took.
            let st = self.lock();
            if let Some(r) = self.settled(&st, epoch, seq) {
                return r;
            }
        }
    }

    fn syncer_stopped(&self) -> AuditError {
        tracing::error!(log = %self.common.path.display(), "the audit log's sync thread has stopped; the next allow starts a new one");
        AuditError::Io {
            path: self.common.path.display().to_string(),
            reason: "the thread that syncs the log has stopped".into(),
        }
    }

    fn downgrade(&self) -> WeakLog {
        WeakLog {
            state: Arc::downgrade(&self.state),
            common: self.common.clone(),
        }
    }

    /// The synchronous append (for the CLI and tests): [`append`](Self::append)
    /// waiting for the sync on this thread.
    ///
    /// An `allow` is written under the state lock, then synced outside it
    /// (group commit): while one append syncs, the others write their
    /// lines, and the next sync covers all of them. Each returns only once
    /// its own line is on disk; the chain's order is the order written.
    pub fn append_blocking(&self, event: &Event) -> Result<(), AuditError> {
        let written = self.write_locked(&mut self.lock(), event)?;
        match written {
            Some(mine) => self.sync_to(mine),
            None => Ok(()),
        }
    }

    /// Writes `event`'s line (or, a repeated refusal, counts it). For an
    /// `allow`, returns the place its sync must reach; `None` when nothing
    /// waits for a sync (a refusal reaches the disk with the next one).
    fn write_locked(
        &self,
        st: &mut State,
        event: &Event,
    ) -> Result<Option<(usize, u64)>, AuditError> {
        if let Some(down) = &mut st.down {
            down.refused += 1;
            return Err(self.unavailable(down));
        }
        if !event.is_refusal() {
            if let Err(e) = st.write(&self.common.path, event) {
                return Err(self.fail(st, e));
            }
            return Ok(Some((st.cuts.len(), st.written.seq)));
        }
        let admitted = st.refusals.admit(event, Instant::now());
        st.pending.extend(admitted.summaries);
        if let Err(e) = st.write_pending(&self.common.path) {
            return Err(self.fail(st, e));
        }
        if admitted.write
            && let Err(e) = st.write(&self.common.path, event)
        {
            return Err(self.fail(st, e));
        }
        Ok(None)
    }

    /// The server's timer, every [`sync_interval`](Self::sync_interval):
    /// during an outage, tries to resume (writes `log_resumed`); then
    /// writes the summaries of windows that ended, and syncs what is not
    /// on disk yet.
    pub async fn tick(&self) -> Result<(), AuditError> {
        let this = self.clone();
        self.blocking(move || this.tick_blocking(Instant::now()))
            .await
    }

    /// [`tick`](Self::tick), synchronously, as if at `now`.
    pub fn tick_blocking(&self, now: Instant) -> Result<(), AuditError> {
        let mut st = self.lock();
        if let Some(down) = &st.down {
            let outage = Outage {
                since: down.since.clone(),
                refused: down.refused,
                error: down.error.clone(),
            };
            let line = Event::log_resumed(outage.clone());
            let resumed = st
                .write(&self.common.path, &line)
                .and_then(|()| st.sync(&self.common.path));
            if let Err(e) = resumed {
                tracing::debug!(error = %e, "the audit log still refuses writes");
                let down = st.down.as_ref().map(|d| self.unavailable(d));
                return Err(down.unwrap_or(e));
            }
            tracing::warn!(
                since = %outage.since,
                refused = outage.refused,
                "the audit log accepts writes again"
            );
            st.down = None;
            self.common.writable.store(true, Ordering::SeqCst);
        }
        let ended = st.refusals.due(now);
        st.pending.extend(ended);
        let cp = &st.checkpoints;
        let checkpoint_due =
            cp.since > 0 && now.saturating_duration_since(cp.last) >= cp.settings.interval;
        let done = st
            .write_pending(&self.common.path)
            .and_then(|()| {
                if checkpoint_due {
                    st.write_checkpoint(&self.common.path)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| st.rotate_if_due(&self.common.path, now))
            .and_then(|()| st.sync(&self.common.path));
        done.map_err(|e| self.fail(&mut st, e))
    }

    /// Shutdown: every open window's summary is written, a checkpoint
    /// closes the log (if records were written since the last one), and
    /// everything is synced.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let this = self.clone();
        self.blocking(move || this.flush_blocking()).await
    }

    /// [`flush`](Self::flush), synchronously.
    pub fn flush_blocking(&self) -> Result<(), AuditError> {
        {
            let mut st = self.lock();
            let all = st.refusals.drain();
            st.pending.extend(all);
        }
        self.tick_blocking(Instant::now())?;
        let mut st = self.lock();
        if st.checkpoints.since == 0 {
            return Ok(());
        }
        let done = st
            .write_checkpoint(&self.common.path)
            .and_then(|()| st.sync(&self.common.path));
        done.map_err(|e| self.fail(&mut st, e))
    }

    /// The public key that verifies this log's checkpoints.
    pub fn public_key(&self) -> PublicKey {
        self.lock().checkpoints.key.public_key().clone()
    }

    /// Returns once record `seq` (written after `epoch` cuts) is on disk: synced
    /// by this call, or found synced by another one.
    fn sync_to(&self, mine: (usize, u64)) -> Result<(), AuditError> {
        self.group_commit(Commit::Mine(mine))
    }

    /// The syncer thread's round: [`group_commit`](Self::group_commit)
    /// whatever was written (a failure cuts off what it did not sync, so
    /// each waiter finds its record settled either way), counted into
    /// `started` as it takes its position, and where that left the log.
    fn sync_round(&self, started: &AtomicU64) -> syncer::Round {
        if let Err(e) = self.group_commit(Commit::Round(started)) {
            tracing::debug!(error = %e, "the audit log's sync failed");
        }
        let st = self.lock();
        syncer::Round {
            synced: st.synced.seq,
            cuts: st.cuts.len(),
        }
    }

    /// Syncs every line written so far, holding `sync_lock` (the syncer
    /// thread and synchronous appends take turns): first a rotation, if
    /// due, then `fdatasync` outside the state lock. For one record,
    /// returns at once if it is settled, and afterwards whether it is.
    fn group_commit(&self, commit: Commit<'_>) -> Result<(), AuditError> {
        let _leader = match self.common.sync_lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mine = match commit {
            Commit::Mine(mine) => Some(mine),
            Commit::Round(_) => None,
        };
        let (upto, at, file) = {
            let mut st = self.lock();
            if let Commit::Round(started) = commit {
                // The lines written from now on wait for the next round.
                started.fetch_add(1, Ordering::SeqCst);
            }
            // Rotation syncs and renames: here, on the syncer thread (or
            // the thread of a synchronous append, or `tick`), never on the
            // task that wrote the line.
            if let Err(e) = st.rotate_if_due(&self.common.path, Instant::now()) {
                // Its checkpoint could not be written (or its sync
                // failed): what is not on disk is cut off as well, so
                // that every append waiting for it fails now.
                let to = st.synced.clone();
                st.roll_back(to);
                return Err(self.fail(&mut st, e));
            }
            match mine {
                Some((epoch, seq)) => {
                    if let Some(r) = self.settled(&st, epoch, seq) {
                        return r;
                    }
                }
                None if st.written == st.synced => return Ok(()),
                None => {}
            }
            (st.written.clone(), st.cuts.len(), st.sync_file.clone())
        };
        // A rotation since then synced the old file: `upto` is settled.
        let synced = file.sync_data();
        let mut st = self.lock();
        st.syncs += 1;
        match synced {
            Ok(()) => {
                if st.cuts.len() == at && upto.seq > st.synced.seq {
                    st.synced_to(&self.common.path, upto);
                }
                match mine {
                    Some((epoch, seq)) => self.settled(&st, epoch, seq).unwrap_or(Ok(())),
                    None => Ok(()),
                }
            }
            Err(e) => {
                let to = st.synced.clone();
                st.roll_back(to);
                let e = AuditError::Io {
                    path: self.common.path.display().to_string(),
                    reason: e.to_string(),
                };
                Err(self.fail(&mut st, e))
            }
        }
    }

    /// Whether record `seq` of `epoch` is settled: on disk (`Ok`), or cut
    /// off by a failed sync (`Err`); `None` while it waits for a sync.
    fn settled(&self, st: &State, epoch: usize, seq: u64) -> Option<Result<(), AuditError>> {
        if st.cuts[epoch..].iter().any(|&cut| cut < seq) {
            return Some(Err(match &st.down {
                Some(down) => self.unavailable(down),
                None => AuditError::Io {
                    path: self.common.path.display().to_string(),
                    reason: "the record was cut off after a failed sync".into(),
                },
            }));
        }
        (st.synced.seq >= seq).then_some(Ok(()))
    }

    /// How many `fdatasync`s the log has done (group commit shares one
    /// among the appends that wait for it): for the tests that show it.
    #[cfg(test)]
    pub(crate) fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    async fn blocking(
        &self,
        f: impl FnOnce() -> Result<(), AuditError> + Send + 'static,
    ) -> Result<(), AuditError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuditError::Io {
                path: self.common.path.display().to_string(),
                reason: format!("writer task failed: {e}"),
            })?
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn unavailable(&self, down: &Down) -> AuditError {
        AuditError::Unavailable {
            path: self.common.path.display().to_string(),
            since: down.since.clone(),
            error: down.error.clone(),
        }
    }

    /// A write or sync failed: the outage starts (the file was already put
    /// back to the last good record).
    fn fail(&self, st: &mut State, e: AuditError) -> AuditError {
        if st.down.is_none() {
            tracing::error!(error = %e, "writing the audit log failed; refusing requests until it accepts writes again");
            st.down = Some(Down {
                since: timestamp(),
                error: match &e {
                    AuditError::Io { reason, .. } => reason.clone(),
                    other => other.to_string(),
                },
                refused: 1,
            });
        }
        self.common.writable.store(false, Ordering::SeqCst);
        e
    }
}

impl State {
    /// Writes one line after `written` (not synced). On failure the file
    /// goes back to `written.len`.
    fn write(&mut self, path: &Path, event: &Event) -> Result<(), AuditError> {
        let err = |reason: String| AuditError::Io {
            path: path.display().to_string(),
            reason,
        };
        if self.truncate_pending {
            self.file
                .set_len(self.written.len)
                .map_err(|e| err(format!("cannot cut the file back to its last record: {e}")))?;
            self.truncate_pending = false;
        }
        let mut map = event.to_map().map_err(err)?;
        if let Some(replica) = &self.replica {
            map.insert("replica".into(), Value::from(replica.as_str()));
        }
        let seq = self.written.seq + 1;
        map.insert("seq".into(), Value::from(seq));
        map.insert("prev".into(), Value::from(self.written.prev.clone()));
        // Serialized once: the hash covers these bytes, and the line is
        // them with `hash` added at the end.
        let canonical = chain::canonical(&map).map_err(err)?;
        let hash = chain::hash_bytes(&self.written.prev, &canonical);
        let line = chain::seal(canonical, &hash).map_err(err)?;
        let written = self.file.write_all(&line).and_then(|()| self.file.flush());
        if let Err(e) = written {
            self.roll_back(self.written.clone());
            return Err(err(e.to_string()));
        }
        self.written = Position {
            seq,
            prev: hash,
            len: self.written.len + line.len() as u64,
        };
        if event.action() == Action::Checkpoint {
            return Ok(());
        }
        self.checkpoints.since += 1;
        if self.checkpoints.since >= self.checkpoints.settings.every {
            self.write_checkpoint(path)?;
        }
        Ok(())
    }

    /// Signs the head (the last record written) and writes the checkpoint
    /// record; it is sent to the second sink once synced.
    fn write_checkpoint(&mut self, path: &Path) -> Result<(), AuditError> {
        let cp = self
            .checkpoints
            .key
            .sign(self.written.seq, &self.written.prev);
        self.write(path, &Event::checkpoint_record(cp.clone()))?;
        self.checkpoints.since = 0;
        self.checkpoints.last = Instant::now();
        self.checkpoints.unsent.push(cp);
        Ok(())
    }

    /// Syncs what was written. On failure, what was not known to be on
    /// disk is cut off (whether it reached the disk is unknown).
    fn sync(&mut self, path: &Path) -> Result<(), AuditError> {
        if self.written == self.synced {
            return Ok(());
        }
        self.syncs += 1;
        if let Err(e) = self.file.sync_data() {
            self.roll_back(self.synced.clone());
            return Err(AuditError::Io {
                path: path.display().to_string(),
                reason: e.to_string(),
            });
        }
        self.synced_to(path, self.written.clone());
        Ok(())
    }

    /// `upto` is on disk: the checkpoints it covers go to the second sink.
    fn synced_to(&mut self, path: &Path, upto: Position) {
        let (now, later): (Vec<Checkpoint>, Vec<Checkpoint>) =
            std::mem::take(&mut self.checkpoints.unsent)
                .into_iter()
                .partition(|c| c.seq < upto.seq);
        self.checkpoints.unsent = later;
        for cp in &now {
            checkpoint::emit(&self.checkpoints.settings, path, cp);
        }
        self.synced = upto;
    }

    fn write_pending(&mut self, path: &Path) -> Result<(), AuditError> {
        while let Some(e) = self.pending.front().cloned() {
            self.write(path, &e)?;
            self.pending.pop_front();
        }
        Ok(())
    }

    fn roll_back(&mut self, to: Position) {
        // A checkpoint of record `seq` is record `seq + 1`.
        self.checkpoints.unsent.retain(|c| c.seq < to.seq);
        if to.seq < self.written.seq {
            self.cuts.push(to.seq);
        }
        if self.regular && self.file.set_len(to.len).is_err() {
            self.truncate_pending = true;
        }
        self.written = to;
    }
}

impl Drop for State {
    fn drop(&mut self) {
        if self.written != self.synced {
            let _ = self.file.sync_data();
        }
    }
}

/// Moves a torn last line into a new file beside the log
/// (`<log>.torn-<UTC time>`, mode 0600, synced), then cuts it off the log.
fn set_aside(path: &Path, torn: &TornLine) -> Result<Recovery, AuditError> {
    let io = |what: &Path, e: std::io::Error| AuditError::Io {
        path: what.display().to_string(),
        reason: format!("setting the torn last line aside: {e}"),
    };
    let mut bytes = Vec::new();
    let mut log = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io(path, e))?;
    log.seek(SeekFrom::Start(torn.offset))
        .and_then(|_| log.read_to_end(&mut bytes))
        .map_err(|e| io(path, e))?;
    let stamp: String = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let mut n = 0;
    let (aside, mut out) = loop {
        let name = match n {
            0 => format!("{base}.torn-{stamp}"),
            n => format!("{base}.torn-{stamp}-{n}"),
        };
        let candidate = path.with_file_name(&name);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(&candidate) {
            Ok(f) => break (candidate, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(io(&candidate, e)),
        }
    };
    out.write_all(&bytes)
        .and_then(|()| out.sync_all())
        .map_err(|e| io(&aside, e))?;
    log.set_len(torn.offset)
        .and_then(|()| log.sync_all())
        .map_err(|e| io(path, e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = File::open(dir)
    {
        let _ = d.sync_all();
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    Ok(Recovery {
        set_aside: aside
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        line: torn.line,
        bytes: bytes.len() as u64,
        sha256: crate::random::hex(digest.as_ref()),
        why: torn.why.clone(),
    })
}

/// Now, as RFC 3339 with milliseconds (UTC).
pub(crate) fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod tests;
