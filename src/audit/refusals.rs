//! Repeated refusals, counted instead of written.
//!
//! A refusal (a request that ended `deny` or `error`) belongs to a [`Key`]:
//! the caller's source (an IPv4 address, or an IPv6 caller's /64), the
//! action, the stage and the code, and, when the caller's token verified,
//! the token (its issuer, `sub` and `jti`) and the environment asked for.
//! So one token replayed is counted, while each token of a shared issuer
//! (anyone's GitHub job can get one) is recorded once per window. The first refusal of a
//! key opens a window and is written in full; the rest of that window's
//! refusals of the key are only counted. When the window ends (or on
//! shutdown), a key that counted any becomes one `refusals_summarized`
//! line.
//!
//! The table holds at most `table_size` keys. A refusal whose key finds no
//! room is counted in the overflow bucket of its (action, stage, code) and
//! never written on its own. So, whatever arrives, one window writes at
//! most `table_size` refusals, `table_size` summaries and one summary per
//! overflow bucket (there are as many buckets as error codes).
//!
//! Pure: the clock is an argument, so the tests drive it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::event::{Action, Event, Stage, Summary, bounded, canonical_ip};

/// How refusals are collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalSettings {
    /// How long a key's window lasts.
    pub window: Duration,
    /// The most keys tracked at once.
    pub table_size: usize,
}

impl Default for RefusalSettings {
    fn default() -> Self {
        RefusalSettings {
            window: Duration::from_secs(60),
            table_size: 256,
        }
    }
}

/// What a refusal is counted under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    source: Option<String>,
    action: Action,
    stage: Option<Stage>,
    code: Option<String>,
    /// A verified caller: its issuer and `sub`, its `jti`, and the
    /// environment.
    verified: Option<(String, Option<String>, Option<String>)>,
}

/// The overflow bucket: everything but the source and the caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bucket {
    action: Action,
    stage: Option<Stage>,
    code: Option<String>,
}

struct Window {
    opened: Instant,
    /// The first refusal of the window (written, or for the overflow
    /// bucket only counted): the summary's decision, stage and code.
    like: Event,
    counted: u64,
    first: Option<(String, String)>,
    last: Option<(String, String)>,
}

impl Window {
    fn new(like: &Event, now: Instant) -> Window {
        Window {
            opened: now,
            like: like.clone(),
            counted: 0,
            first: None,
            last: None,
        }
    }

    fn count(&mut self, e: &Event) {
        self.counted += 1;
        let seen = (e.time().to_owned(), e.request_id().to_owned());
        if self.first.is_none() {
            self.first = Some(seen.clone());
        }
        self.last = Some(seen);
    }

    fn summary(self, source: Option<String>, window: Duration, overflow: bool) -> Option<Event> {
        let (first, last) = (self.first?, self.last?);
        let subject = subject(&self.like);
        let jti = subject.as_ref().and_then(|_| jti(&self.like));
        let summary = Summary {
            of: self.like.action(),
            count: self.counted,
            first: first.0,
            last: last.0,
            first_request_id: first.1,
            last_request_id: last.1,
            window_s: window.as_secs(),
            subject,
            jti,
            overflow,
        };
        Some(Event::refusals_summarized(&self.like, source, summary))
    }
}

/// What to do with one refusal.
#[derive(Debug, Default)]
pub(super) struct Admitted {
    /// Write the refusal itself (it opened a window).
    pub write: bool,
    /// Summaries of windows that ended, to write first.
    pub summaries: Vec<Event>,
}

/// The table of open windows.
pub(super) struct RefusalTable {
    settings: RefusalSettings,
    keys: HashMap<Key, Window>,
    overflow: HashMap<Bucket, Window>,
}

impl RefusalTable {
    pub(super) fn new(settings: RefusalSettings) -> RefusalTable {
        RefusalTable {
            settings,
            keys: HashMap::new(),
            overflow: HashMap::new(),
        }
    }

    /// Decides for one refusal arriving at `now`.
    pub(super) fn admit(&mut self, e: &Event, now: Instant) -> Admitted {
        let mut out = Admitted {
            write: false,
            summaries: self.due(now),
        };
        let key = key_of(e);
        if let Some(w) = self.keys.get_mut(&key) {
            w.count(e);
            return out;
        }
        if self.keys.len() < self.settings.table_size {
            self.keys.insert(key, Window::new(e, now));
            out.write = true;
            return out;
        }
        let bucket = Bucket {
            action: key.action,
            stage: key.stage,
            code: key.code,
        };
        self.overflow
            .entry(bucket)
            .or_insert_with(|| Window::new(e, now))
            .count(e);
        out
    }

    /// Ends the windows that are over at `now`: the summaries of those
    /// that counted any refusal.
    pub(super) fn due(&mut self, now: Instant) -> Vec<Event> {
        let window = self.settings.window;
        let over = |w: &Window| now.saturating_duration_since(w.opened) >= window;
        let mut out = Vec::new();
        let ended: Vec<Key> = self
            .keys
            .iter()
            .filter(|(_, w)| over(w))
            .map(|(k, _)| k.clone())
            .collect();
        for k in ended {
            if let Some(w) = self.keys.remove(&k) {
                out.extend(w.summary(k.source, window, false));
            }
        }
        let ended: Vec<Bucket> = self
            .overflow
            .iter()
            .filter(|(_, w)| over(w))
            .map(|(b, _)| b.clone())
            .collect();
        for b in ended {
            if let Some(w) = self.overflow.remove(&b) {
                out.extend(w.summary(None, window, true));
            }
        }
        out
    }

    /// Ends every window (shutdown).
    pub(super) fn drain(&mut self) -> Vec<Event> {
        let window = self.settings.window;
        let mut out: Vec<Event> = self
            .keys
            .drain()
            .filter_map(|(k, w)| w.summary(k.source, window, false))
            .collect();
        out.extend(
            self.overflow
                .drain()
                .filter_map(|(_, w)| w.summary(None, window, true)),
        );
        out
    }
}

/// The source a refusal is counted under: an IPv4 address as is, an IPv6
/// address by its /64 (one host's share of a network), anything else (no
/// address, or one that does not parse) as written.
fn source_of(e: &Event) -> Option<String> {
    let s = e.source()?;
    Some(match s.parse::<IpAddr>().map(canonical_ip) {
        Ok(IpAddr::V6(v6)) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
        Ok(v4) => v4.to_string(),
        Err(_) => s.to_owned(),
    })
}

/// A verified caller's issuer and `sub`.
fn subject(e: &Event) -> Option<String> {
    let id = e.identity().filter(|id| id.is_verified())?;
    let issuer = id.issuer()?;
    let sub = id.claim("sub").map(|v| v.to_text()).unwrap_or_default();
    Some(bounded(&format!("{issuer} {sub}")))
}

/// A verified caller's token id.
fn jti(e: &Event) -> Option<String> {
    let id = e.identity().filter(|id| id.is_verified())?;
    Some(bounded(&id.claim("jti")?.to_text()))
}

fn key_of(e: &Event) -> Key {
    Key {
        source: source_of(e),
        action: e.action(),
        stage: e.stage(),
        code: e.code().map(str::to_owned),
        verified: subject(e).map(|s| (s, jti(e), e.environment().map(str::to_owned))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::audit::{Identity, Refusal};

    fn settings(table_size: usize) -> RefusalSettings {
        RefusalSettings {
            window: Duration::from_secs(60),
            table_size,
        }
    }

    /// A token refusal from `source` with `code`.
    fn token_refusal(rid: &str, source: &str, code: &str) -> Event {
        let mut b = Event::exchange(rid, "production", &[]);
        b.source(source.parse().unwrap());
        b.refused(Refusal::deny(Stage::Token, code, &json!({})))
    }

    /// A policy denial of a verified `sub` asking for `environment`.
    fn policy_denial(rid: &str, sub: &str, environment: &str) -> Event {
        token_denial(rid, sub, "jti-1", environment)
    }

    /// The same, naming the token's `jti`.
    fn token_denial(rid: &str, sub: &str, jti: &str, environment: &str) -> Event {
        let mut b = Event::exchange(rid, environment, &[]);
        b.source("192.0.2.1".parse().unwrap());
        let claims = json!({"sub": sub, "jti": jti}).as_object().unwrap().clone();
        b.identity(Identity::verified("github", &claims));
        b.refused(Refusal::deny(Stage::Policy, "no_rule_matched", &json!({})))
    }

    #[test]
    fn the_first_refusal_of_a_key_is_written_and_its_repeats_are_counted() {
        let mut t = RefusalTable::new(settings(8));
        let t0 = Instant::now();
        // (event, seconds after t0, written?)
        let cases: Vec<(Event, u64, bool)> = vec![
            (token_refusal("r1", "192.0.2.1", "bad_signature"), 0, true),
            (token_refusal("r2", "192.0.2.1", "bad_signature"), 1, false),
            (token_refusal("r3", "192.0.2.1", "bad_signature"), 2, false),
            // Another code, another source, another /64: their own keys.
            (token_refusal("r4", "192.0.2.1", "token_expired"), 2, true),
            (token_refusal("r5", "192.0.2.2", "bad_signature"), 2, true),
            (
                token_refusal("r6", "2001:db8:0:1::1", "bad_signature"),
                2,
                true,
            ),
            // The same /64 as r6, and the IPv4-mapped form of r1's address.
            (
                token_refusal("r7", "2001:db8:0:1::ffff", "bad_signature"),
                3,
                false,
            ),
            (
                token_refusal("r8", "::ffff:192.0.2.1", "bad_signature"),
                3,
                false,
            ),
            // Verified callers: each subject and environment its own key.
            (policy_denial("r9", "repo:a", "production"), 4, true),
            (policy_denial("r10", "repo:a", "production"), 4, false),
            (policy_denial("r11", "repo:a", "staging"), 4, true),
            (policy_denial("r12", "repo:b", "production"), 4, true),
            // Another token of the same job: its own key.
            (
                token_denial("r14", "repo:a", "jti-2", "production"),
                4,
                true,
            ),
        ];
        for (e, at, written) in &cases {
            let a = t.admit(e, t0 + Duration::from_secs(*at));
            assert_eq!(a.write, *written, "{}", e.request_id());
            assert!(a.summaries.is_empty());
        }
        // Every window ends: one summary per key that counted any.
        assert!(t.due(t0 + Duration::from_secs(59)).is_empty());
        let due = t.due(t0 + Duration::from_secs(65));
        let lines: Vec<Value> = due
            .iter()
            .map(|e| Value::Object(e.to_map().unwrap()))
            .collect();
        let r1 = lines
            .iter()
            .find(|l| l["summary"]["first_request_id"] == "r2")
            .unwrap();
        assert_eq!(r1["action"], "refusals_summarized");
        assert_eq!(r1["summary"]["of"], "exchange");
        assert_eq!(r1["summary"]["count"], 3);
        assert_eq!(r1["summary"]["last_request_id"], "r8");
        assert_eq!(
            (&r1["decision"], &r1["stage"], &r1["code"], &r1["source"]),
            (
                &json!("deny"),
                &json!("token"),
                &json!("bad_signature"),
                &json!("192.0.2.1")
            )
        );
        assert!(r1.get("request_id").is_none() && r1.get("environment").is_none());
        let v6 = lines
            .iter()
            .find(|l| l["summary"]["first_request_id"] == "r7")
            .unwrap();
        assert_eq!(v6["source"], "2001:db8:0:1::/64");
        let verified = lines
            .iter()
            .find(|l| l["summary"]["first_request_id"] == "r10")
            .unwrap();
        assert_eq!(verified["summary"]["subject"], "github repo:a");
        assert_eq!(verified["summary"]["jti"], "jti-1");
        assert_eq!(verified["environment"], "production");
        assert_eq!(lines.len(), 3, "keys that counted nothing need no summary");
        // A new window: written again.
        let a = t.admit(
            &token_refusal("r13", "192.0.2.1", "bad_signature"),
            t0 + Duration::from_secs(66),
        );
        assert!(a.write);
    }

    #[test]
    fn a_full_table_counts_new_sources_in_the_overflow_bucket() {
        let mut t = RefusalTable::new(settings(2));
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..1000 {
            let e = token_refusal(
                &format!("r{i}"),
                &format!("10.0.{}.{}", i / 256, i % 256),
                "bad_signature",
            );
            written += usize::from(t.admit(&e, t0).write);
        }
        assert_eq!(written, 2, "only as many refusals as the table holds");
        let due = t.drain();
        let overflow: Vec<&Event> = due
            .iter()
            .filter(|e| e.summary().is_some_and(|s| s.overflow))
            .collect();
        let [o] = overflow.as_slice() else {
            panic!("{due:?}")
        };
        assert_eq!(o.summary().unwrap().count, 998);
        assert_eq!(o.source(), None);
        assert_eq!(t.drain().len(), 0);
    }

    #[test]
    fn an_ended_window_is_summarized_when_its_key_returns() {
        let mut t = RefusalTable::new(settings(1));
        let t0 = Instant::now();
        assert!(t.admit(&token_refusal("a", "192.0.2.1", "x"), t0).write);
        assert!(!t.admit(&token_refusal("b", "192.0.2.1", "x"), t0).write);
        let a = t.admit(
            &token_refusal("c", "192.0.2.1", "x"),
            t0 + Duration::from_secs(60),
        );
        assert!(a.write, "a new window");
        assert_eq!(a.summaries.len(), 1);
        assert_eq!(a.summaries[0].summary().unwrap().first_request_id, "b");
    }
}
