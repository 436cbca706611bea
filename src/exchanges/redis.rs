//! The shared store: Redis, one key per exchange
//! (`<prefix>exchange:<request_id>`), expiring with the record.

use std::time::SystemTime;

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use super::{ExchangeRecord, ExchangeStoreError};

/// A Redis-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> ExchangeStoreError {
    ExchangeStoreError::Unavailable {
        reason: crate::redis_conn::failure(&e),
    }
}

impl RedisStore {
    /// The store on a shared connection (`crate::redis_conn::connect`).
    pub fn new(conn: ConnectionManager, prefix: &str) -> RedisStore {
        RedisStore {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, request_id: &str) -> String {
        format!("{}exchange:{request_id}", self.prefix)
    }

    fn decode(raw: Option<String>) -> Result<Option<ExchangeRecord>, ExchangeStoreError> {
        raw.map(|s| {
            serde_json::from_str(&s).map_err(|e| ExchangeStoreError::Corrupt {
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    /// `PING`, within the command timeout.
    pub async fn ping(&self) -> Result<(), ExchangeStoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub async fn put(&self, rec: &ExchangeRecord) -> Result<(), ExchangeStoreError> {
        let text = serde_json::to_string(rec).map_err(|e| ExchangeStoreError::Corrupt {
            reason: e.to_string(),
        })?;
        // A minute of slack: a revocation racing the last expiry still finds it.
        let secs = rec.remaining(SystemTime::now()).as_secs() + 60;
        let mut conn = self.conn.clone();
        conn.set_ex::<_, _, ()>(self.key(&rec.request_id), text, secs)
            .await
            .map_err(unavailable)
    }

    pub async fn get(
        &self,
        request_id: &str,
    ) -> Result<Option<ExchangeRecord>, ExchangeStoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.key(request_id)).await.map_err(unavailable)?;
        Self::decode(raw)
    }

    pub async fn take(
        &self,
        request_id: &str,
    ) -> Result<Option<ExchangeRecord>, ExchangeStoreError> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn
            .get_del(self.key(request_id))
            .await
            .map_err(unavailable)?;
        Self::decode(raw)
    }
}
