//! The per-process tables: rate-limit keys and spent tokens, each capped.
//! An entry is worth nothing once its time passes; a full table first
//! drops those.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::gcra::{Rate, step};
use super::{LimitError, Spend, Verdict};

/// GCRA keys in memory: key → theoretical arrival time (ms since the
/// table's epoch).
pub(crate) struct MemoryLimiter {
    epoch: Instant,
    cap: usize,
    table: Mutex<HashMap<String, u64>>,
}

impl MemoryLimiter {
    pub(crate) fn new(cap: usize) -> MemoryLimiter {
        MemoryLimiter {
            epoch: Instant::now(),
            cap: cap.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// One request for `key` at `now`. A table still full after dropping
    /// what expired lets a new key through untracked: only many distinct
    /// sources can fill it, and those a per-source limit cannot hold back
    /// anyway (the per-identity limit still can, in its own table).
    pub(crate) fn check(&self, key: &str, rate: Rate, now: Instant) -> Verdict {
        let now = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let (verdict, new_tat) = step(table.get(key).copied(), now, rate);
        if let Some(tat) = new_tat {
            if !table.contains_key(key) && table.len() >= self.cap {
                table.retain(|_, tat| *tat > now);
                if table.len() >= self.cap {
                    tracing::warn!(
                        cap = self.cap,
                        "the rate-limit table is full; a new key goes untracked"
                    );
                    return verdict;
                }
            }
            table.insert(key.to_owned(), tat);
        }
        verdict
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> usize {
        self.table.lock().unwrap().len()
    }
}

/// Spent tokens in memory: digest → when it may be forgotten.
pub(crate) struct MemoryReplay {
    cap: usize,
    table: Mutex<HashMap<String, Instant>>,
}

impl MemoryReplay {
    pub(crate) fn new(cap: usize) -> MemoryReplay {
        MemoryReplay {
            cap: cap.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Marks `digest` spent for `ttl`. A table still full after dropping
    /// what expired refuses (fail closed): forgetting a token that has not
    /// expired would let it be replayed.
    pub(crate) fn spend(
        &self,
        digest: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<Spend, LimitError> {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = table.get(digest)
            && *until > now
        {
            return Ok(Spend::Replayed);
        }
        if table.len() >= self.cap {
            table.retain(|_, until| *until > now);
            if table.len() >= self.cap {
                return Err(LimitError::Full { entries: self.cap });
            }
        }
        table.insert(digest.to_owned(), now + ttl);
        Ok(Spend::First)
    }

    pub(crate) fn release(&self, digest: &str) {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(digest);
    }
}
