//! The config front end: `Config::parse` on TOML text.
//!
//! Input: the text of the config file (lossy UTF-8), parsed as if read from
//! `/etc/jobkey/jobkey.toml`.
//!
//! Properties, besides "never panics":
//! - a refusal names the file;
//! - every URL a checked config makes jobkey fetch (an issuer's URL when
//!   its keys come from discovery, a `jwks_url`, the Vault address) is
//!   https with a host, or http to a loopback host, without a user name or
//!   password (checked here independently of `src/outbound/`), and an
//!   issuer's discovery URL stays on the issuer's own origin;
//! - the password of `[state] redis_url` shows neither in the checked
//!   config's `Debug` nor in a refusal's message.
#![no_main]

use jobkey::fuzz_api::{self, CONFIG_PATH};
use libfuzzer_sys::fuzz_target;
use url::{Host, Url};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match fuzz_api::parse_config(&text) {
        Err(f) => {
            assert!(
                f.message.starts_with(&format!("{CONFIG_PATH}: ")),
                "the message names the file: {:?}",
                f.message
            );
            for password in redis_passwords(&text) {
                if f.message.contains(&password) {
                    assert!(
                        !echoes(&text, &password, &f.message),
                        "a refusal quotes the redis password: {:?}",
                        f.message
                    );
                }
            }
        }
        Ok(c) => {
            for u in &c.fetched {
                if let Err(why) = fetchable(&u.url) {
                    panic!("{} = {:?} would be fetched: {why}", u.what, u.url);
                }
            }
            for (iss, discovery) in &c.discovery {
                let d = match discovery {
                    Ok(d) => d,
                    Err(e) => panic!("issuer {iss:?}: no discovery URL: {e}"),
                };
                let (Ok(i), Ok(d)) = (Url::parse(iss), Url::parse(d)) else {
                    panic!("issuer {iss:?}: discovery URL {d:?} does not parse");
                };
                assert_eq!(
                    i.origin(),
                    d.origin(),
                    "discovery of {iss:?} leaves its origin: {d:?}"
                );
            }
            if let Some(redis) = &c.redis_url
                && let Some(pw) = Url::parse(redis)
                    .ok()
                    .and_then(|u| u.password().map(str::to_owned))
                && pw.len() >= 6
                && !c.issuer_names.iter().any(|n| n.contains(&pw))
            {
                assert!(
                    !c.debug.contains(&pw),
                    "the config's Debug shows the redis password"
                );
            }
        }
    }
});

/// https with a host, or http to a loopback host; no user info.
fn fetchable(s: &str) -> Result<(), &'static str> {
    let u = Url::parse(s).map_err(|_| "not a URL")?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err("user info");
    }
    let host = u.host().ok_or("no host")?;
    match u.scheme() {
        "https" => Ok(()),
        "http" => match host {
            Host::Ipv4(ip) if ip.octets()[0] == 127 => Ok(()),
            Host::Ipv6(ip) if ip == std::net::Ipv6Addr::LOCALHOST => Ok(()),
            Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => Ok(()),
            _ => Err("plain http to a host that is not loopback"),
        },
        _ => Err("not http(s)"),
    }
}

/// The passwords of the `redis://` URLs written in `text` (at least 6
/// characters, and written only once, so that finding one elsewhere means
/// it was copied from the URL).
fn redis_passwords(text: &str) -> Vec<String> {
    text.match_indices("redis://")
        .filter_map(|(i, _)| {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(rest.len());
            let pw = Url::parse(&rest[..end]).ok()?.password()?.to_owned();
            (pw.len() >= 6 && text.matches(pw.as_str()).count() == 1).then_some(pw)
        })
        .collect()
}

/// Whether `message` copies `password` from `text`: changing the password
/// in the text (letters and digits shifted, the rest kept so the TOML reads
/// the same) changes it in the message too.
fn echoes(text: &str, password: &str, message: &str) -> bool {
    let other: String = password
        .chars()
        .map(|c| match c {
            'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
            'z' => 'a',
            'Z' => 'A',
            '9' => '0',
            c => c,
        })
        .collect();
    if other == password {
        return false;
    }
    match fuzz_api::parse_config(&text.replace(password, &other)) {
        Err(f) => f.message == message.replace(password, &other),
        Ok(_) => false,
    }
}
