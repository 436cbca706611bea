//! The one connection to Redis that replicas share state through (the
//! exchange store, rate limits, spent tokens), and the one way its failures
//! are named.
//!
//! **Invariant:** an error never carries the connection URL, which may hold
//! a password: only the kind of failure.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects to `url` with `timeout` for connecting and for each command
/// (reconnecting on its own after a failure). The manager is cheap to
/// clone; every user of Redis in one process shares it.
pub(crate) async fn connect(url: &str, timeout: Duration) -> Result<ConnectionManager, String> {
    let client = redis::Client::open(url).map_err(|_| "the Redis URL is not valid".to_owned())?;
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, cfg)
        .await
        .map_err(|e| failure(&e))
}

/// What failed, in a few words (`redis: timed out`, `redis: cannot
/// connect`, or the error kind): never the URL or a value.
pub(crate) fn failure(e: &redis::RedisError) -> String {
    if e.is_timeout() {
        "redis: timed out".to_owned()
    } else if e.is_connection_refusal() || e.is_connection_dropped() || e.is_io_error() {
        "redis: cannot connect".to_owned()
    } else {
        format!("redis: {:?}", e.kind())
    }
}
