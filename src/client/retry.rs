//! Riding out a short outage of the broker or of Vault behind it
//! (`--retry-for`).
//!
//! A request to the broker is tried again only when the answer says that
//! nothing was issued and nothing was decided on the request's merits:
//! - the broker answered `503` (Vault, the audit log, the exchange store or
//!   an issuer's keys unavailable) or `429`, with or without a jobkey error
//!   body (a proxy in front of a restarting broker answers 503 too);
//! - no connection could be made (refused, unreachable, a failed TLS
//!   handshake): the request was never sent.
//!
//! Never on a denial or any other `4xx`, a `502`, a timeout, or a connection
//! that broke after the request was sent (the broker may have issued
//! credentials for it already).
//!
//! The delay is the broker's `Retry-After` (at most [`MAX_RETRY_AFTER`]),
//! else 1 s doubling up to 15 s. No retry starts later than the window
//! after the first attempt; a window of zero never retries. Each retry is
//! said on stderr, with the error that caused it (never a secret: see
//! `ClientError`).

use std::future::Future;
use std::time::Duration;

use super::ClientError;
use crate::outbound::OutboundError;

/// The longest `Retry-After` honoured; a longer one is shortened to this.
pub(super) const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How long to keep retrying, and the backoff when the broker names no
/// delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryPolicy {
    /// No retry starts later than this after the first attempt.
    pub window: Duration,
    /// The first delay without `Retry-After`; it doubles each time.
    pub first_backoff: Duration,
    /// The longest delay without `Retry-After`.
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// Retries for `window` (zero: never), with the standard delays.
    pub(super) fn within(window: Duration) -> RetryPolicy {
        RetryPolicy {
            window,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(15),
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    /// The delay before retry number `retry` (1 for the first), given the
    /// server's `Retry-After`.
    pub(super) fn delay(&self, retry: u32, asked: Option<Duration>) -> Duration {
        match asked {
            Some(d) => d.min(self.max_retry_after),
            None => self
                .first_backoff
                .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
                .min(self.max_backoff),
        }
    }
}

/// What an error allows.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Final: the error is returned.
    Final,
    /// Nothing was issued: try again, after the server's delay if it named
    /// one.
    Retry { asked: Option<Duration> },
}

/// Whether the request that failed with `e` may be sent again.
pub(super) fn verdict(e: &ClientError) -> Verdict {
    match e {
        ClientError::Refused {
            status: 503 | 429,
            retry_after,
            ..
        }
        | ClientError::BrokerStatus {
            status: 503 | 429,
            retry_after,
        } => Verdict::Retry {
            asked: *retry_after,
        },
        ClientError::Broker(OutboundError::Connect { .. }) => Verdict::Retry { asked: None },
        _ => Verdict::Final,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or the window is
/// spent; `what` names the request in the messages ("the exchange").
pub(super) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let start = tokio::time::Instant::now();
    let mut retries: u32 = 0;
    loop {
        let err = match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let Verdict::Retry { asked } = verdict(&err) else {
            return Err(err);
        };
        let wait = policy.delay(retries + 1, asked);
        if start.elapsed() + wait > policy.window {
            if retries > 0 {
                eprintln!(
                    "jobkey: {what} still fails after {} retr{} in {}; giving up (--retry-for {})",
                    retries,
                    if retries == 1 { "y" } else { "ies" },
                    humantime::format_duration(round(start.elapsed())),
                    humantime::format_duration(policy.window),
                );
            }
            return Err(err);
        }
        retries += 1;
        eprintln!(
            "jobkey: {what} failed: {err}; retrying in {} (retry {retries}, for up to {} after the first attempt)",
            humantime::format_duration(wait),
            humantime::format_duration(policy.window),
        );
        tokio::time::sleep(wait).await;
    }
}

/// Whole seconds, for messages.
fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn refused(status: u16, retry_after: Option<u64>) -> ClientError {
        ClientError::Refused {
            status,
            code: "x".into(),
            message: "m".into(),
            request_id: None,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn only_unavailability_and_refused_connections_are_retried() {
        let connect = ClientError::Broker(OutboundError::Connect {
            url: "http://127.0.0.1:1/v1/exchange".into(),
            reason: "connection refused".into(),
        });
        let timeout = ClientError::Broker(OutboundError::Timeout {
            url: "u".into(),
            connect: Duration::from_secs(1),
            total: Duration::from_secs(2),
        });
        let broken = ClientError::Broker(OutboundError::Transport {
            url: "u".into(),
            reason: "reset".into(),
        });
        let secs = |s| Some(Duration::from_secs(s));
        // (error, verdict)
        let cases = [
            (refused(503, Some(5)), Verdict::Retry { asked: secs(5) }),
            (refused(503, None), Verdict::Retry { asked: None }),
            (refused(429, Some(2)), Verdict::Retry { asked: secs(2) }),
            (
                ClientError::BrokerStatus {
                    status: 503,
                    retry_after: None,
                },
                Verdict::Retry { asked: None },
            ),
            (connect, Verdict::Retry { asked: None }),
            (refused(403, Some(5)), Verdict::Final),
            (refused(401, None), Verdict::Final),
            (refused(400, None), Verdict::Final),
            (refused(404, None), Verdict::Final),
            (refused(502, Some(5)), Verdict::Final),
            (refused(500, None), Verdict::Final),
            (
                ClientError::BrokerStatus {
                    status: 502,
                    retry_after: None,
                },
                Verdict::Final,
            ),
            (timeout, Verdict::Final),
            (broken, Verdict::Final),
            (ClientError::Usage("u".into()), Verdict::Final),
        ];
        for (e, want) in cases {
            assert_eq!(verdict(&e), want, "{e:?}");
        }
    }

    #[test]
    fn delays_follow_retry_after_capped_else_double() {
        let p = RetryPolicy::within(Duration::from_secs(60));
        let s = Duration::from_secs;
        // (retry, Retry-After, delay)
        let cases = [
            (1, None, s(1)),
            (2, None, s(2)),
            (3, None, s(4)),
            (4, None, s(8)),
            (5, None, s(15)),
            (40, None, s(15)),
            (1, Some(s(5)), s(5)),
            (7, Some(s(5)), s(5)),
            (1, Some(s(0)), s(0)),
            (1, Some(s(3600)), MAX_RETRY_AFTER),
        ];
        for (retry, asked, want) in cases {
            assert_eq!(p.delay(retry, asked), want, "{retry} {asked:?}");
        }
    }

    /// Runs `run` over a scripted sequence of results; returns the outcome
    /// (`Ok(attempts)` or the final error's status) and the attempts made.
    async fn scripted(
        policy: RetryPolicy,
        script: &[Result<(), u16>],
    ) -> (Result<usize, u16>, usize) {
        let n = Cell::new(0);
        let r = run(&policy, "the test request", || {
            let i = n.get();
            n.set(i + 1);
            let step = script[i.min(script.len() - 1)];
            async move {
                match step {
                    Ok(()) => Ok(i + 1),
                    Err(status) => Err(refused(status, None)),
                }
            }
        })
        .await;
        let outcome = r.map_err(|e| match e {
            ClientError::Refused { status, .. } => status,
            other => panic!("{other:?}"),
        });
        (outcome, n.get())
    }

    #[tokio::test]
    async fn retries_stop_at_success_at_a_final_error_or_at_the_window() {
        let fast = RetryPolicy {
            window: Duration::from_millis(300),
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            max_retry_after: MAX_RETRY_AFTER,
        };
        let off = RetryPolicy {
            window: Duration::ZERO,
            ..fast
        };
        // (policy, script, outcome, attempts)
        type Case<'a> = (
            RetryPolicy,
            &'a [Result<(), u16>],
            Result<usize, u16>,
            usize,
        );
        let cases: [Case; 5] = [
            (fast, &[Err(503), Err(503), Ok(())], Ok(3), 3),
            (fast, &[Err(429), Ok(())], Ok(2), 2),
            (fast, &[Err(503), Err(403)], Err(403), 2),
            (fast, &[Err(403)], Err(403), 1),
            (off, &[Err(503), Ok(())], Err(503), 1),
        ];
        for (policy, script, outcome, attempts) in cases {
            assert_eq!(
                scripted(policy, script).await,
                (outcome, attempts),
                "{script:?}"
            );
        }
        // Always 503: retried until the window is spent, then the 503.
        let started = std::time::Instant::now();
        let (outcome, attempts) = scripted(fast, &[Err(503)]).await;
        assert_eq!(outcome, Err(503));
        assert!(attempts >= 5, "{attempts}");
        assert!(started.elapsed() <= Duration::from_millis(300) + Duration::from_millis(200));
    }
}
