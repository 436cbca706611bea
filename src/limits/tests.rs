use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::gcra::step;
use super::*;
use crate::provider::Provider;

fn token(issuer: &str, provider: Provider, claims: Value) -> VerifiedToken {
    let Value::Object(claims) = claims else {
        panic!("claims are an object")
    };
    VerifiedToken {
        issuer: issuer.into(),
        provider,
        claims,
    }
}

#[test]
fn rates_parse_or_say_what_to_write() {
    type Want = Result<Option<(u32, u64, u32)>, &'static str>;
    let cases: Vec<(&str, Option<u32>, Want)> = vec![
        ("60/min", None, Ok(Some((60, 60, 60)))),
        ("10/s", Some(3), Ok(Some((10, 1, 3)))),
        ("100/5m", None, Ok(Some((100, 300, 100)))),
        ("2/hour", None, Ok(Some((2, 3600, 2)))),
        (" off ", None, Ok(None)),
        ("60", None, Err("is not a rate")),
        ("x/min", None, Err("is not a rate")),
        ("60/fortnight", None, Err("is not a rate")),
        ("0/min", None, Err("the count must be")),
        ("5/100ms", None, Err("the period must be")),
        ("5/2d", None, Err("the period must be")),
        ("5/min", Some(0), Err("the burst must be")),
    ];
    for (text, burst, want) in cases {
        let got = Rate::parse(text, burst)
            .map(|r| r.map(|r| (r.count, r.period.as_secs(), r.burst)))
            .map_err(|e| e.to_string());
        match (got, want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
            (Err(g), Err(w)) => assert!(g.contains(w), "{text}: {g}"),
            (g, w) => panic!("{text}: got {g:?}, want {w:?}"),
        }
    }
}

#[test]
fn gcra_allows_the_burst_then_one_per_interval() {
    // 6/min, burst 3: one request every 10 s, three at once.
    let rate = Rate {
        count: 6,
        period: Duration::from_secs(60),
        burst: 3,
    };
    let mut tat = None;
    let mut at = |now: u64| {
        let (v, new) = step(tat, now, rate);
        if new.is_some() {
            tat = new;
        }
        v
    };
    let limited = |ms| Verdict::Limited {
        retry_after: Duration::from_millis(ms),
    };
    let cases = [
        (0, Verdict::Allowed),
        (0, Verdict::Allowed),
        (0, Verdict::Allowed),
        (0, limited(10_000)),
        (4_000, limited(6_000)),
        (10_000, Verdict::Allowed),
        (10_000, limited(10_000)),
        // After a long pause the whole burst is back, not more.
        (100_000, Verdict::Allowed),
        (100_000, Verdict::Allowed),
        (100_000, Verdict::Allowed),
        (100_000, limited(10_000)),
    ];
    for (i, (now, want)) in cases.into_iter().enumerate() {
        assert_eq!(at(now), want, "request {i} at {now} ms");
    }
}

#[test]
fn retry_after_is_whole_seconds_rounded_up() {
    for (ms, s) in [(1, 1), (999, 1), (1000, 1), (1001, 2), (0, 1), (59_999, 60)] {
        assert_eq!(retry_after_secs(Duration::from_millis(ms)), s, "{ms}");
    }
}

#[test]
fn the_memory_table_is_capped_and_forgets_what_expired() {
    let rate = Rate {
        count: 1,
        period: Duration::from_secs(1),
        burst: 1,
    };
    let t = MemoryLimiter::new(2);
    let now = Instant::now();
    assert_eq!(t.check("a", rate, now), Verdict::Allowed);
    assert_eq!(t.check("b", rate, now), Verdict::Allowed);
    assert!(matches!(t.check("a", rate, now), Verdict::Limited { .. }));
    // Full: a third key is let through untracked.
    assert_eq!(t.check("c", rate, now), Verdict::Allowed);
    assert_eq!(t.check("c", rate, now), Verdict::Allowed);
    assert_eq!(t.entries(), 2);
    // Once a and b have expired, c takes a place and is limited.
    let later = now + Duration::from_secs(2);
    assert_eq!(t.check("c", rate, later), Verdict::Allowed);
    assert!(matches!(t.check("c", rate, later), Verdict::Limited { .. }));
    assert_eq!(t.entries(), 1);
}

#[test]
fn a_token_is_spent_once_until_it_expires_and_a_full_cache_refuses() {
    let m = MemoryReplay::new(2);
    let now = Instant::now();
    let ttl = Duration::from_secs(10);
    assert_eq!(m.spend("t1", ttl, now), Ok(Spend::First));
    assert_eq!(m.spend("t1", ttl, now), Ok(Spend::Replayed));
    assert_eq!(m.spend("t2", ttl, now), Ok(Spend::First));
    assert_eq!(
        m.spend("t3", ttl, now),
        Err(LimitError::Full { entries: 2 }),
        "full of live tokens: refused, never forgotten"
    );
    m.release("t2");
    assert_eq!(m.spend("t2", ttl, now), Ok(Spend::First), "given back");
    let later = now + ttl;
    assert_eq!(m.spend("t1", ttl, later), Ok(Spend::First), "expired");
    assert_eq!(m.spend("t3", ttl, later), Ok(Spend::First));
}

#[test]
fn replay_keys_come_from_jti_or_the_token_and_live_until_exp_plus_leeway() {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let leeway = Duration::from_secs(30);
    let with_jti = |iss: &str, jti: &str| {
        token(
            iss,
            Provider::Github,
            json!({"jti": jti, "exp": secs + 300}),
        )
    };
    let a = ReplayKey::new(&with_jti("github", "j1"), "tokA", leeway, now);
    let b = ReplayKey::new(&with_jti("github", "j1"), "tokB", leeway, now);
    assert_eq!(a, b, "the same jti is the same token, whatever its bytes");
    assert_ne!(
        a,
        ReplayKey::new(&with_jti("gitlab", "j1"), "tokA", leeway, now),
        "another issuer's jti is another token"
    );
    assert!((329..=330).contains(&a.ttl().as_secs()), "{:?}", a.ttl());
    assert!(!a.digest.contains("j1"), "a digest, not the jti");
    let no_jti = token("github", Provider::Github, json!({"exp": secs + 60}));
    assert_ne!(
        ReplayKey::new(&no_jti, "tokA", leeway, now),
        ReplayKey::new(&no_jti, "tokB", leeway, now),
        "without jti, the token's digest"
    );
    let expired = token("github", Provider::Github, json!({"exp": secs - 100}));
    assert_eq!(
        ReplayKey::new(&expired, "t", leeway, now).ttl(),
        Duration::from_secs(1)
    );
}

#[test]
fn identities_are_the_project_s_immutable_id_or_sub_and_sources_a_64() {
    let gh = |repo_id: Value, sub: &str| {
        token(
            "github",
            Provider::Github,
            json!({"repository_id": repo_id, "sub": sub, "repository": "acme/api"}),
        )
    };
    // The same repository id under a renamed repository is one identity.
    assert_eq!(
        identity_key("*", &gh(json!("42"), "repo:acme/api:ref:main")),
        identity_key("*", &gh(json!("42"), "repo:acme/renamed:ref:dev"))
    );
    assert_ne!(
        identity_key("*", &gh(json!("42"), "x")),
        identity_key("*", &gh(json!("43"), "x"))
    );
    assert_ne!(
        identity_key("*", &gh(json!("42"), "x")),
        identity_key("production", &gh(json!("42"), "x")),
        "an environment with its own limit has its own bucket"
    );
    // No project id: sub.
    let generic = |sub: &str| token("ci", Provider::Generic, json!({ "sub": sub }));
    assert_ne!(
        identity_key("*", &generic("a")),
        identity_key("*", &generic("b"))
    );
    assert_eq!(
        identity_key("*", &generic("a")),
        identity_key("*", &generic("a"))
    );
    assert!(identity_key("*", &generic("a")).len() < 80, "bounded");

    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(source_key(ip("192.0.2.7")), "src:192.0.2.7");
    assert_eq!(source_key(ip("::ffff:192.0.2.7")), "src:192.0.2.7");
    assert_eq!(
        source_key(ip("2001:db8:0:1:aaaa::1")),
        source_key(ip("2001:db8:0:1:bbbb::2"))
    );
    assert_eq!(source_key(ip("2001:db8:0:1::1")), "src:2001:db8:0:1::/64");
    assert_ne!(
        source_key(ip("2001:db8:0:1::1")),
        source_key(ip("2001:db8:0:2::1"))
    );
}

#[tokio::test]
async fn limiter_applies_the_environment_s_own_limit() {
    let settings = LimitSettings {
        per_identity: Rate::parse("5/min", None).unwrap(),
        environments: [
            ("production".to_owned(), Rate::parse("1/min", None).unwrap()),
            ("sandbox".to_owned(), None),
        ]
        .into(),
        ..LimitSettings::default()
    };
    let l = Limiter::memory(settings);
    let v = token("github", Provider::Github, json!({"repository_id": "1"}));
    assert_eq!(l.check_identity("production", &v).await, Verdict::Allowed);
    assert!(matches!(
        l.check_identity("production", &v).await,
        Verdict::Limited { .. }
    ));
    for _ in 0..5 {
        assert_eq!(l.check_identity("staging", &v).await, Verdict::Allowed);
    }
    assert!(matches!(
        l.check_identity("staging", &v).await,
        Verdict::Limited { .. }
    ));
    for _ in 0..20 {
        assert_eq!(
            l.check_identity("sandbox", &v).await,
            Verdict::Allowed,
            "off"
        );
    }
}
