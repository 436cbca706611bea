//! The token front end: everything the verifier does to an untrusted token
//! string, up to and including the signature and the claims, offline.
//!
//! Input: one mode byte, then
//! - even mode: the token itself (lossy UTF-8), verified as is; the corpus
//!   holds tokens the dev issuer signed with the pinned keys;
//! - odd mode: `HEADER \0 PAYLOAD` (raw bytes, usually JSON), signed with
//!   the harness's ES256 key as given, then verified: the signature is
//!   right, so every header and claims check is reached.
//!
//! Properties, besides "never panics":
//! - a verified token is sound: three parts, a header without key-naming
//!   or critical headers, an allowed `alg`, a key id of that issuer, the
//!   claims exactly as in the payload, the `iss` of the issuer reported,
//!   and every registered claim valid at the fixed instant (an independent
//!   check below);
//! - a refusal is the job's fault (the keys are loaded), its message has no
//!   control character and quotes no more than 32 base64url characters of
//!   the token in a row (a header value is cut to 32 characters);
//! - with a right signature, an ES256 token for a key the issuer holds is
//!   accepted exactly when the independent claims check finds nothing, and
//!   refused with one of the problems it found otherwise;
//! - the audit's unverified read returns only the claims asked for, as
//!   bounded scalars.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jobkey::fuzz_api::{
    self, AUDIENCE, MAX_AUDITED_STRING_BYTES, MAX_TOKEN_BYTES, TOKEN_ISSUERS, TOKEN_NOW,
    TokenCheck, TokenIssuer,
};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// The longest piece of a token a refusal may quote (a truncated header
/// value).
const MAX_ECHO_CHARS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let token = String::from_utf8_lossy(rest);
        let check = fuzz_api::verify_token(&token);
        common_properties(&check);
    } else {
        let (header, payload) = match rest.iter().position(|&b| b == 0) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &b"{}"[..]),
        };
        let check = fuzz_api::sign_and_verify(header, payload);
        common_properties(&check);
        signed_properties(&check, header, payload);
    }
});

fn common_properties(c: &TokenCheck) {
    // `FUZZ_SHOW=1 cargo +nightly fuzz run token FILE` shows what the
    // verifier said about FILE.
    if std::env::var_os("FUZZ_SHOW").is_some() {
        eprintln!("{:?}", c.outcome);
    }
    assert!(c.unverified.len() <= c.unverified_names.len());
    for (name, value) in &c.unverified {
        assert!(
            c.unverified_names.contains(&name.as_str()),
            "unverified claim {name:?} was not asked for"
        );
        match value {
            Value::String(s) => assert!(
                s.len() <= MAX_AUDITED_STRING_BYTES,
                "unverified claim {name:?} is {} bytes",
                s.len()
            ),
            Value::Number(_) | Value::Bool(_) => {}
            other => panic!("unverified claim {name:?} is not a scalar: {other}"),
        }
    }
    match &c.outcome {
        Ok(v) => verified_is_sound(&c.token, &v.issuer, v.provider, &v.claims),
        Err(r) => {
            assert!(r.job_fault, "{}: the keys are loaded", r.code);
            assert!(!r.message.is_empty());
            assert!(
                !r.message.chars().any(char::is_control),
                "{}: a control character in {:?}",
                r.code,
                r.message
            );
            if let Some(piece) = quoted_piece(&r.message, &c.token) {
                panic!("{}: the message quotes the token: {piece:?}", r.code);
            }
        }
    }
}

/// A piece of `token` longer than [`MAX_ECHO_CHARS`] found in `message`,
/// made of base64url characters only: what a quoted header, payload or
/// signature looks like. (The messages' own words are separated by spaces
/// and punctuation, so a token that happens to contain a message's text is
/// not taken for a quote.)
fn quoted_piece(message: &str, token: &str) -> Option<String> {
    let b64url = |c: &char| c.is_ascii_alphanumeric() || *c == '-' || *c == '_';
    let chars: Vec<char> = message.chars().collect();
    chars
        .windows(MAX_ECHO_CHARS + 1)
        .filter(|w| w.iter().all(b64url))
        .map(|w| w.iter().collect::<String>())
        .find(|w| token.contains(w.as_str()))
}

fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

fn issuer_named(name: &str) -> &'static TokenIssuer {
    TOKEN_ISSUERS
        .iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("verified by an issuer that is not configured: {name:?}"))
}

fn verified_is_sound(token: &str, issuer: &str, provider: &str, claims: &Map<String, Value>) {
    assert!(token.len() <= MAX_TOKEN_BYTES);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a verified token has three parts");
    let header = decode_object(parts[0]).expect("a verified token's header is a JSON object");
    let payload = decode_object(parts[1]).expect("a verified token's payload is a JSON object");
    assert_eq!(&payload, claims, "the claims are the payload, unchanged");
    for name in ["jku", "x5u", "jwk", "x5c", "crit"] {
        assert!(
            !header.contains_key(name),
            "verified with a `{name}` header"
        );
    }
    let i = issuer_named(issuer);
    assert_eq!(provider, issuer, "each test issuer is its provider's");
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(i.iss));
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    assert!(i.algorithms.contains(&alg), "alg {alg:?} for {issuer}");
    match header.get("kid") {
        Some(Value::String(kid)) => assert!(
            i.kids.contains(&Some(kid.as_str())),
            "kid {kid:?} is not {issuer}'s"
        ),
        None => assert_eq!(i.kids.len(), 1, "no kid, but {issuer} has several keys"),
        Some(other) => panic!("kid {other} is not a string"),
    }
    let problems = claim_problems(claims, i);
    assert!(
        problems.is_empty(),
        "verified, but the claims have problems: {problems:?}"
    );
}

/// A NumericDate as RFC 7519 defines it (a non-negative number; fractions
/// cut). `Err` for anything else.
fn numeric(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, ()> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Ok(Some(u)),
            (None, Some(f)) if (0.0..u64::MAX as f64).contains(&f) => Ok(Some(f as u64)),
            _ => Err(()),
        },
        Some(_) => Err(()),
    }
}

/// Every reason to refuse these claims for issuer `i` at [`TOKEN_NOW`], as
/// refusal codes. Empty: the claims are acceptable.
fn claim_problems(claims: &Map<String, Value>, i: &TokenIssuer) -> Vec<&'static str> {
    let mut p = Vec::new();
    match claims.get("aud") {
        Some(Value::String(s)) if s == AUDIENCE => {}
        Some(Value::Array(items)) if !items.iter().all(Value::is_string) => p.push("invalid_claim"),
        Some(Value::Array(items)) if items.iter().any(|a| a == AUDIENCE) => {}
        _ => p.push("audience_mismatch"),
    }
    let exp = numeric(claims, "exp");
    let iat = numeric(claims, "iat");
    let nbf = numeric(claims, "nbf");
    for n in [&exp, &iat, &nbf] {
        if n.is_err() {
            p.push("invalid_claim");
        }
    }
    if matches!(exp, Ok(None)) || matches!(iat, Ok(None)) {
        p.push("missing_claim");
    }
    let late = TOKEN_NOW.saturating_add(i.leeway_s);
    if let (Ok(Some(exp)), Ok(Some(iat))) = (exp, iat) {
        if TOKEN_NOW > exp.saturating_add(i.leeway_s) {
            p.push("token_expired");
        }
        if iat > late {
            p.push("token_issued_in_future");
        }
        if exp < iat {
            p.push("invalid_claim");
        } else if exp - iat > i.max_lifetime_s {
            p.push("token_lifetime_too_long");
        }
    }
    if let Ok(Some(nbf)) = nbf
        && nbf > late
    {
        p.push("token_not_yet_valid");
    }
    if claims.get("sub").is_some_and(|s| !s.is_string()) {
        p.push("invalid_claim");
    }
    p
}

/// With a right ES256 signature: a token for a key its issuer holds is
/// accepted exactly when its claims are.
fn signed_properties(c: &TokenCheck, header: &[u8], payload: &[u8]) {
    if c.token.len() > MAX_TOKEN_BYTES {
        let code = c.outcome.as_ref().err().map(|r| r.code);
        assert_eq!(code, Some("token_too_large"));
        return;
    }
    let object = |b: &[u8]| match serde_json::from_slice::<Value>(b) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    };
    let (Some(h), Some(claims)) = (object(header), object(payload)) else {
        return;
    };
    if ["jku", "x5u", "jwk", "x5c", "crit"]
        .iter()
        .any(|n| h.contains_key(*n))
        || h.get("alg").and_then(Value::as_str) != Some("ES256")
    {
        return;
    }
    let Some(i) = claims
        .get("iss")
        .and_then(Value::as_str)
        .and_then(|iss| TOKEN_ISSUERS.iter().find(|i| i.iss == iss))
    else {
        return;
    };
    let kid = h.get("kid");
    let holds_key = match (i.name, kid) {
        ("gitlab", Some(Value::String(k))) => k == "e1",
        ("buildkite", None) => true,
        ("buildkite", Some(Value::String(_))) => {
            let code = c.outcome.as_ref().err().map(|r| r.code);
            assert_eq!(code, Some("unknown_key"), "buildkite's key has no kid");
            return;
        }
        _ => false,
    };
    if !holds_key {
        return;
    }
    let problems = claim_problems(&claims, i);
    match &c.outcome {
        Ok(v) => assert_eq!(v.issuer, i.name),
        Err(r) => assert!(
            problems.contains(&r.code),
            "a right signature for {}, refused with {} ({}); the claims' problems: {problems:?}",
            i.name,
            r.code,
            r.message
        ),
    }
    if problems.is_empty() {
        assert!(
            c.outcome.is_ok(),
            "acceptable claims with a right signature refused: {:?}",
            c.outcome.as_ref().err()
        );
    }
}
