//! At least 25 hostile or broken tokens, each refused with 401 and the right
//! code by a running broker, which keeps serving afterwards.

use crate::support::Stack;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// DER-encodes a fixed-width ECDSA signature (r || s), as a sloppy signer
/// would; JWS requires the fixed form.
fn der_ecdsa(fixed: &[u8]) -> Vec<u8> {
    fn int(x: &[u8]) -> Vec<u8> {
        let mut x: Vec<u8> = x.iter().copied().skip_while(|b| *b == 0).collect();
        if x.first().is_some_and(|b| b & 0x80 != 0) {
            x.insert(0, 0);
        }
        let mut out = vec![0x02, x.len() as u8];
        out.extend(x);
        out
    }
    let (r, s) = fixed.split_at(fixed.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused_and_the_server_keeps_serving() {
    let stack = Stack::start().await;
    let gh = &stack.github;
    let key = gh.signing_key();
    let kid = key.kid().to_owned();
    let now = crate::support::now();
    let good_claims = Value::Object(stack.github_claims());
    let with = |over: Value| {
        let mut c = stack.github_claims();
        jobkey::apply_claim_overrides(&mut c, &crate::support::overrides(over));
        Value::Object(c)
    };
    let std_header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let signed = |claims: Value| key.sign_parts(&std_header, &claims);
    let with_header = |extra: Value| {
        let mut h = std_header.clone();
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        key.sign_parts(&h, &good_claims)
    };
    let rogue = crate::support::rsa_key("rogue", &kid);
    let rsa_public_pem = crate::support::public_pem_of("issuer-a");
    let good = signed(good_claims.clone());
    let (good_head, good_rest) = good.split_once('.').unwrap();
    let (good_payload, good_sig) = good_rest.split_once('.').unwrap();

    // An ES256 token from the ECDSA issuer, its signature re-encoded as DER.
    let es = &stack.ecdsa;
    let es_token = es
        .signing_key()
        .mint(&Value::Object(stack.claims_for(es.url(), "jobkey")));
    let (es_input, es_sig) = es_token.rsplit_once('.').unwrap();
    let es_der = format!(
        "{es_input}.{}",
        URL_SAFE_NO_PAD.encode(der_ecdsa(&URL_SAFE_NO_PAD.decode(es_sig).unwrap()))
    );
    assert_eq!(
        stack.exchange_status(&es_token, "production").await.0,
        403,
        "the untampered ES256 token verifies (then no policy admits it)"
    );

    let tampered = {
        let mut c = good_claims.clone();
        c["repository_id"] = json!("666");
        format!("{good_head}.{}.{good_sig}", b64(&c))
    };
    let other_issuer = {
        // Signed by the GitHub stand-in's key but claiming the GitLab issuer.
        let mut c = good_claims.clone();
        c["iss"] = json!(stack.gitlab.url());
        key.sign_parts(
            &json!({"alg":"RS256","kid": stack.gitlab.signing_key().kid()}),
            &c,
        )
    };

    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none, signature stripped",
            format!("{}.{}.", b64(&json!({"alg":"none"})), good_payload),
            "malformed_token",
        ),
        (
            "alg none with a signature",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg":"none"})),
                good_payload,
                good_sig
            ),
            "unsupported_algorithm",
        ),
        (
            "alg None (case games)",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg":"None","kid":kid})),
                good_payload,
                good_sig
            ),
            "unsupported_algorithm",
        ),
        (
            "HS256 keyed with the RSA public key",
            hs256(
                rsa_public_pem.as_bytes(),
                &json!({"alg":"HS256","kid":kid}),
                &good_claims,
            ),
            "unsupported_algorithm",
        ),
        (
            "HS512",
            format!(
                "{}.{}.{}",
                b64(&json!({"alg":"HS512","kid":kid})),
                good_payload,
                good_sig
            ),
            "unsupported_algorithm",
        ),
        (
            "rogue key with the issuer's kid",
            rogue.sign_parts(&std_header, &good_claims),
            "bad_signature",
        ),
        (
            "jku header",
            with_header(json!({"jku": "http://127.0.0.1:1/evil-jwks"})),
            "forbidden_header",
        ),
        (
            "embedded jwk header",
            with_header(json!({"jwk": rogue.public_jwk()})),
            "forbidden_header",
        ),
        (
            "x5u header",
            with_header(json!({"x5u": "http://127.0.0.1:1/cert.pem"})),
            "forbidden_header",
        ),
        (
            "x5c header",
            with_header(json!({"x5c": [STANDARD.encode(b"not a cert")]})),
            "forbidden_header",
        ),
        (
            "crit header",
            with_header(json!({"crit": ["exp"], "exp": 1})),
            "unsupported_critical_header",
        ),
        (
            "wrong aud",
            signed(with(json!({"aud": "sts.amazonaws.com"}))),
            "audience_mismatch",
        ),
        (
            "missing aud",
            signed(with(json!({"aud": null}))),
            "audience_mismatch",
        ),
        (
            "aud array without jobkey",
            signed(with(json!({"aud": ["a", "b"]}))),
            "audience_mismatch",
        ),
        // Regression: an array with a non-string item was accepted when
        // another item was our audience.
        (
            "aud array with jobkey and a number",
            signed(with(json!({"aud": ["jobkey", 1]}))),
            "invalid_claim",
        ),
        (
            "aud array with null and jobkey",
            signed(with(json!({"aud": [null, "jobkey"]}))),
            "invalid_claim",
        ),
        (
            "expired",
            signed(with(
                json!({"iat": now - 900, "nbf": now - 900, "exp": now - 300}),
            )),
            "token_expired",
        ),
        (
            "not yet valid",
            signed(with(json!({"nbf": now + 600, "exp": now + 700}))),
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            signed(with(
                json!({"iat": now + 600, "nbf": null, "exp": now + 700}),
            )),
            "token_issued_in_future",
        ),
        (
            "excessive lifetime",
            signed(with(json!({"exp": now + 86_400}))),
            "token_lifetime_too_long",
        ),
        (
            "missing exp",
            signed(with(json!({"exp": null}))),
            "missing_claim",
        ),
        (
            "exp as a string",
            signed(with(json!({"exp": "tomorrow"}))),
            "invalid_claim",
        ),
        ("tampered payload", tampered, "bad_signature"),
        (
            "stripped signature",
            format!("{good_head}.{good_payload}."),
            "malformed_token",
        ),
        ("DER-encoded ECDSA signature", es_der, "bad_signature"),
        (
            "RS256 where the issuer allows only ES256",
            crate::support::rsa_key("issuer-a", "x")
                .mint(&Value::Object(stack.claims_for(es.url(), "jobkey"))),
            "algorithm_not_allowed",
        ),
        (
            "unknown issuer",
            signed(with(
                json!({"iss": "https://token.actions.githubusercontent.com.evil.com"}),
            )),
            "unknown_issuer",
        ),
        (
            "issuer with a trailing slash",
            signed(with(json!({"iss": format!("{}/", gh.url())}))),
            "unknown_issuer",
        ),
        (
            "missing iss",
            signed(with(json!({"iss": null}))),
            "unknown_issuer",
        ),
        (
            "another issuer's claim with this issuer's key",
            other_issuer,
            "bad_signature",
        ),
        (
            "unknown kid",
            key.sign_parts(&json!({"alg":"RS256","kid":"no-such-kid"}), &good_claims),
            "unknown_key",
        ),
        ("garbage", "not-a-token".into(), "malformed_token"),
        ("four parts", format!("{good}.extra"), "malformed_token"),
        (
            "padded base64",
            format!("{good_head}=.{good_payload}.{good_sig}"),
            "malformed_token",
        ),
        (
            "header is not JSON",
            format!(
                "{}.{good_payload}.{good_sig}",
                URL_SAFE_NO_PAD.encode("{not json")
            ),
            "malformed_token",
        ),
        (
            "payload is a JSON array",
            key.sign_parts(&std_header, &json!([1, 2])),
            "malformed_token",
        ),
        (
            "oversized",
            format!("{good_head}.{}.{good_sig}", "A".repeat(20_000)),
            "token_too_large",
        ),
    ];
    assert!(cases.len() >= 25);
    let mut names = std::collections::HashSet::new();
    for (name, token, code) in &cases {
        assert!(names.insert(*name), "duplicate case {name}");
        let (status, body) = stack.exchange_status(token, "production").await;
        assert_eq!(status, 401, "{name}: {body}");
        assert_eq!(body["error"], *code, "{name}: {body}");
        assert!(
            body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{name}"
        );
    }

    // Not a token at all.
    let (status, body) = stack
        .exchange_raw(None, r#"{"environment":"production"}"#)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_missing"))
    );
    let (status, body) = stack
        .exchange_raw(
            Some(format!("Basic {}", STANDARD.encode("a:b"))),
            r#"{"environment":"production"}"#,
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_missing"))
    );

    // Still serving, and the good token still works.
    let (status, body) = stack.exchange_status(&good, "production").await;
    assert_eq!(status, 200, "{body}");
    assert!(body["credentials"]["deploy-db"]["values"]["password"].is_string());
}
