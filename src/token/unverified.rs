//! A refused token's claims, read without verification, for the audit
//! record only: who *claimed* to ask. Nothing here is trusted or used for a
//! decision.
//!
//! [`unverified_claims`] is a pure function that never fails and never
//! panics: a token it cannot read gives no claims. The payload is decoded
//! only up to [`MAX_PAYLOAD_BYTES`], only the claims asked for are kept
//! (scalars only, at most [`MAX_CLAIMS`]), and each string is cut to the
//! audit's bound (`crate::audit::bounded`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Longest payload part (base64url) that is decoded.
pub(super) const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Most claims returned.
pub(super) const MAX_CLAIMS: usize = 64;

/// The scalar claims among `names` in `token`'s payload, unverified and
/// bounded. Empty when the token is not `header.payload[.signature]` with
/// a base64url JSON object as payload.
pub(crate) fn unverified_claims(token: &str, names: &[&str]) -> Map<String, Value> {
    let Some(payload) = token.split('.').nth(1) else {
        return Map::new();
    };
    if payload.is_empty() || payload.len() > MAX_PAYLOAD_BYTES {
        return Map::new();
    }
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
        return Map::new();
    };
    // serde_json refuses nesting deeper than 128 with an error, not a
    // stack overflow.
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(&bytes) else {
        return Map::new();
    };
    names
        .iter()
        .filter_map(|name| {
            let v = match claims.get(*name)? {
                Value::String(s) => Value::String(crate::audit::bounded(s)),
                v @ (Value::Number(_) | Value::Bool(_)) => v.clone(),
                _ => return None,
            };
            Some(((*name).to_owned(), v))
        })
        .take(MAX_CLAIMS)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(payload: &str) -> String {
        format!("{}.{}.c2ln", b64(r#"{"alg":"RS256"}"#), b64(payload))
    }

    #[test]
    fn reads_the_named_scalar_claims() {
        let t = token(
            r#"{"iss":"https://gh","sub":"repo:acme/api","run_id":"42","build_number":7,"ref_protected":true,"aud":["jobkey"],"nested":{"a":1},"other":"x","nothing":null}"#,
        );
        let names = [
            "iss",
            "sub",
            "run_id",
            "build_number",
            "ref_protected",
            "aud",
            "nested",
            "nothing",
            "absent",
        ];
        assert_eq!(
            Value::Object(unverified_claims(&t, &names)),
            json!({"iss": "https://gh", "sub": "repo:acme/api", "run_id": "42", "build_number": 7, "ref_protected": true})
        );
    }

    #[test]
    fn long_strings_are_bounded_and_the_count_is_capped() {
        let long = "a".repeat(10_000);
        let t = token(&json!({"sub": long}).to_string());
        let got = unverified_claims(&t, &["sub"]);
        let sub = got["sub"].as_str().unwrap();
        assert!(sub.starts_with("<10000 bytes, sha256:"), "{sub}");
        assert!(sub.len() <= crate::audit::MAX_STRING_BYTES);

        let names: Vec<String> = (0..200).map(|i| format!("c{i}")).collect();
        let payload: Map<String, Value> = names.iter().map(|n| (n.clone(), json!(1))).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let t = token(&Value::Object(payload).to_string());
        assert_eq!(unverified_claims(&t, &refs).len(), MAX_CLAIMS);
    }

    #[test]
    fn garbage_gives_no_claims() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let huge = token(&json!({"sub": "x".repeat(MAX_PAYLOAD_BYTES)}).to_string());
        let cases: Vec<(&str, String)> = vec![
            ("empty", String::new()),
            ("dots only", "..".into()),
            ("one part", b64(r#"{"sub":"x"}"#)),
            ("empty payload", "eyJ9..c2ln".into()),
            ("not base64url", "a.!!!.c".into()),
            ("not JSON", format!("a.{}.c", b64("not json"))),
            (
                "not UTF-8",
                format!("a.{}.c", URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x7b])),
            ),
            ("a JSON array", token(r#"["sub"]"#)),
            ("a JSON string", token(r#""sub""#)),
            ("deeply nested", token(&deep)),
            ("payload over the cap", huge),
            ("truncated JSON", token(r#"{"sub":"x""#)),
        ];
        for (name, t) in cases {
            assert!(unverified_claims(&t, &["sub"]).is_empty(), "{name}");
        }
    }

    #[test]
    fn a_token_without_signature_or_with_padding_is_still_read() {
        // What the audit wants is who claimed to ask, even from a token
        // that is malformed elsewhere.
        let p = b64(r#"{"sub":"x"}"#);
        for t in [format!("a.{p}"), format!("a.{p}.b.c"), format!("a.{p}==.b")] {
            assert_eq!(unverified_claims(&t, &["sub"])["sub"], "x", "{t}");
        }
    }
}
