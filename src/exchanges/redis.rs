//! The shared store: Redis, one key per exchange
//! (`<prefix>exchange:<request_id>`), expiring with the record.

use std::time::{Duration, SystemTime};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{ExchangeRecord, ExchangeStoreError};

/// A Redis-backed store. Cheap to clone.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
}

fn unavailable(e: redis::RedisError) -> ExchangeStoreError {
    // RedisError's Display names the failure kind and server message, not
    // the connection URL (which may hold a password).
    ExchangeStoreError::Unavailable {
        reason: format!("redis: {}", e.kind_name()),
    }
}

trait KindName {
    fn kind_name(&self) -> String;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> String {
        if self.is_timeout() {
            "timed out".into()
        } else if self.is_connection_refusal() || self.is_connection_dropped() {
            "cannot connect".into()
        } else {
            format!("{:?}", self.kind())
        }
    }
}

impl RedisStore {
    /// Connects (with `timeout` for connecting and for each command).
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<RedisStore, ExchangeStoreError> {
        let client = redis::Client::open(url).map_err(|_| ExchangeStoreError::Unavailable {
            reason: "the Redis URL is not valid".into(),
        })?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, cfg)
            .await
            .map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            prefix: prefix.to_owned(),
        })
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
