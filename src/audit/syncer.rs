//! The log's syncer: one OS thread per [`AuditLog`](super::AuditLog)
//! (started by its first async append) that does the group commit for
//! every async append waiting for its line to reach the disk.
//!
//! An append writes its line on its own task, rings the [`Bell`] and
//! awaits the end of the next round; a round syncs everything written
//! when it starts (`AuditLog::sync_round`) and is announced to every
//! waiter at once (a `watch` of the rounds done). So one `fdatasync` and
//! one broadcast serve all the appends in flight, where a blocking task
//! per append cost two thread hand-offs each.
//!
//! Architecture invariant: the thread holds the log only weakly
//! ([`WeakLog`]) between rounds and ends when the log is dropped (the
//! [`Syncer`] kept in the log's state closes the bell); a waiter whose
//! thread ended gets an error, never a hang.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::WeakLog;

/// How long the thread sleeps without a ring before it checks that the
/// log still exists (it is told when it goes; this is a safety net).
const IDLE: Duration = Duration::from_secs(10);

/// Where the log stood after a round (read under its state lock): what is
/// on disk, and how many failed syncs have cut the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Round {
    pub synced: u64,
    pub cuts: usize,
}

/// Wakes the thread: `rung` says a round is wanted, `closed` that the log
/// is gone. The mutex only orders the thread's sleep with the ringing.
#[derive(Default)]
struct Bell {
    rung: AtomicBool,
    closed: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
    /// A test's way to make the thread die (as a bug would).
    #[cfg(test)]
    die: AtomicBool,
}

enum Wake {
    Rung,
    Idle,
    Closed,
}

impl Bell {
    /// Asks for a round. Only the first ring since the last round starts
    /// wakes the thread; the others find it rung already.
    fn ring(&self) {
        if !self.rung.swap(true, Ordering::SeqCst) {
            let _g = lock(&self.lock);
            self.cv.notify_one();
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _g = lock(&self.lock);
        self.cv.notify_one();
    }

    fn wait(&self) -> Wake {
        let mut g = lock(&self.lock);
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return Wake::Closed;
            }
            if self.rung.swap(false, Ordering::SeqCst) {
                return Wake::Rung;
            }
            let (next, timeout) = match self.cv.wait_timeout(g, IDLE) {
                Ok(r) => r,
                Err(p) => p.into_inner(),
            };
            g = next;
            if timeout.timed_out()
                && !self.closed.load(Ordering::SeqCst)
                && !self.rung.load(Ordering::SeqCst)
            {
                return Wake::Idle;
            }
        }
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The log's end of its syncer thread, kept in its state: dropping it
/// (with the log) ends the thread.
pub(super) struct Syncer {
    bell: Arc<Bell>,
    rounds: watch::Receiver<Round>,
}

impl Syncer {
    /// Starts the thread for `log`.
    pub(super) fn start(log: WeakLog, now: Round) -> std::io::Result<Self> {
        let bell = Arc::new(Bell::default());
        let (done, rounds) = watch::channel(now);
        let thread_bell = bell.clone();
        std::thread::Builder::new()
            .name("jobkey-audit-sync".into())
            .spawn(move || run(&log, &thread_bell, &done))?;
        Ok(Syncer { bell, rounds })
    }

    /// Whether the thread still runs (it ended if it panicked).
    pub(super) fn is_running(&self) -> bool {
        self.rounds.has_changed().is_ok()
    }

    /// A waiter for the rounds that end from now on.
    pub(super) fn waiter(&self) -> Waiter {
        let mut rounds = self.rounds.clone();
        rounds.mark_unchanged();
        Waiter {
            bell: self.bell.clone(),
            rounds,
        }
    }

    /// Watches the rounds: closed once the thread has ended (tests).
    #[cfg(test)]
    pub(super) fn rounds(&self) -> watch::Receiver<Round> {
        self.rounds.clone()
    }

    /// Makes the thread die at its next ring (tests).
    #[cfg(test)]
    pub(super) fn kill(&self) {
        self.bell.die.store(true, Ordering::SeqCst);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.bell.close();
    }
}

/// One append's wait for the syncer.
pub(super) struct Waiter {
    bell: Arc<Bell>,
    rounds: watch::Receiver<Round>,
}

impl Waiter {
    /// Asks for a round and waits for the next one to end (it may be one
    /// already under way): where it left the log. `None`: the thread has
    /// ended.
    pub(super) async fn next_round(&mut self) -> Option<Round> {
        self.bell.ring();
        self.rounds.changed().await.ok()?;
        Some(*self.rounds.borrow_and_update())
    }
}

fn run(log: &WeakLog, bell: &Bell, done: &watch::Sender<Round>) {
    loop {
        match bell.wait() {
            Wake::Closed => return,
            Wake::Idle if !log.is_alive() => return,
            Wake::Idle => continue,
            Wake::Rung => {}
        }
        #[cfg(test)]
        if bell.die.load(Ordering::SeqCst) {
            return;
        }
        // The log is held only for the round; if its last user dropped it
        // meanwhile, it goes here, and its `Syncer` closes the bell.
        let Some(log) = log.upgrade() else { return };
        let round = log.sync_round();
        drop(log);
        done.send_replace(round);
    }
}
