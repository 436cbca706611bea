//! Abuse controls shared by every replica: rate limits and replay
//! protection.
//!
//! - **Rate limits** ([`Limiter`]): GCRA (the generic cell rate
//!   algorithm: one "theoretical arrival time" per key, no counters or
//!   windows) per caller's source address (an IPv4 address, an IPv6 /64)
//!   before the token is verified, and per identity (the issuer's name and
//!   the project's immutable id, as the provider table names it; `sub` for
//!   an issuer without one) right after. With `[state] redis_url` every
//!   replica checks the same keys through one Lua script, atomically, with
//!   Redis's clock; without it each process keeps its own bounded table.
//!   When Redis fails, each replica falls back to its own table (fail
//!   open, with a local limit): refusing every caller because the shared
//!   counter is unreachable would turn a Redis outage into a full outage.
//! - **Replay protection** ([`ReplayCache`]): for an issuer with
//!   `single_use = true`, a token's `jti` (or, without one, the SHA-256
//!   of the token) is marked as spent until the token expires, with
//!   `SET … NX PX`. A second exchange with it is refused. When Redis
//!   fails, tokens of those issuers are refused (fail closed): without the
//!   shared mark, a replica cannot know whether another spent it.
//!
//! Keys never hold a claim or a token as written: they are SHA-256
//! digests, so a key is bounded and reveals nothing.

mod gcra;
mod memory;
mod redis;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

pub use gcra::Rate;

pub(crate) use memory::{MemoryLimiter, MemoryReplay};
pub(crate) use redis::RedisLimits;

use crate::token::VerifiedToken;

/// The checked `[limits]` section and the issuers' `single_use`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSettings {
    /// Per source address (`None`: off).
    pub per_source: Option<Rate>,
    /// Per identity, for environments without their own (`None`: off).
    pub per_identity: Option<Rate>,
    /// `[limits.environments.NAME] per_identity`: replaces `per_identity`
    /// for exchanges asking for that environment, in a bucket of its own.
    pub environments: BTreeMap<String, Option<Rate>>,
    /// The most keys a process keeps in memory (each table).
    pub max_entries: usize,
    /// Issuers (configured names) whose tokens may be exchanged once.
    pub single_use: BTreeSet<String>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            per_source: Some(Rate::per_minute(120)),
            per_identity: Some(Rate::per_minute(60)),
            environments: BTreeMap::new(),
            max_entries: 100_000,
            single_use: BTreeSet::new(),
        }
    }
}

/// What a rate check said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit: the next request would be allowed after this long.
    Limited {
        retry_after: Duration,
    },
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Source,
    Identity,
}

impl Scope {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Scope::Source => "source",
            Scope::Identity => "identity",
        }
    }
}

/// The shared state could not be used. Never carries the Redis URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("the shared state is unavailable: {reason}")]
    Unavailable { reason: String },
    #[error("the replay cache is full ({entries} tokens)")]
    Full { entries: usize },
}

/// Where keys live.
enum Backend {
    Memory,
    Redis(RedisLimits),
}

/// The rate limits: checks per source and per identity.
pub struct Limiter {
    settings: LimitSettings,
    backend: Backend,
    /// The table without Redis, and the fallback while Redis fails.
    local: MemoryLimiter,
    /// Unix ms of the last "Redis failed" warning (one per 10 s at most).
    last_warning: AtomicU64,
}

impl Limiter {
    /// Per process.
    pub fn memory(settings: LimitSettings) -> Limiter {
        Self::with(settings, Backend::Memory)
    }

    /// Shared through Redis, with a local fallback.
    pub fn redis(settings: LimitSettings, redis: RedisLimits) -> Limiter {
        Self::with(settings, Backend::Redis(redis))
    }

    fn with(settings: LimitSettings, backend: Backend) -> Limiter {
        Limiter {
            local: MemoryLimiter::new(settings.max_entries),
            settings,
            backend,
            last_warning: AtomicU64::new(0),
        }
    }

    /// The source's limit. A caller without an address is not limited
    /// here (the listener always gives one).
    pub async fn check_source(&self, ip: Option<IpAddr>) -> Verdict {
        let (Some(rate), Some(ip)) = (self.settings.per_source, ip) else {
            return Verdict::Allowed;
        };
        self.check(&source_key(ip), rate).await
    }

    /// The identity's limit for `environment`.
    pub async fn check_identity(&self, environment: &str, v: &VerifiedToken) -> Verdict {
        let (bucket, rate) = match self.settings.environments.get(environment) {
            Some(rate) => (environment, *rate),
            None => ("*", self.settings.per_identity),
        };
        let Some(rate) = rate else {
            return Verdict::Allowed;
        };
        self.check(&identity_key(bucket, v), rate).await
    }

    async fn check(&self, key: &str, rate: Rate) -> Verdict {
        match &self.backend {
            Backend::Memory => self.local.check(key, rate, Instant::now()),
            Backend::Redis(r) => match r.check(key, rate).await {
                Ok(v) => v,
                Err(e) => {
                    self.warn(&e);
                    self.local.check(key, rate, Instant::now())
                }
            },
        }
    }

    fn warn(&self, e: &LimitError) {
        let now = unix_ms(SystemTime::now());
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 10_000
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %e, "rate limits: Redis failed; each replica limits on its own until it answers again");
        }
    }
}

/// What marks a token as spent: a digest of its issuer and `jti`, or of
/// the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayKey {
    digest: String,
    ttl: Duration,
}

impl ReplayKey {
    /// The key of a verified token of a `single_use` issuer, kept until
    /// its `exp` plus `leeway` (at least one second). `token_sha256` is the
    /// token's digest, used when it has no `jti`.
    pub fn new(
        v: &VerifiedToken,
        token_sha256: &str,
        leeway: Duration,
        now: SystemTime,
    ) -> ReplayKey {
        let digest = match v.claims.get("jti") {
            Some(Value::String(jti)) if !jti.is_empty() => {
                sha256_hex(&[v.issuer.as_bytes(), b"jti", jti.as_bytes()])
            }
            _ => sha256_hex(&[v.issuer.as_bytes(), b"token", token_sha256.as_bytes()]),
        };
        let exp = v.claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        let until = Duration::from_secs(exp) + leeway;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ttl = until.saturating_sub(now).max(Duration::from_secs(1));
        ReplayKey { digest, ttl }
    }

    #[cfg(test)]
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Whether a token was spent before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    /// This exchange is the token's first.
    First,
    /// The token was exchanged before.
    Replayed,
}

/// Replay protection for `single_use` issuers.
pub struct ReplayCache {
    /// Issuer name → its leeway, for the issuers with `single_use`.
    issuers: BTreeMap<String, Duration>,
    store: ReplayStore,
}

enum ReplayStore {
    Memory(MemoryReplay),
    Redis(RedisLimits),
}

impl ReplayCache {
    pub fn memory(issuers: BTreeMap<String, Duration>, max_entries: usize) -> ReplayCache {
        ReplayCache {
            issuers,
            store: ReplayStore::Memory(MemoryReplay::new(max_entries)),
        }
    }

    pub fn redis(issuers: BTreeMap<String, Duration>, redis: RedisLimits) -> ReplayCache {
        ReplayCache {
            issuers,
            store: ReplayStore::Redis(redis),
        }
    }

    /// The token's key when its issuer is `single_use`, else `None`.
    pub fn key_for(&self, v: &VerifiedToken, token_sha256: &str) -> Option<ReplayKey> {
        let leeway = self.issuers.get(&v.issuer)?;
        Some(ReplayKey::new(v, token_sha256, *leeway, SystemTime::now()))
    }

    /// Marks the token as spent, atomically: of two concurrent calls, one
    /// gets [`Spend::First`].
    pub async fn spend(&self, key: &ReplayKey) -> Result<Spend, LimitError> {
        match &self.store {
            ReplayStore::Memory(m) => m.spend(&key.digest, key.ttl, Instant::now()),
            ReplayStore::Redis(r) => r.spend(&key.digest, key.ttl).await,
        }
    }

    /// Gives a token back: its exchange issued nothing (or took it all
    /// back), so the job may try again with it. Best effort.
    pub async fn release(&self, key: &ReplayKey) {
        match &self.store {
            ReplayStore::Memory(m) => m.release(&key.digest),
            ReplayStore::Redis(r) => {
                if let Err(error) = r.release(&key.digest).await {
                    tracing::warn!(%error, "could not give a single-use token back; it stays spent until it expires");
                }
            }
        }
    }
}

/// The source's key: an IPv4 address (an IPv4-mapped IPv6 one as IPv4),
/// or an IPv6 address's /64.
pub(crate) fn source_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => format!("src:{v4}"),
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            format!("src:{}/64", std::net::Ipv6Addr::from(net))
        }
    }
}

/// The identity's key in `bucket` (an environment with its own limit, or
/// `*`): the issuer's name and the project's immutable ids from the
/// provider table; `sub` when the provider names none or the token lacks
/// them; the issuer alone when it has neither.
pub(crate) fn identity_key(bucket: &str, v: &VerifiedToken) -> String {
    let scalar = |name: &str| match v.claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let project: Option<Vec<String>> = {
        let names = v.provider.project_claims();
        if names.is_empty() {
            None
        } else {
            names.iter().map(|n| scalar(n)).collect()
        }
    };
    let (kind, value) = match (project, scalar("sub")) {
        (Some(ids), _) => ("project", ids.join("\0")),
        (None, Some(sub)) => ("sub", sub),
        (None, None) => ("issuer", String::new()),
    };
    format!(
        "id:{}",
        sha256_hex(&[
            bucket.as_bytes(),
            v.issuer.as_bytes(),
            kind.as_bytes(),
            value.as_bytes()
        ])
    )
}

/// Lowercase hex SHA-256 of the parts, each length-prefixed (so that no
/// two lists of parts collide).
fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    crate::random::hex(ctx.finish().as_ref())
}

/// The SHA-256 of a token, for the replay key of a token without `jti`.
pub(crate) fn token_sha256(token: &str) -> String {
    crate::random::hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn unix_ms(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// Whole seconds, rounded up, at least one: what `Retry-After` says.
pub(crate) fn retry_after_secs(d: Duration) -> u64 {
    d.as_millis().div_ceil(1000).max(1) as u64
}

#[cfg(test)]
mod tests;
