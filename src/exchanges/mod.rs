//! The exchange store: what each exchange issued that can be revoked,
//! remembered so that `POST /v1/revoke` can undo it (from any replica).
//!
//! An [`ExchangeRecord`] holds the exchange's request id, the SHA-256 of its
//! [`RevocationHandle`] (never the handle), the job's identity (issuer name,
//! `sub`, run id) and the [`Revocable`]s: lease ids, token accessors, PKI
//! serials, wrapping-token accessors. It expires with the longest-lived
//! credential of the exchange: after that there is nothing left to revoke.
//!
//! Two stores, behind [`ExchangeStore`]:
//! - [`RedisStore`] (`[state] redis_url`): shared by every replica; one key
//!   per exchange, `SET … EX`, taken with `GETDEL` so that two concurrent
//!   revocations cannot both proceed;
//! - [`MemoryStore`] (no `[state]` section): this process only. **Single
//!   replica only**: with several replicas, a revocation that reaches a
//!   replica other than the one that served the exchange finds nothing, and
//!   a restart forgets every record (the credentials then simply expire).

mod handle;
mod memory;
mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub(crate) use handle::{HandleHash, RevocationHandle};
pub(crate) use memory::MemoryStore;
pub(crate) use redis::RedisStore;

use crate::vault::Revocable;

/// Who ran the exchange: a later request with an ID token of the same
/// issuer, `sub` and run (GitHub `run_id`, GitLab `pipeline_id`) may revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub issuer: String,
    pub sub: String,
    pub run: String,
}

/// One exchange's revocable credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeRecord {
    pub request_id: String,
    pub environment: String,
    /// The SHA-256 of the revocation handle.
    pub handle_sha256: HandleHash,
    /// `None` when the token had no `sub` or no run id: only the handle
    /// can revoke then.
    pub owner: Option<Owner>,
    pub revocables: Vec<Revocable>,
    /// Unix seconds: the latest expiry among the exchange's credentials.
    pub expires_at: u64,
}

impl ExchangeRecord {
    /// Seconds until the record may be forgotten (at least 1).
    pub fn remaining(&self, now: SystemTime) -> Duration {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        Duration::from_secs(self.expires_at.saturating_sub(now).max(1))
    }
}

/// The exchange store could not be used. Never carries the Redis URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeStoreError {
    #[error("the exchange store is unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("the exchange store holds an unreadable record: {reason}")]
    Corrupt { reason: String },
}

/// The configured store.
pub enum ExchangeStore {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl ExchangeStore {
    /// Stores (or replaces) a record until its expiry.
    pub async fn put(&self, rec: &ExchangeRecord) -> Result<(), ExchangeStoreError> {
        match self {
            ExchangeStore::Memory(s) => {
                s.put(rec);
                Ok(())
            }
            ExchangeStore::Redis(s) => s.put(rec).await,
        }
    }

    /// Reads a record without removing it.
    pub async fn get(
        &self,
        request_id: &str,
    ) -> Result<Option<ExchangeRecord>, ExchangeStoreError> {
        match self {
            ExchangeStore::Memory(s) => Ok(s.get(request_id)),
            ExchangeStore::Redis(s) => s.get(request_id).await,
        }
    }

    /// Whether the store answers (Redis: `PING`; memory: always).
    pub async fn ping(&self) -> Result<(), ExchangeStoreError> {
        match self {
            ExchangeStore::Memory(_) => Ok(()),
            ExchangeStore::Redis(s) => s.ping().await,
        }
    }

    /// Removes and returns a record, atomically: of two concurrent calls,
    /// one gets it.
    pub async fn take(
        &self,
        request_id: &str,
    ) -> Result<Option<ExchangeRecord>, ExchangeStoreError> {
        match self {
            ExchangeStore::Memory(s) => Ok(s.take(request_id)),
            ExchangeStore::Redis(s) => s.take(request_id).await,
        }
    }
}

/// Lowercase hex SHA-256.
fn sha256_hex(data: &[u8]) -> String {
    crate::random::hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: &str, secs_from_now: u64) -> ExchangeRecord {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        ExchangeRecord {
            request_id: id.into(),
            environment: "production".into(),
            handle_sha256: RevocationHandle::mint().unwrap().sha256(),
            owner: Some(Owner {
                issuer: "github".into(),
                sub: "repo:acme/api".into(),
                run: "1".into(),
            }),
            revocables: vec![Revocable::Lease {
                lease_id: "database/creds/app/x".into(),
            }],
            expires_at: now + secs_from_now,
        }
    }

    #[tokio::test]
    async fn memory_store_put_get_take_once() {
        let s = ExchangeStore::Memory(MemoryStore::default());
        let r = record("r1", 60);
        s.put(&r).await.unwrap();
        assert_eq!(s.get("r1").await.unwrap(), Some(r.clone()));
        assert_eq!(s.take("r1").await.unwrap(), Some(r));
        assert_eq!(s.take("r1").await.unwrap(), None, "taken only once");
        assert_eq!(s.get("nope").await.unwrap(), None);
    }

    #[test]
    fn memory_store_forgets_expired_records() {
        let s = MemoryStore::default();
        let r = record("old", 60);
        s.put(&r);
        assert_eq!(
            s.get_at("old", r.expires_at - 1),
            Some(r.clone()),
            "kept until it expires"
        );
        assert_eq!(s.get_at("old", r.expires_at), None, "forgotten at expiry");
        assert_eq!(s.get("old"), None, "and gone for good");
    }

    /// Regression: every access used to scan every live record. Expired
    /// records go (only they), a replaced record leaves no stale expiry
    /// behind, and a taken one leaves nothing.
    #[test]
    fn memory_store_drops_exactly_the_expired_records() {
        let s = MemoryStore::default();
        let short = record("short", 10);
        let long = record("long", 100);
        s.put(&short);
        s.put(&long);
        let mut replaced = record("replaced", 10);
        s.put(&replaced);
        replaced.expires_at = long.expires_at;
        s.put(&replaced);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get_at("long", short.expires_at), Some(long.clone()));
        assert_eq!(s.len(), 2, "only the expired record went");
        assert_eq!(
            s.get_at("replaced", short.expires_at),
            Some(replaced.clone())
        );
        assert_eq!(s.take("replaced"), Some(replaced));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get_at("long", long.expires_at), None);
        assert_eq!(s.len(), 0, "nothing is left behind");
    }

    #[test]
    fn sha256_is_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
