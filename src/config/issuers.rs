//! Trusted issuers: presets for the common CI providers, and the checks that
//! every issuer entry passes.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::raw::{Preset, RawIssuer};
use super::{Checker, ConfigError};
use crate::token::{IssuerSettings, KeySource};

const GITHUB: &str = "https://token.actions.githubusercontent.com";
const GITLAB: &str = "https://gitlab.com";

/// What a preset fills in: the issuer URL and the default token lifetime.
fn preset_issuer(
    c: &Checker,
    key: &str,
    p: Preset,
    ri: &RawIssuer,
) -> Result<(String, Duration), ConfigError> {
    let needs = |field: &str, example: &str| {
        c.err(
            key,
            format!("preset {p:?} needs `{field}`, e.g. {field} = {example:?}"),
        )
    };
    let forbid = |field: &str, present: bool| {
        if present {
            Err(c.err(
                format!("{key}.{field}"),
                format!("`{field}` does not apply to preset {p:?}; remove it"),
            ))
        } else {
            Ok(())
        }
    };
    forbid("issuer", ri.issuer.is_some())?;
    let github_lifetime = Duration::from_secs(15 * 60);
    Ok(match p {
        Preset::Github => {
            forbid("enterprise", ri.enterprise.is_some())?;
            forbid("host", ri.host.is_some())?;
            forbid("url", ri.url.is_some())?;
            (GITHUB.to_owned(), github_lifetime)
        }
        Preset::GithubEnterprise => {
            forbid("host", ri.host.is_some())?;
            forbid("url", ri.url.is_some())?;
            let slug = ri
                .enterprise
                .as_deref()
                .ok_or_else(|| needs("enterprise", "acme"))?;
            if slug.is_empty()
                || !slug
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            {
                return Err(c.err(
                    format!("{key}.enterprise"),
                    "write the enterprise slug only, e.g. \"acme\"",
                ));
            }
            (format!("{GITHUB}/{slug}"), github_lifetime)
        }
        Preset::GithubServer => {
            forbid("enterprise", ri.enterprise.is_some())?;
            forbid("url", ri.url.is_some())?;
            let host = ri
                .host
                .as_deref()
                .ok_or_else(|| needs("host", "github.example.com"))?;
            if host.is_empty() || host.contains('/') || host.contains(':') && !host.starts_with('[')
            {
                return Err(c.err(
                    format!("{key}.host"),
                    "write the host name only, e.g. \"github.example.com\"",
                ));
            }
            (format!("https://{host}/_services/token"), github_lifetime)
        }
        Preset::Gitlab => {
            forbid("enterprise", ri.enterprise.is_some())?;
            forbid("host", ri.host.is_some())?;
            let url = ri
                .url
                .as_deref()
                .unwrap_or(GITLAB)
                .trim_end_matches('/')
                .to_owned();
            (url, Duration::from_secs(2 * 3600))
        }
    })
}

pub(super) fn check(
    c: &Checker,
    name: &str,
    ri: &RawIssuer,
) -> Result<IssuerSettings, ConfigError> {
    let key = format!("issuers.{name}");
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
    {
        return Err(c.err(
            &key,
            "issuer names are lowercase letters, digits, `-` and `_` (policies refer to them)",
        ));
    }
    let (issuer, default_lifetime) = match ri.preset {
        Some(p) => preset_issuer(c, &key, p, ri)?,
        None => {
            for (field, present) in [
                ("enterprise", ri.enterprise.is_some()),
                ("host", ri.host.is_some()),
                ("url", ri.url.is_some()),
            ] {
                if present {
                    return Err(c.err(format!("{key}.{field}"), format!("`{field}` only applies with a preset; without one, write issuer = \"https://...\"")));
                }
            }
            let issuer = ri.issuer.clone().ok_or_else(|| {
                c.err(&key, "set a preset (\"github\", \"github-enterprise\", \"github-server\", \"gitlab\") or the exact issuer URL, e.g. issuer = \"https://agent.buildkite.com\"")
            })?;
            (issuer, Duration::from_secs(3600))
        }
    };
    c.fetch_url(&format!("{key}.issuer"), &issuer)?;
    let keys = match (&ri.jwks_url, &ri.jwks_file) {
        (None, None) => KeySource::Discovery,
        (Some(u), None) => KeySource::JwksUrl(c.fetch_url(&format!("{key}.jwks_url"), u)?),
        (None, Some(f)) => KeySource::JwksFile(c.path(f)),
        (Some(_), Some(_)) => {
            return Err(c.err(
                &key,
                "set jwks_url or jwks_file, not both (neither: OIDC discovery)",
            ));
        }
    };
    let algorithms = match &ri.algorithms {
        None => vec![Algorithm::RS256],
        Some(list) if list.is_empty() => {
            return Err(c.err(
                format!("{key}.algorithms"),
                "list at least one algorithm, e.g. [\"RS256\"]",
            ));
        }
        Some(list) => list
            .iter()
            .map(|a| algorithm(c, &key, a))
            .collect::<Result<Vec<_>, _>>()?,
    };
    let leeway = ri.leeway.unwrap_or(Duration::from_secs(60));
    if leeway > Duration::from_secs(300) {
        return Err(c.err(
            format!("{key}.leeway"),
            "a leeway above 5m accepts expired tokens for too long; write e.g. \"60s\"",
        ));
    }
    let max_lifetime = ri.max_lifetime.unwrap_or(default_lifetime);
    if max_lifetime.is_zero() {
        return Err(c.err(
            format!("{key}.max_lifetime"),
            "must be positive, e.g. \"15m\"",
        ));
    }
    Ok(IssuerSettings {
        name: name.to_owned(),
        issuer,
        keys,
        algorithms,
        leeway,
        max_lifetime,
        ca_file: ri.ca_file.as_deref().map(|p| c.path(p)),
    })
}

fn algorithm(c: &Checker, key: &str, a: &str) -> Result<Algorithm, ConfigError> {
    let bad = |why: &str| c.err(format!("{key}.algorithms"), format!("{a:?}: {why}"));
    match a.parse::<Algorithm>() {
        Ok(Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) => Err(bad(
            "HMAC algorithms are never accepted (the issuer's public key would become a shared secret)",
        )),
        Ok(alg) => Ok(alg),
        Err(_) => Err(bad(
            "unknown algorithm; use RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
        )),
    }
}
