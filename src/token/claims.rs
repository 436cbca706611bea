//! Checks of the registered claims, after the signature verified.

use serde_json::{Map, Value};

use super::TokenError;
use super::issuer::IssuerSettings;

/// Checks `aud`, `exp`, `nbf`, `iat` and the lifetime at the instant `now`
/// (seconds since the epoch). Pure, so tests can pin the clock.
pub(super) fn check(
    claims: &Map<String, Value>,
    issuer: &IssuerSettings,
    audiences: &[String],
    now: u64,
) -> Result<(), TokenError> {
    check_audience(claims.get("aud"), audiences)?;
    let leeway = issuer.leeway.as_secs();
    let exp = numeric(claims, "exp")?.ok_or(TokenError::MissingClaim("exp"))?;
    let iat = numeric(claims, "iat")?.ok_or(TokenError::MissingClaim("iat"))?;
    let nbf = numeric(claims, "nbf")?;
    if now > exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(TokenError::NotYetValid);
    }
    if iat > now.saturating_add(leeway) {
        return Err(TokenError::IssuedInFuture);
    }
    if exp < iat {
        return Err(TokenError::InvalidClaim("exp"));
    }
    let lifetime = exp - iat;
    let max = issuer.max_lifetime.as_secs();
    if lifetime > max {
        return Err(TokenError::LifetimeTooLong {
            lifetime_s: lifetime,
            max_s: max,
        });
    }
    if let Some(sub) = claims.get("sub")
        && !sub.is_string()
    {
        return Err(TokenError::InvalidClaim("sub"));
    }
    Ok(())
}

fn check_audience(aud: Option<&Value>, audiences: &[String]) -> Result<(), TokenError> {
    let expected = || TokenError::AudienceMismatch {
        expected: audiences.join(", "),
    };
    let matches = |s: &str| audiences.iter().any(|a| a == s);
    match aud {
        Some(Value::String(s)) if matches(s) => Ok(()),
        // RFC 7519 §4.1.3: a string or an array of strings. An array with
        // anything else in it is malformed, even when one item is ours
        // (OpenBao refuses these too).
        Some(Value::Array(items)) if !items.iter().all(Value::is_string) => {
            Err(TokenError::InvalidClaim("aud"))
        }
        Some(Value::Array(items)) if items.iter().any(|v| v.as_str().is_some_and(matches)) => {
            Ok(())
        }
        _ => Err(expected()),
    }
}

/// A NumericDate: a non-negative JSON number; fractions are truncated.
fn numeric(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                        Ok(Some(f as u64))
                    }
                    _ => Err(TokenError::InvalidClaim(name)),
                }
            }
        }
        Some(_) => Err(TokenError::InvalidClaim(name)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::token::issuer::KeySource;

    fn issuer() -> IssuerSettings {
        IssuerSettings {
            name: "github".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            provider: crate::provider::Provider::Github,
            keys: KeySource::Discovery,
            algorithms: vec![jsonwebtoken::Algorithm::RS256],
            leeway: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(600),
            ca_file: None,
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn table() {
        let aud = vec!["jobkey".to_string()];
        let cases: Vec<(&str, Value, Result<(), &str>)> = vec![
            (
                "valid",
                json!({"aud":"jobkey","iat":NOW-10,"exp":NOW+290}),
                Ok(()),
            ),
            (
                "aud array",
                json!({"aud":["x","jobkey"],"iat":NOW,"exp":NOW+60}),
                Ok(()),
            ),
            (
                "aud wrong",
                json!({"aud":"other","iat":NOW,"exp":NOW+60}),
                Err("audience_mismatch"),
            ),
            (
                "aud missing",
                json!({"iat":NOW,"exp":NOW+60}),
                Err("audience_mismatch"),
            ),
            (
                "aud array wrong",
                json!({"aud":["a","b"],"iat":NOW,"exp":NOW+60}),
                Err("audience_mismatch"),
            ),
            (
                "aud number",
                json!({"aud":5,"iat":NOW,"exp":NOW+60}),
                Err("audience_mismatch"),
            ),
            // Regression: arrays with a non-string item were accepted when
            // another item was our audience.
            (
                "aud array with a number",
                json!({"aud":["jobkey",1],"iat":NOW,"exp":NOW+60}),
                Err("invalid_claim"),
            ),
            (
                "aud array with null first",
                json!({"aud":[null,"jobkey"],"iat":NOW,"exp":NOW+60}),
                Err("invalid_claim"),
            ),
            (
                "aud array with an object",
                json!({"aud":["jobkey",{"aud":"jobkey"}],"iat":NOW,"exp":NOW+60}),
                Err("invalid_claim"),
            ),
            (
                "aud array with a nested array",
                json!({"aud":[["jobkey"]],"iat":NOW,"exp":NOW+60}),
                Err("invalid_claim"),
            ),
            (
                "expired",
                json!({"aud":"jobkey","iat":NOW-400,"exp":NOW-31}),
                Err("token_expired"),
            ),
            (
                "expired within leeway",
                json!({"aud":"jobkey","iat":NOW-400,"exp":NOW-30}),
                Ok(()),
            ),
            (
                "nbf future",
                json!({"aud":"jobkey","iat":NOW,"nbf":NOW+31,"exp":NOW+60}),
                Err("token_not_yet_valid"),
            ),
            (
                "nbf within leeway",
                json!({"aud":"jobkey","iat":NOW,"nbf":NOW+30,"exp":NOW+60}),
                Ok(()),
            ),
            (
                "iat future",
                json!({"aud":"jobkey","iat":NOW+31,"exp":NOW+90}),
                Err("token_issued_in_future"),
            ),
            (
                "lifetime too long",
                json!({"aud":"jobkey","iat":NOW,"exp":NOW+601}),
                Err("token_lifetime_too_long"),
            ),
            (
                "lifetime at max",
                json!({"aud":"jobkey","iat":NOW,"exp":NOW+600}),
                Ok(()),
            ),
            (
                "exp missing",
                json!({"aud":"jobkey","iat":NOW}),
                Err("missing_claim"),
            ),
            (
                "iat missing",
                json!({"aud":"jobkey","exp":NOW+60}),
                Err("missing_claim"),
            ),
            (
                "exp string",
                json!({"aud":"jobkey","iat":NOW,"exp":"soon"}),
                Err("invalid_claim"),
            ),
            (
                "exp negative",
                json!({"aud":"jobkey","iat":NOW,"exp":-1}),
                Err("invalid_claim"),
            ),
            (
                "exp before iat",
                json!({"aud":"jobkey","iat":NOW,"exp":NOW-1}),
                Err("invalid_claim"),
            ),
            (
                "sub not string",
                json!({"aud":"jobkey","iat":NOW,"exp":NOW+60,"sub":1}),
                Err("invalid_claim"),
            ),
            (
                "fractional times",
                json!({"aud":"jobkey","iat":(NOW as f64)+0.5,"exp":(NOW as f64)+60.9}),
                Ok(()),
            ),
        ];
        for (name, c, want) in cases {
            let got = check(&claims(c), &issuer(), &aud, NOW).map_err(|e| e.code());
            assert_eq!(got, want, "{name}");
        }
    }
}
