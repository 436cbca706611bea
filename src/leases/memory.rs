//! The in-process store: one replica only (see the module docs).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ExchangeRecord, LeaseStoreError, Store};

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
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, ExchangeRecord>) -> T) -> T {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_secs();
        map.retain(|_, r| r.expires_at > now);
        f(&mut map)
    }
}

impl Store for MemoryStore {
    async fn put(&self, rec: &ExchangeRecord) -> Result<(), LeaseStoreError> {
        self.with(|m| m.insert(rec.request_id.clone(), rec.clone()));
        Ok(())
    }

    async fn get(&self, request_id: &str) -> Result<Option<ExchangeRecord>, LeaseStoreError> {
        Ok(self.with(|m| m.get(request_id).cloned()))
    }

    async fn take(&self, request_id: &str) -> Result<Option<ExchangeRecord>, LeaseStoreError> {
        Ok(self.with(|m| m.remove(request_id)))
    }
}
