//! What the review page shows, counted from the audit log.

use std::collections::BTreeMap;

use crate::audit::query::{Entry, LogSet, who};
use crate::audit::{Action, AuditError, Decision};

/// One time bucket of the chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Bucket {
    pub start_ms: u64,
    pub allowed: u64,
    pub denied: u64,
    pub errors: u64,
}

/// One refused request, for the table of recent denials.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Denial {
    pub time: String,
    pub request_id: String,
    pub environment: String,
    pub who: String,
    pub code: String,
}

/// Counts over the whole log.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Stats {
    pub exchanges_allowed: u64,
    /// Denied exchanges, summarized repeats included.
    pub exchanges_denied: u64,
    pub exchanges_failed: u64,
    pub revocations: u64,
    pub credentials_revoked: u64,
    /// environment → identity → allowed exchanges.
    pub identities: BTreeMap<String, BTreeMap<String, u64>>,
    /// credential → (times issued, rules).
    pub credentials: BTreeMap<String, (u64, BTreeMap<String, u64>)>,
    /// error code → count.
    pub reasons: BTreeMap<String, u64>,
    pub recent_denials: Vec<Denial>,
    pub buckets: Vec<Bucket>,
    pub bucket_ms: u64,
    /// Line kinds this version does not know (checkpoints, …) → count.
    pub other_lines: BTreeMap<String, u64>,
    pub unreadable: usize,
}

const BUCKETS: u64 = 24;
const RECENT: usize = 20;

/// Reads `set` once and counts.
pub(crate) fn gather(set: &LogSet) -> Result<Stats, AuditError> {
    let mut s = Stats::default();
    let mut points: Vec<(u64, Decision, u64)> = Vec::new();
    let mut records = set.records()?;
    while let Some(r) = records.next_record()? {
        let e = match &r.entry {
            Entry::Event(e) => e,
            Entry::Other { kind, .. } => {
                *s.other_lines.entry(kind.clone()).or_default() += 1;
                continue;
            }
        };
        // The log's own lines (checkpoints, recoveries): counted by kind.
        if matches!(
            e.action(),
            Action::Checkpoint | Action::LogRecovered | Action::LogResumed
        ) {
            *s.other_lines
                .entry(crate::audit::query::action_name(e.action()).to_owned())
                .or_default() += 1;
            continue;
        }
        let (of, count) = match (e.action(), e.summary()) {
            (Action::RefusalsSummarized, Some(sum)) => (sum.of, sum.count),
            (a, _) => (a, 1),
        };
        let Some(decision) = e.decision() else {
            continue;
        };
        if of == Action::Revoke {
            if decision == Decision::Allow {
                s.revocations += 1;
                s.credentials_revoked += e.revoked().unwrap_or(0) as u64;
            }
            continue;
        }
        if of != Action::Exchange {
            continue;
        }
        points.push((r.time_ms, decision, count));
        match decision {
            Decision::Allow => {
                s.exchanges_allowed += 1;
                let env = e.environment().unwrap_or("?").to_owned();
                *s.identities
                    .entry(env)
                    .or_default()
                    .entry(who(e))
                    .or_default() += 1;
                for c in e.credentials() {
                    let entry = s.credentials.entry(c.name.clone()).or_default();
                    entry.0 += 1;
                    *entry.1.entry(c.rule.clone()).or_default() += 1;
                }
            }
            Decision::Deny | Decision::Error => {
                if decision == Decision::Deny {
                    s.exchanges_denied += count;
                } else {
                    s.exchanges_failed += count;
                }
                let code = e.code().unwrap_or("?").to_owned();
                *s.reasons.entry(code.clone()).or_default() += count;
                if e.action() != Action::RefusalsSummarized {
                    s.recent_denials.push(Denial {
                        time: e.time().to_owned(),
                        request_id: e.request_id().to_owned(),
                        environment: e.environment().unwrap_or("-").to_owned(),
                        who: who(e),
                        code,
                    });
                    if s.recent_denials.len() > RECENT {
                        s.recent_denials.remove(0);
                    }
                }
            }
        }
    }
    s.unreadable = records.unreadable.len();
    s.recent_denials.reverse();
    let times = points.iter().map(|p| p.0).filter(|t| *t > 0);
    if let (Some(first), Some(last)) = (times.clone().min(), times.max()) {
        // Whole minutes per bucket, at least one.
        let span = last - first + 1;
        let minute = 60_000;
        s.bucket_ms = span.div_ceil(BUCKETS).div_ceil(minute).max(1) * minute;
        let start = first - first % s.bucket_ms;
        let n = (last - start) / s.bucket_ms + 1;
        s.buckets = (0..n)
            .map(|i| Bucket {
                start_ms: start + i * s.bucket_ms,
                ..Bucket::default()
            })
            .collect();
        for (t, d, count) in points.into_iter().filter(|p| p.0 > 0) {
            let b = &mut s.buckets[((t - start) / s.bucket_ms) as usize];
            match d {
                Decision::Allow => b.allowed += count,
                Decision::Deny => b.denied += count,
                Decision::Error => b.errors += count,
            }
        }
    }
    Ok(s)
}
