//! The in-process store: one replica only (see the module docs).
//!
//! Records sit in a map by request id, and their expiries in an ordered
//! index beside it, so that dropping the expired records costs only the
//! records dropped: each access pops the index's expired front, never scans
//! the live records (an access used to `retain` over the whole map, which
//! made every exchange cost as much as the number of records alive).

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ExchangeRecord;

/// Records in a map; expired ones are dropped on access.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, ExchangeRecord>,
    /// `(expires_at, request_id)` of every record in `map`.
    expiries: BTreeSet<(u64, String)>,
}

impl Inner {
    /// Drops the records expired at `now` (Unix seconds).
    fn expire(&mut self, now: u64) {
        while let Some(first) = self.expiries.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, id)) = self.expiries.pop_first() {
                self.map.remove(&id);
            }
        }
    }

    fn remove(&mut self, request_id: &str) -> Option<ExchangeRecord> {
        let rec = self.map.remove(request_id)?;
        self.expiries
            .remove(&(rec.expires_at, rec.request_id.clone()));
        Some(rec)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl MemoryStore {
    /// Runs `f` after dropping the records expired at `now` (Unix seconds).
    fn with_at<T>(&self, now: u64, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.expire(now);
        f(&mut inner)
    }

    pub fn put(&self, rec: &ExchangeRecord) {
        self.with_at(now_secs(), |m| {
            m.remove(&rec.request_id);
            m.expiries.insert((rec.expires_at, rec.request_id.clone()));
            m.map.insert(rec.request_id.clone(), rec.clone());
        });
    }

    pub fn get(&self, request_id: &str) -> Option<ExchangeRecord> {
        self.get_at(request_id, now_secs())
    }

    /// [`get`](Self::get) as of `now` (Unix seconds).
    pub(super) fn get_at(&self, request_id: &str, now: u64) -> Option<ExchangeRecord> {
        self.with_at(now, |m| m.map.get(request_id).cloned())
    }

    pub fn take(&self, request_id: &str) -> Option<ExchangeRecord> {
        self.with_at(now_secs(), |m| m.remove(request_id))
    }

    /// How many records are held (expired ones included until the next
    /// access drops them).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        debug_assert_eq!(inner.map.len(), inner.expiries.len());
        inner.map.len()
    }
}
