//! The log's syncer: one OS thread per [`AuditLog`](super::AuditLog)
//! (started by its first async append) that does the group commit for
//! every async append waiting for its line to reach the disk.
//!
//! An append writes its line on its own task and, under the same state
//! lock, reads how many rounds have started: the next one is the first to
//! start after its line was written, so it covers it. The append rings
//! the thread and sleeps until that round ends. A round
//! (`AuditLog::sync_round`) syncs everything written when it starts and
//! then wakes exactly its own waiters at once (one `Notify` per round
//! parity: while round `k` syncs, the appends written meanwhile wait for
//! `k + 1` on the other one). So one `fdatasync` and one broadcast serve
//! all the appends in flight, and no append is woken by a round that
//! does not cover it.
//!
//! Architecture invariant: the thread holds the log only weakly
//! ([`WeakLog`]) between rounds and ends when the log is dropped (the
//! [`Syncer`] kept in the log's state tells it); a waiter whose thread
//! ended gets an error, never a hang.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

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

/// What the thread and the appends share.
#[derive(Default)]
struct Shared {
    /// A round is wanted.
    rung: AtomicBool,
    /// The log is gone.
    closed: AtomicBool,
    /// Orders the thread's sleep with the ringing.
    lock: Mutex<()>,
    cv: Condvar,
    /// Rounds started: changed under the log's state lock, when a round
    /// takes the position it will sync.
    started: AtomicU64,
    /// Rounds ended, and where the last one left the log.
    done: AtomicU64,
    synced: AtomicU64,
    cuts: AtomicUsize,
    /// The waiters of the rounds ending odd and even.
    ended: [Notify; 2],
    /// The thread has ended.
    stopped: AtomicBool,
    /// A test's way to make the thread end (as a bug would).
    #[cfg(test)]
    die: AtomicBool,
}

enum Wake {
    Rung,
    Idle,
    Closed,
}

impl Shared {
    /// Asks for a round. Only the first ring since the last round started
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

    fn end_round(&self, n: u64, round: Round) {
        self.synced.store(round.synced, Ordering::SeqCst);
        self.cuts.store(round.cuts, Ordering::SeqCst);
        self.done.store(n, Ordering::SeqCst);
        self.ended[(n % 2) as usize].notify_waiters();
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
    shared: Arc<Shared>,
}

impl Syncer {
    /// Starts the thread for `log`.
    pub(super) fn start(log: WeakLog) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("jobkey-audit-sync".into())
            .spawn(move || run(&log, &theirs))?;
        Ok(Syncer { shared })
    }

    /// Whether the thread still runs (it ended if it panicked).
    pub(super) fn is_running(&self) -> bool {
        !self.shared.stopped.load(Ordering::SeqCst)
    }

    /// The waiter for a line just written: called under the state lock
    /// that wrote it, so the round it waits for starts after the line.
    pub(super) fn waiter(&self) -> Waiter {
        Waiter {
            shared: self.shared.clone(),
            round: self.shared.started.load(Ordering::SeqCst) + 1,
        }
    }

    /// Tells whether the thread has ended (tests).
    #[cfg(test)]
    pub(super) fn probe(&self) -> Probe {
        Probe(self.shared.clone())
    }

    /// Makes the thread end at its next ring (tests).
    #[cfg(test)]
    pub(super) fn kill(&self) {
        self.shared.die.store(true, Ordering::SeqCst);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// Whether a syncer thread has ended (tests); holds no log.
#[cfg(test)]
pub(super) struct Probe(Arc<Shared>);

#[cfg(test)]
impl Probe {
    pub(super) fn thread_ended(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }
}

/// One append's wait for the round that covers its line.
pub(super) struct Waiter {
    shared: Arc<Shared>,
    round: u64,
}

impl Waiter {
    /// Asks for the round and waits for it to end: where it left the log
    /// (or a later round did). `None`: the thread has ended. Called again,
    /// waits for the round after.
    pub(super) async fn next_round(&mut self) -> Option<Round> {
        let s = &*self.shared;
        s.ring();
        let slot = &s.ended[(self.round % 2) as usize];
        let ended = loop {
            // Listening before looking: a round that ends in between
            // wakes this one.
            let mut ended = pin!(slot.notified());
            ended.as_mut().enable();
            if s.done.load(Ordering::SeqCst) >= self.round {
                break true;
            }
            if s.stopped.load(Ordering::SeqCst) {
                break false;
            }
            ended.await;
        };
        if !ended {
            return None;
        }
        self.round += 1;
        Some(Round {
            synced: s.synced.load(Ordering::SeqCst),
            cuts: s.cuts.load(Ordering::SeqCst),
        })
    }
}

/// Marks the thread ended (however it ends: a panic too) and wakes every
/// waiter, which then finds it ended.
struct Stopped<'a>(&'a Shared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.stopped.store(true, Ordering::SeqCst);
        for slot in &self.0.ended {
            slot.notify_waiters();
        }
    }
}

fn run(log: &WeakLog, shared: &Shared) {
    let _stopped = Stopped(shared);
    loop {
        match shared.wait() {
            Wake::Closed => return,
            Wake::Idle if !log.is_alive() => return,
            Wake::Idle => continue,
            Wake::Rung => {}
        }
        #[cfg(test)]
        if shared.die.load(Ordering::SeqCst) {
            return;
        }
        // The log is held only for the round; if its last user dropped it
        // meanwhile, it goes here, and its `Syncer` tells this loop to end.
        let Some(log) = log.upgrade() else { return };
        let round = log.sync_round(&shared.started);
        drop(log);
        let n = shared.started.load(Ordering::SeqCst);
        shared.end_round(n, round);
    }
}
