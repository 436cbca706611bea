//! Verifier tests against an in-process dev issuer over real HTTP.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::*;
use crate::devissuer::{self, DevIssuer, Shape, SigningKey};
use crate::outbound::{OutboundError, UrlRefusal};

fn key(name: &str, kid: &str) -> SigningKey {
    let pem = std::fs::read_to_string(format!(
        "{}/tests/fixtures/keys/{name}.pem",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    SigningKey::rsa_from_pem(&pem, kid).unwrap()
}

async fn setup(fetch: FetchSettings) -> (std::sync::Arc<DevIssuer>, Verifier) {
    let issuer = devissuer::spawn("127.0.0.1:0".parse().unwrap(), key("issuer-a", "k1"))
        .await
        .unwrap();
    let v = verifier("github", issuer.url(), KeySource::Discovery, 900, fetch);
    (issuer, v)
}

/// An RS256 issuer with a 30 s leeway and a verifier trusting only it.
fn verifier(
    name: &str,
    issuer: &str,
    keys: KeySource,
    max_lifetime_s: u64,
    fetch: FetchSettings,
) -> Verifier {
    let settings = IssuerSettings {
        name: name.into(),
        issuer: issuer.into(),
        provider: crate::provider::Provider::Github,
        keys,
        algorithms: vec![Algorithm::RS256],
        leeway: Duration::from_secs(30),
        max_lifetime: Duration::from_secs(max_lifetime_s),
        ca_file: None,
    };
    Verifier::new(
        vec![settings],
        vec!["jobkey".into()],
        fetch,
        DEFAULT_MAX_TOKEN_BYTES,
    )
    .unwrap()
}

fn no_overrides() -> Map<String, Value> {
    Map::new()
}

#[tokio::test]
async fn a_github_shaped_token_verifies() {
    let (issuer, v) = setup(FetchSettings::default()).await;
    let t = issuer.mint(Shape::Github, "jobkey", &no_overrides());
    let ok = v.verify(&t).await.unwrap();
    assert_eq!(ok.issuer, "github");
    assert_eq!(ok.provider, crate::provider::Provider::Github);
    assert_eq!(ok.claims["repository"], "acme/api");
}

#[tokio::test]
async fn unknown_issuer_is_refused_before_any_fetch() {
    let (issuer, v) = setup(FetchSettings::default()).await;
    let mut o = Map::new();
    o.insert("iss".into(), json!("https://evil.example.com"));
    let t = issuer.mint(Shape::Github, "jobkey", &o);
    assert_eq!(v.verify(&t).await.unwrap_err(), TokenError::UnknownIssuer);
    assert_eq!(
        issuer.jwks_fetches(),
        0,
        "no key fetch for an unknown issuer"
    );
}

#[tokio::test]
async fn random_kids_do_not_flood_the_issuer() {
    let (issuer, v) = setup(FetchSettings {
        min_refetch_interval: Duration::from_secs(3600),
        ..FetchSettings::default()
    })
    .await;
    let good = issuer.mint(Shape::Github, "jobkey", &no_overrides());
    v.verify(&good).await.unwrap();
    let rogue = key("rogue", "x");
    for i in 0..50 {
        let mut claims = issuer.claims(Shape::Github, "jobkey");
        claims.insert("jti".into(), json!(i));
        let h = json!({"alg":"RS256","kid":format!("random-{i}")});
        let t = rogue.sign_parts(&h, &Value::Object(claims));
        let e = v.verify(&t).await.unwrap_err();
        assert_eq!(e.code(), "unknown_key");
    }
    assert!(
        issuer.jwks_fetches() <= 2,
        "fetches: {}",
        issuer.jwks_fetches()
    );
}

#[tokio::test]
async fn rotation_is_picked_up_and_failed_refetch_keeps_keys() {
    let (issuer, v) = setup(FetchSettings {
        min_refetch_interval: Duration::ZERO,
        ..FetchSettings::default()
    })
    .await;
    v.verify(&issuer.mint(Shape::Github, "jobkey", &no_overrides()))
        .await
        .unwrap();
    // The issuer rotates to a new key with a new kid: an unknown kid
    // triggers one refetch, and the new key verifies.
    issuer.publish(vec![key("issuer-b", "k2"), key("issuer-a", "k1")]);
    let t = issuer.mint(Shape::Github, "jobkey", &no_overrides());
    v.verify(&t).await.unwrap();
    // The issuer goes down; a token with an unknown kid triggers a refetch
    // that fails, and the keys already held keep verifying.
    issuer.set_jwks_failing(true);
    let before = issuer.jwks_fetches();
    let rogue = key("rogue", "k9");
    let bad = rogue.mint(&Value::Object(issuer.claims(Shape::Github, "jobkey")));
    assert_eq!(v.verify(&bad).await.unwrap_err().code(), "unknown_key");
    assert!(issuer.jwks_fetches() > before, "a refetch was attempted");
    v.verify(&t).await.unwrap();
}

#[tokio::test]
async fn issuer_down_at_first_use_is_unavailable_not_unauthorized() {
    let v = verifier(
        "gitlab",
        "http://127.0.0.1:9",
        KeySource::Discovery,
        900,
        FetchSettings {
            timeout: Duration::from_secs(2),
            ..FetchSettings::default()
        },
    );
    let k = key("issuer-a", "k1");
    let mut claims = Shape::Gitlab.claims("http://127.0.0.1:9", "jobkey", devissuer::now());
    claims.insert("x".into(), json!(1));
    let t = k.mint(&Value::Object(claims));
    let e = v.verify(&t).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
}

#[tokio::test]
async fn pinned_jwks_file_verifies_offline_at_a_given_instant() {
    let k = key("issuer-a", "k1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({"keys":[k.public_jwk()]}).to_string()).unwrap();
    let iss = "https://gitlab.example.com";
    let v = verifier(
        "gitlab",
        iss,
        KeySource::JwksFile(path),
        7200,
        FetchSettings::default(),
    );
    let then = 1_700_000_000;
    let t = k.mint(&Value::Object(Shape::Gitlab.claims(iss, "jobkey", then)));
    assert_eq!(v.verify_at(&t, then + 60).await.unwrap().issuer, "gitlab");
    assert_eq!(v.verify(&t).await.unwrap_err(), TokenError::Expired);
}

/// A loopback HTTP server answering every request with `app`'s routes.
async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    url
}

#[tokio::test]
async fn jwks_fetches_are_capped_timed_out_and_never_redirected() {
    use axum::routing::get;
    let k = key("issuer-a", "k1");
    let jwks = json!({"keys": [k.public_jwk()]}).to_string();
    let padded = format!(
        "{{\"keys\": [{}], \"pad\": \"{}\"}}",
        k.public_jwk(),
        "x".repeat(300_000)
    );
    let good = jwks.clone();
    let app = axum::Router::new()
        .route("/jwks", get(move || async move { good }))
        .route("/huge", get(move || async move { padded }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                "{}"
            }),
        )
        .route(
            "/redirect",
            get(|| async { axum::response::Redirect::temporary("/jwks") }),
        );
    let base = serve(app).await;
    let iss = "https://ci.example.com";
    let token = k.mint(&Value::Object(Shape::Github.claims(
        iss,
        "jobkey",
        devissuer::now(),
    )));
    let fetch = FetchSettings {
        timeout: Duration::from_millis(500),
        max_bytes: 64 * 1024,
        ..FetchSettings::default()
    };
    // (path, None when the keys are fetched, else the outbound error)
    type Want = Option<fn(&OutboundError) -> bool>;
    let cases: [(&str, Want); 4] = [
        ("/jwks", None),
        (
            "/huge",
            Some(|e| matches!(e, OutboundError::TooLarge { limit: 65536, .. })),
        ),
        (
            "/slow",
            Some(|e| matches!(e, OutboundError::Timeout { .. })),
        ),
        (
            "/redirect",
            Some(|e| matches!(e, OutboundError::Redirect { status: 307, .. })),
        ),
    ];
    for (path, want) in cases {
        let url = url::Url::parse(&format!("{base}{path}")).unwrap();
        let v = verifier("ci", iss, KeySource::JwksUrl(url), 900, fetch.clone());
        let started = std::time::Instant::now();
        let failures = v.warm_up().await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
        match (failures.as_slice(), want) {
            ([], None) => v.verify(&token).await.map(drop).unwrap(),
            ([(name, FetchError::Outbound(e))], Some(is)) => {
                assert_eq!(name, "ci");
                assert!(is(e), "{path}: {e:?}");
                assert_eq!(
                    v.verify(&token).await.unwrap_err().code(),
                    "issuer_unavailable",
                    "{path}"
                );
            }
            (got, _) => panic!("{path}: {got:?}"),
        }
    }
}

#[tokio::test]
async fn discovery_naming_another_issuer_or_a_non_http_jwks_is_refused() {
    use axum::routing::get;
    let k = key("issuer-a", "k1");
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let jwks = json!({"keys": [k.public_jwk()]}).to_string();
    let b = base.clone();
    let app = axum::Router::new()
        .route("/liar/.well-known/openid-configuration", get(move || {
            let b = b.clone();
            async move { axum::Json(json!({"issuer": "https://evil.example.com", "jwks_uri": format!("{b}/jwks")})) }
        }))
        .route("/remote/.well-known/openid-configuration", {
            let b = base.clone();
            get(move || {
                let b = b.clone();
                async move { axum::Json(json!({"issuer": format!("{b}/remote"), "jwks_uri": "ftp://127.0.0.1:1/jwks"})) }
            })
        })
        .route("/jwks", get(move || async move { jwks }));
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    // (issuer path, the discovery step's own refusal)
    type Want = fn(&FetchError) -> bool;
    let cases: [(&str, Want); 2] = [
        (
            "liar",
            |e| matches!(e, FetchError::IssuerMismatch { found, .. } if found == "https://evil.example.com"),
        ),
        ("remote", |e| {
            matches!(
                e,
                FetchError::JwksUriRefused(OutboundError::RefusedUrl {
                    url,
                    reason: UrlRefusal::Scheme(scheme),
                }) if url == "ftp://127.0.0.1:1/jwks" && scheme == "ftp"
            )
        }),
    ];
    for (sub, is) in cases {
        let iss = format!("{base}/{sub}");
        let v = verifier(
            "ci",
            &iss,
            KeySource::Discovery,
            900,
            FetchSettings::default(),
        );
        match v.warm_up().await.as_slice() {
            [(_, e)] => assert!(is(e), "{sub}: {e:?}"),
            got => panic!("{sub}: {got:?}"),
        }
        let token = k.mint(&Value::Object(Shape::Github.claims(
            &iss,
            "jobkey",
            devissuer::now(),
        )));
        assert_eq!(
            v.verify(&token).await.unwrap_err().code(),
            "issuer_unavailable",
            "{sub}"
        );
    }
}

/// A token with `kid` and the issuer's claims whose signature is junk: an
/// unknown `kid` is refused before any signature check, so a flood needs
/// no signing.
fn with_kid(issuer: &DevIssuer, kid: &str) -> String {
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&json!({"alg": "RS256", "kid": kid})),
        b64(&Value::Object(issuer.claims(Shape::Github, "jobkey")))
    )
}

/// Verifies every token concurrently; the refusal codes.
async fn flood(v: &std::sync::Arc<Verifier>, tokens: &[String]) -> Vec<&'static str> {
    let mut set = tokio::task::JoinSet::new();
    for t in tokens {
        let (v, t) = (v.clone(), t.clone());
        set.spawn(async move { v.verify(&t).await.map(drop).map_err(|e| e.code()) });
    }
    let mut codes = Vec::new();
    while let Some(r) = set.join_next().await {
        codes.push(r.unwrap().err().unwrap_or("accepted"));
    }
    codes
}

/// Waits (up to `within`) until the issuer has served more than `n` JWKS
/// requests.
async fn fetches_exceed(issuer: &DevIssuer, n: usize, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if issuer.jwks_fetches() > n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// With the default settings: 1,000 tokens with random key ids cost at most
/// a couple of fetches (counted at the issuer), repeating them costs none
/// and no wait, and right after the flood a token signed with a key the
/// issuer has just published is accepted within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_kid_flood_costs_a_couple_of_fetches_and_delays_no_new_key() {
    let (issuer, v) = setup(FetchSettings::default()).await;
    let v = std::sync::Arc::new(v);
    v.verify(&issuer.mint(Shape::Github, "jobkey", &no_overrides()))
        .await
        .unwrap();
    let before = issuer.jwks_fetches();
    let tokens: Vec<String> = (0..1000)
        .map(|i| with_kid(&issuer, &format!("random-{i}")))
        .collect();

    let codes = flood(&v, &tokens).await;
    assert!(codes.iter().all(|c| *c == "unknown_key"), "{codes:?}");
    let flood_fetches = issuer.jwks_fetches() - before;
    assert!(
        flood_fetches <= 2,
        "1,000 random kids cost {flood_fetches} fetches"
    );

    let started = std::time::Instant::now();
    let codes = flood(&v, &tokens).await;
    assert!(codes.iter().all(|c| *c == "unknown_key"));
    assert_eq!(
        issuer.jwks_fetches() - before,
        flood_fetches,
        "repeated unknown kids are remembered"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "repeated unknown kids wait for nothing: {:?}",
        started.elapsed()
    );

    issuer.publish(vec![key("issuer-b", "k2"), key("issuer-a", "k1")]);
    let started = std::time::Instant::now();
    let fresh = issuer.mint(Shape::Github, "jobkey", &no_overrides());
    assert_eq!(v.verify(&fresh).await.unwrap().issuer, "github");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the new key took {:?}",
        started.elapsed()
    );
}

/// Keys are refreshed in the background before they reach `max_key_age`,
/// with no request asking, again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_refreshed_in_the_background_before_max_key_age() {
    let (issuer, v) = setup(FetchSettings {
        max_key_age: Duration::from_secs(1),
        ..FetchSettings::default()
    })
    .await;
    assert!(v.warm_up().await.is_empty());
    for round in 0..2 {
        let n = issuer.jwks_fetches();
        assert!(
            fetches_exceed(&issuer, n, Duration::from_secs(3)).await,
            "no background refresh in round {round}"
        );
    }
    // Dropping the verifier stops its refresh task.
    drop(v);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = issuer.jwks_fetches();
    assert!(!fetches_exceed(&issuer, n, Duration::from_millis(2500)).await);
}

/// While a refresh hangs on a slow issuer (its JWKS answers after 5 s),
/// requests whose `kid` is cached answer at once, even with a request for
/// an unknown `kid` waiting for that fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_issuer_delays_no_request_whose_kid_is_cached() {
    let (issuer, v) = setup(FetchSettings {
        timeout: Duration::from_secs(10),
        max_key_age: Duration::from_secs(1),
        min_refetch_interval: Duration::ZERO,
        ..FetchSettings::default()
    })
    .await;
    let v = std::sync::Arc::new(v);
    assert!(v.warm_up().await.is_empty());
    let good = issuer.mint(Shape::Github, "jobkey", &no_overrides());
    issuer.set_jwks_delay(Duration::from_secs(5));
    // Past `max_key_age`: the keys are due for a refresh, which hangs.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let waiting = {
        let (v, t) = (v.clone(), with_kid(&issuer, "not-yet-published"));
        tokio::spawn(async move { v.verify(&t).await.map(drop) })
    };
    for _ in 0..5 {
        let started = std::time::Instant::now();
        v.verify(&good).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "a cached kid waited {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!waiting.is_finished(), "the unknown kid waits for a fetch");
    waiting.abort();
    assert!(
        issuer.jwks_fetches() >= 2,
        "a refresh was under way all along"
    );
}

#[test]
fn split_accepts_exactly_unpadded_base64url_parts() {
    // The table against the alphabet's definition, byte by byte.
    for b in 0..=255u8 {
        let expected = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
        assert_eq!(BASE64URL[usize::from(b)], expected, "byte {b:#04x}");
    }
    let cases: &[(&str, Result<(), &str>)] = &[
        ("aGVhZA.cGF5bG9hZA.c2ln-_", Ok(())),
        (
            "aGVhZA.cGF5bG9hZA.c2ln=",
            Err("a part is not unpadded base64url"),
        ),
        (
            "aGVh+A.cGF5bG9hZA.c2ln",
            Err("a part is not unpadded base64url"),
        ),
        (
            "aGVhZA.cGF5/G9hZA.c2ln",
            Err("a part is not unpadded base64url"),
        ),
        (
            "aGVhZA.cGF5bG9hZA.c2l n",
            Err("a part is not unpadded base64url"),
        ),
        (
            "aGVhZA.cGF5bG9hZA.c2lé",
            Err("a part is not unpadded base64url"),
        ),
        (
            "aGVhZA.cGF5bG9hZA.c2ln\0",
            Err("a part is not unpadded base64url"),
        ),
        (
            "aGVhZA.cGF5bG9hZA",
            Err("expected three dot-separated parts"),
        ),
        ("a.b.c.d", Err("expected three dot-separated parts")),
        (".cGF5bG9hZA.c2ln", Err("empty header or payload")),
        ("aGVhZA.cGF5bG9hZA.", Err("the signature is missing")),
    ];
    for (token, want) in cases {
        let got = split(token).map(drop).map_err(|e| match e {
            TokenError::Malformed(m) => m,
            other => panic!("{token:?}: {other}"),
        });
        assert_eq!(&got, want, "{token:?}");
    }
}
