//! A rate (`"60/min"`, with a burst) and the GCRA step, as a pure function
//! of the stored theoretical arrival time and `now` (both in ms). The Redis
//! script in `redis.rs` is the same step in Lua.

use std::time::Duration;

use super::Verdict;

/// `count` requests per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
    pub burst: u32,
}

/// Why a rate was refused (the config names the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    #[error("{0:?} is not a rate; write e.g. \"60/min\", \"10/s\", \"100/5m\", or \"off\"")]
    Syntax(String),
    #[error("{0:?}: the count must be from 1 to 1000000")]
    Count(String),
    #[error("{0:?}: the period must be from 1s to 24h")]
    Period(String),
    #[error("the burst must be from 1 to 1000000")]
    Burst,
}

impl Rate {
    pub const fn per_minute(count: u32) -> Rate {
        Rate {
            count,
            period: Duration::from_secs(60),
            burst: count,
        }
    }

    /// `"N/unit"` or `"N/<duration>"` (`s`, `min`, `h`, `5m`, ...); `"off"`
    /// is `None`. The burst is `count` unless `burst` says otherwise.
    pub fn parse(text: &str, burst: Option<u32>) -> Result<Option<Rate>, RateError> {
        let t = text.trim();
        if t == "off" {
            return Ok(None);
        }
        let syntax = || RateError::Syntax(text.to_owned());
        let (n, per) = t.split_once('/').ok_or_else(syntax)?;
        let count: u32 = n.trim().parse().map_err(|_| syntax())?;
        if !(1..=1_000_000).contains(&count) {
            return Err(RateError::Count(text.to_owned()));
        }
        let per = per.trim();
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            per.to_owned()
        } else {
            format!("1{per}")
        };
        let period = humantime::parse_duration(&per).map_err(|_| syntax())?;
        if period < Duration::from_secs(1) || period > Duration::from_secs(24 * 3600) {
            return Err(RateError::Period(text.to_owned()));
        }
        let burst = burst.unwrap_or(count);
        if !(1..=1_000_000).contains(&burst) {
            return Err(RateError::Burst);
        }
        Ok(Some(Rate {
            count,
            period,
            burst,
        }))
    }

    /// The time one request uses up (at least 1 ms).
    pub fn emission_ms(&self) -> u64 {
        (u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX) / u64::from(self.count)).max(1)
    }
}

/// One GCRA step. `tat` is the key's stored theoretical arrival time
/// (`None`: no entry). Returns the verdict and, when allowed, the new
/// `tat` to store (until it passes: after that the entry means nothing).
pub(super) fn step(tat: Option<u64>, now: u64, rate: Rate) -> (Verdict, Option<u64>) {
    let t = rate.emission_ms();
    let tat = tat.unwrap_or(now).max(now);
    let new_tat = tat.saturating_add(t);
    let allow_at = new_tat.saturating_sub(t.saturating_mul(u64::from(rate.burst)));
    if now < allow_at {
        let retry_after = Duration::from_millis(allow_at - now);
        return (Verdict::Limited { retry_after }, None);
    }
    (Verdict::Allowed, Some(new_tat))
}
