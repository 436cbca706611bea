//! The shared tables in Redis: one GCRA key per source or identity
//! (`<prefix>limit:<key>`), changed only by one Lua script (atomic, with
//! Redis's clock, so replicas' clocks do not matter), and one key per spent
//! token (`<prefix>spent:<digest>`, `SET NX PX`). Every key expires.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::gcra::Rate;
use super::{LimitError, Spend, Verdict};

/// The GCRA step of `gcra.rs`, in Lua. `KEYS[1]`: the key; `ARGV[1]`: the
/// emission interval in ms; `ARGV[2]`: the burst. Returns 0 when allowed,
/// else the ms until the next request would be.
const GCRA: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local emission = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + emission
local allow_at = new_tat - emission * burst
if now < allow_at then
  return allow_at - now
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', new_tat - now)
return 0
";

/// Rate limits and spent tokens in Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisLimits {
    conn: ConnectionManager,
    prefix: String,
    /// The script's SHA-1, for `EVALSHA`.
    sha: String,
}

fn unavailable(e: &redis::RedisError) -> LimitError {
    LimitError::Unavailable {
        reason: crate::redis_conn::failure(e),
    }
}

impl RedisLimits {
    /// The tables on a shared connection (`crate::redis_conn::connect`).
    pub fn new(conn: ConnectionManager, prefix: &str) -> RedisLimits {
        let sha = crate::random::hex(
            ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, GCRA.as_bytes()).as_ref(),
        );
        RedisLimits {
            conn,
            prefix: prefix.to_owned(),
            sha,
        }
    }

    /// One request for `key`: `EVALSHA`, or `EVAL` when Redis does not
    /// have the script (after a restart), which also caches it.
    pub async fn check(&self, key: &str, rate: Rate) -> Result<Verdict, LimitError> {
        let key = format!("{}limit:{key}", self.prefix);
        let mut conn = self.conn.clone();
        let run = |cmd: &str, script: &str| {
            let mut c = redis::cmd(cmd);
            c.arg(script)
                .arg(1)
                .arg(&key)
                .arg(rate.emission_ms())
                .arg(rate.burst);
            c
        };
        let wait: u64 = match run("EVALSHA", &self.sha).query_async(&mut conn).await {
            Ok(w) => w,
            Err(e) if e.code() == Some("NOSCRIPT") => run("EVAL", GCRA)
                .query_async(&mut conn)
                .await
                .map_err(|e| unavailable(&e))?,
            Err(e) => return Err(unavailable(&e)),
        };
        Ok(if wait == 0 {
            Verdict::Allowed
        } else {
            Verdict::Limited {
                retry_after: Duration::from_millis(wait),
            }
        })
    }

    /// `SET <prefix>spent:<digest> 1 NX PX <ttl>`.
    pub async fn spend(&self, digest: &str, ttl: Duration) -> Result<Spend, LimitError> {
        let mut conn = self.conn.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}spent:{digest}", self.prefix))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(if set.is_some() {
            Spend::First
        } else {
            Spend::Replayed
        })
    }

    pub async fn release(&self, digest: &str) -> Result<(), LimitError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(format!("{}spent:{digest}", self.prefix))
            .query_async::<i64>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| unavailable(&e))
    }
}
