//! The in-process store: one replica only (see the module docs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ExchangeRecord;

/// Records in a map; expired ones are dropped on access.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, ExchangeRecord>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl MemoryStore {
    /// Runs `f` on the map after dropping the records expired at `now`
    /// (Unix seconds).
    fn with_at<T>(&self, now: u64, f: impl FnOnce(&mut HashMap<String, ExchangeRecord>) -> T) -> T {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, r| r.expires_at > now);
        f(&mut map)
    }

    pub fn put(&self, rec: &ExchangeRecord) {
        self.with_at(now_secs(), |m| {
            m.insert(rec.request_id.clone(), rec.clone())
        });
    }

    pub fn get(&self, request_id: &str) -> Option<ExchangeRecord> {
        self.get_at(request_id, now_secs())
    }

    /// [`get`](Self::get) as of `now` (Unix seconds).
    pub(super) fn get_at(&self, request_id: &str, now: u64) -> Option<ExchangeRecord> {
        self.with_at(now, |m| m.get(request_id).cloned())
    }

    pub fn take(&self, request_id: &str) -> Option<ExchangeRecord> {
        self.with_at(now_secs(), |m| m.remove(request_id))
    }
}
