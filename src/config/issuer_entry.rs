//! One `[issuers.NAME]` entry: its issuer URL and provider (from a preset,
//! or the exact URL and an optional `provider`), and the checks every
//! entry passes. The presets themselves are in `crate::provider`.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::raw::{PresetName, RawIssuer};
use super::{Checker, ConfigError};
use crate::provider::{Param, Preset, PresetError, Provider};
use crate::token::{IssuerSettings, KeySource};

/// The default `max_lifetime` of an issuer without a preset.
const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// What a preset fills in: the issuer URL, its provider and the default
/// token lifetime.
fn preset_issuer(
    c: &Checker,
    key: &str,
    preset: &'static Preset,
    ri: &RawIssuer,
) -> Result<(String, Provider, Duration), ConfigError> {
    let name = preset.name;
    if ri.issuer.is_some() {
        return Err(c.err(
            format!("{key}.issuer"),
            format!("`issuer` does not apply to preset {name:?}; remove it"),
        ));
    }
    if let Some(p) = ri.provider {
        return Err(c.err(
            format!("{key}.provider"),
            format!(
                "preset {name:?} is the {:?} provider already; remove `provider = {:?}`",
                preset.provider.name(),
                p.name()
            ),
        ));
    }
    for param in Param::ALL {
        if ri.param(param).is_some() && preset.param != Some(param) {
            return Err(c.err(
                format!("{key}.{}", param.key()),
                format!(
                    "`{}` does not apply to preset {name:?}; remove it",
                    param.key()
                ),
            ));
        }
    }
    let value = preset.param.and_then(|p| ri.param(p));
    let issuer = preset.issuer_url(value).map_err(|e| match e {
        PresetError::Missing {
            key: field,
            example,
        } => c.err(
            key,
            format!("preset {name:?} needs `{field}`, e.g. {field} = {example:?}"),
        ),
        PresetError::Invalid { key: field, fix } => c.err(format!("{key}.{field}"), fix),
    })?;
    Ok((issuer, preset.provider, preset.max_lifetime))
}

/// An issuer given by its exact URL: the provider is the config's, or the
/// one whose well-known URL it is, or generic. A well-known URL cannot be
/// given another provider (that would drop a shared issuer's tenant check).
fn explicit_issuer(
    c: &Checker,
    key: &str,
    ri: &RawIssuer,
) -> Result<(String, Provider, Duration), ConfigError> {
    if let Some(param) = Param::ALL.into_iter().find(|p| ri.param(*p).is_some()) {
        return Err(c.err(
            format!("{key}.{}", param.key()),
            format!(
                "`{}` only applies with a preset; without one, write issuer = \"https://...\"",
                param.key()
            ),
        ));
    }
    let issuer = ri.issuer.clone().ok_or_else(|| {
        c.err(
            key,
            format!(
                "set a preset ({}) or the exact issuer URL, e.g. issuer = \"https://ci.example.com/oidc\" (and its `provider`)",
                Preset::names()
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    })?;
    let known = Provider::from_issuer_url(&issuer);
    let provider = match ri.provider {
        Some(p) if known != Provider::Generic && p != known => {
            return Err(c.err(
                format!("{key}.provider"),
                format!(
                    "{issuer:?} is {}'s issuer; write provider = {:?} or remove `provider`",
                    known.title(),
                    known.name()
                ),
            ));
        }
        Some(p) => p,
        None => known,
    };
    Ok((issuer, provider, DEFAULT_MAX_LIFETIME))
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
    let (issuer, provider, default_lifetime) = match ri.preset {
        Some(PresetName(p)) => preset_issuer(c, &key, p, ri)?,
        None => explicit_issuer(c, &key, ri)?,
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
        provider,
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
