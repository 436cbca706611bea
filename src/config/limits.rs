//! The `[server]` section and the audit log's write settings: timeouts and
//! limits, each with a default and a sane range.

use std::time::Duration;

use super::{Checker, ConfigError, raw};
use crate::audit::{AuditSettings, CheckpointSettings, RefusalSettings, RotateSettings};
use crate::mask::MaskCacheSettings;
use crate::server::ServerSettings;

/// A duration key: its value or default, within `[min, max]`.
fn duration(
    c: &Checker,
    key: &str,
    value: Option<Duration>,
    default: Duration,
    range: (Duration, Duration),
) -> Result<Duration, ConfigError> {
    let example = humantime::format_duration(default).to_string();
    let d = optional_duration(c, key, Some(value.unwrap_or(default)), &example, range)?;
    Ok(d.unwrap_or(default))
}

/// A count key: its value or default, within `[min, max]`.
fn count(
    c: &Checker,
    key: &str,
    value: Option<usize>,
    default: usize,
    (min, max): (usize, usize),
) -> Result<usize, ConfigError> {
    let n = value.unwrap_or(default);
    if n < min || n > max {
        return Err(c.err(
            key,
            format!("{n} is out of range; write a number from {min} to {max}, e.g. {default}"),
        ));
    }
    Ok(n)
}

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
/// A year as humantime writes one (365.25 days).
const YEAR: Duration = Duration::from_secs(31_557_600);

/// The units a size may be written in (binary: a KiB is 1024 bytes).
const SIZE_UNITS: [(&str, u64); 5] = [
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// The bytes a size stands for, or why it is not a size.
fn parse_size(raw: &raw::RawSize) -> Result<u64, String> {
    let text = match raw {
        raw::RawSize::Bytes(n) => {
            return u64::try_from(*n).map_err(|_| format!("{n} is negative"));
        }
        raw::RawSize::Text(t) => t.trim(),
    };
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let unit = unit.trim();
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let (_, mult) = SIZE_UNITS
        .iter()
        .find(|(u, _)| *u == unit || (unit.is_empty() && *u == "B"))
        .ok_or_else(|| format!("{text:?}: unknown unit {unit:?}"))?;
    n.checked_mul(*mult)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `100MiB`, `1TiB`, `1500B`: the largest unit that divides it.
fn size_text(n: u64) -> String {
    let (unit, mult) = SIZE_UNITS
        .iter()
        .rev()
        .find(|(_, m)| n >= *m && n.is_multiple_of(*m))
        .copied()
        .unwrap_or(("B", 1));
    format!("{}{unit}", n / mult)
}

/// An optional size key, within `[min, max]` bytes.
fn size(
    c: &Checker,
    key: &str,
    value: Option<&raw::RawSize>,
    (min, max): (u64, u64),
) -> Result<Option<u64>, ConfigError> {
    let Some(raw) = value else {
        return Ok(None);
    };
    let units = SIZE_UNITS.map(|(u, _)| u).join(", ");
    let hint = format!(
        "write a number of bytes or a string with a unit ({units}) from {} to {}, e.g. \"100MiB\"",
        size_text(min),
        size_text(max)
    );
    match parse_size(raw) {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Ok(n) => Err(c.err(key, format!("{} is out of range; {hint}", size_text(n)))),
        Err(why) => Err(c.err(key, format!("{why}; {hint}"))),
    }
}

/// An optional duration key, within `[min, max]`.
fn optional_duration(
    c: &Checker,
    key: &str,
    value: Option<Duration>,
    example: &str,
    (min, max): (Duration, Duration),
) -> Result<Option<Duration>, ConfigError> {
    match value {
        Some(d) if d < min || d > max => Err(c.err(
            key,
            format!(
                "{} is out of range; write a duration from {} to {}, e.g. \"{example}\"",
                humantime::format_duration(d),
                humantime::format_duration(min),
                humantime::format_duration(max),
            ),
        )),
        other => Ok(other),
    }
}

pub(super) fn server(c: &Checker, s: &raw::RawServer) -> Result<ServerSettings, ConfigError> {
    let d = ServerSettings::default();
    Ok(ServerSettings {
        header_read_timeout: duration(
            c,
            "server.header_read_timeout",
            s.header_read_timeout,
            d.header_read_timeout,
            (Duration::from_millis(100), Duration::from_secs(300)),
        )?,
        request_timeout: duration(
            c,
            "server.request_timeout",
            s.request_timeout,
            d.request_timeout,
            (Duration::from_millis(100), Duration::from_secs(600)),
        )?,
        idle_timeout: duration(
            c,
            "server.idle_timeout",
            s.idle_timeout,
            d.idle_timeout,
            (Duration::from_millis(100), HOUR),
        )?,
        max_connections: count(
            c,
            "server.max_connections",
            s.max_connections,
            d.max_connections,
            (1, 1_000_000),
        )?,
        max_in_flight: count(
            c,
            "server.max_in_flight",
            s.max_in_flight,
            d.max_in_flight,
            (1, 100_000),
        )?,
        queue_timeout: queue_timeout(c, s, d)?,
    })
}

/// `[masks]`: the hint cache's lifetime (zero: off; at most 10 minutes,
/// since derived secret strings live that long) and its size.
pub(super) fn masks(c: &Checker, m: &raw::RawMasks) -> Result<MaskCacheSettings, ConfigError> {
    let d = MaskCacheSettings::default();
    let max_bytes = size(
        c,
        "masks.cache_max_bytes",
        m.cache_max_bytes.as_ref(),
        (0, 1024 * crate::files::MIB),
    )?;
    Ok(MaskCacheSettings {
        ttl: duration(
            c,
            "masks.cache_ttl",
            m.cache_ttl,
            d.ttl,
            (Duration::ZERO, Duration::from_secs(600)),
        )?,
        max_bytes: max_bytes.map_or(d.max_bytes, |b| b as usize),
    })
}

/// `server.queue_timeout`: zero (no waiting) up to 60 s, and shorter than
/// `request_timeout` (a request that waited that long would be cut off).
fn queue_timeout(
    c: &Checker,
    s: &raw::RawServer,
    d: ServerSettings,
) -> Result<Duration, ConfigError> {
    let request = s.request_timeout.unwrap_or(d.request_timeout);
    let Some(t) = s.queue_timeout else {
        return Ok(d.queue_timeout.min(request / 2));
    };
    if t > Duration::from_secs(60) || t >= request {
        return Err(c.err(
            "server.queue_timeout",
            format!(
                "{} is too long: at most 60s, and shorter than server.request_timeout ({})",
                humantime::format_duration(t),
                humantime::format_duration(request)
            ),
        ));
    }
    Ok(t)
}

pub(super) fn audit(c: &Checker, a: &raw::RawAudit) -> Result<AuditSettings, ConfigError> {
    let d = AuditSettings::default();
    Ok(AuditSettings {
        refusals: RefusalSettings {
            window: duration(
                c,
                "audit.refusal_window",
                a.refusal_window,
                d.refusals.window,
                (SECOND, HOUR),
            )?,
            table_size: count(
                c,
                "audit.refusal_table_size",
                a.refusal_table_size,
                d.refusals.table_size,
                (1, 100_000),
            )?,
        },
        sync_interval: duration(
            c,
            "audit.sync_interval",
            a.sync_interval,
            d.sync_interval,
            (Duration::from_millis(10), Duration::from_secs(60)),
        )?,
        // The key and file paths are resolved against the config's
        // directory by the caller.
        checkpoints: CheckpointSettings {
            every: count(
                c,
                "audit.checkpoint_every",
                a.checkpoint_every,
                d.checkpoints.every as usize,
                (1, 10_000_000),
            )? as u64,
            interval: duration(
                c,
                "audit.checkpoint_interval",
                a.checkpoint_interval,
                d.checkpoints.interval,
                (SECOND, 24 * HOUR),
            )?,
            key_file: None,
            stdout: a.checkpoint_stdout.unwrap_or(d.checkpoints.stdout),
            file: None,
        },
        rotation: RotateSettings {
            max_bytes: size(
                c,
                "audit.rotate_bytes",
                a.rotate_bytes.as_ref(),
                (crate::files::KIB, 1 << 40),
            )?,
            max_age: optional_duration(
                c,
                "audit.rotate_after",
                a.rotate_after,
                "1day",
                (Duration::from_secs(60), YEAR),
            )?,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
listen = "127.0.0.1:8400"
audiences = ["jobkey"]
policy_dir = "policies"
[vault]
address = "http://127.0.0.1:8200"
[vault.auth]
method = "token"
token_env = "VAULT_TOKEN"
[issuers.github]
preset = "github"
"#;

    fn parse(audit: &str, server: &str) -> Result<Config, String> {
        Config::parse(
            Path::new("/etc/jobkey/jobkey.toml"),
            &format!("{BASE}[audit]\npath = \"audit.jsonl\"\n{audit}\n[server]\n{server}\n"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_apply_when_the_keys_are_absent() {
        let c = parse("", "").unwrap();
        assert_eq!(c.server, ServerSettings::default());
        let mut audit = c.audit_settings.clone();
        assert_eq!(
            audit.checkpoints.key_file.take(),
            Some(Path::new("/etc/jobkey/audit.jsonl.checkpoint-key").to_path_buf()),
            "the checkpoint key sits beside the log"
        );
        assert_eq!(audit, AuditSettings::default());
        let d = ServerSettings::default();
        assert_eq!(d.header_read_timeout, Duration::from_secs(10));
        assert_eq!(d.request_timeout, Duration::from_secs(30));
        assert_eq!(d.idle_timeout, Duration::from_secs(75));
        assert_eq!((d.max_connections, d.max_in_flight), (512, 64));
        assert_eq!(d.queue_timeout, Duration::from_secs(10));
        let a = AuditSettings::default();
        assert_eq!(a.refusals.window, Duration::from_secs(60));
        assert_eq!(a.refusals.table_size, 256);
        assert_eq!(a.sync_interval, Duration::from_secs(1));
    }

    #[test]
    fn the_keys_are_read() {
        let c = parse(
            "refusal_window = \"5s\"\nrefusal_table_size = 3\nsync_interval = \"200ms\"",
            "header_read_timeout = \"2s\"\nrequest_timeout = \"4s\"\nidle_timeout = \"6s\"\nmax_connections = 7\nmax_in_flight = 2\nqueue_timeout = \"1500ms\"",
        )
        .unwrap();
        assert_eq!(
            c.server,
            ServerSettings {
                header_read_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(4),
                idle_timeout: Duration::from_secs(6),
                max_connections: 7,
                max_in_flight: 2,
                queue_timeout: Duration::from_millis(1500),
            }
        );
        let short = parse("", "request_timeout = \"4s\"").unwrap();
        assert_eq!(
            short.server.queue_timeout,
            Duration::from_secs(2),
            "the default waits at most half the request timeout"
        );
        assert_eq!(c.audit_settings.refusals.window, Duration::from_secs(5));
        assert_eq!(c.audit_settings.refusals.table_size, 3);
        assert_eq!(c.audit_settings.sync_interval, Duration::from_millis(200));
    }

    #[test]
    fn out_of_range_values_name_the_key_and_the_range() {
        for (audit, server, key, hint) in [
            (
                "",
                "max_connections = 0",
                "`server.max_connections`",
                "from 1 to",
            ),
            (
                "",
                "max_in_flight = 0",
                "`server.max_in_flight`",
                "from 1 to",
            ),
            (
                "",
                "queue_timeout = \"2m\"",
                "`server.queue_timeout`",
                "at most 60s",
            ),
            (
                "",
                "request_timeout = \"5s\"\nqueue_timeout = \"5s\"",
                "`server.queue_timeout`",
                "shorter than server.request_timeout (5s)",
            ),
            (
                "",
                "header_read_timeout = \"0s\"",
                "`server.header_read_timeout`",
                "from 100ms to 5m",
            ),
            (
                "",
                "request_timeout = \"1h\"",
                "`server.request_timeout`",
                "from 100ms to 10m",
            ),
            (
                "",
                "idle_timeout = \"1ms\"",
                "`server.idle_timeout`",
                "from 100ms",
            ),
            (
                "refusal_window = \"0s\"",
                "",
                "`audit.refusal_window`",
                "from 1s to 1h",
            ),
            (
                "refusal_table_size = 0",
                "",
                "`audit.refusal_table_size`",
                "from 1 to",
            ),
            (
                "sync_interval = \"2m\"",
                "",
                "`audit.sync_interval`",
                "from 10ms to 1m",
            ),
        ] {
            let e = parse(audit, server).unwrap_err();
            assert!(e.contains(key) && e.contains(hint), "{audit}{server}: {e}");
        }
        let e = parse("", "max_conections = 3").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn the_mask_cache_keys_are_read_and_checked() {
        let masks = |section: &str| {
            Config::parse(
                Path::new("/etc/jobkey/jobkey.toml"),
                &format!("{BASE}[audit]\npath = \"audit.jsonl\"\n[masks]\n{section}\n"),
            )
            .map(|c| c.masks)
            .map_err(|e| e.to_string())
        };
        let d = MaskCacheSettings::default();
        assert_eq!((d.ttl, d.max_bytes), (Duration::from_secs(30), 4 << 20));
        for (section, ttl, bytes) in [
            ("", d.ttl, d.max_bytes),
            ("cache_ttl = \"0s\"", Duration::ZERO, d.max_bytes),
            ("cache_ttl = \"10m\"", Duration::from_secs(600), d.max_bytes),
            ("cache_max_bytes = \"64MiB\"", d.ttl, 64 << 20),
            ("cache_max_bytes = 0", d.ttl, 0),
        ] {
            let got = masks(section).unwrap();
            assert_eq!((got.ttl, got.max_bytes), (ttl, bytes), "{section}");
        }
        for (section, hint) in [
            ("cache_ttl = \"11m\"", "`masks.cache_ttl`"),
            ("cache_max_bytes = \"2GiB\"", "`masks.cache_max_bytes`"),
            ("cache_max_bytes = \"lots\"", "`masks.cache_max_bytes`"),
            ("cache_size = 3", "unknown field"),
        ] {
            let e = masks(section).unwrap_err();
            assert!(e.contains(hint), "{section}: {e}");
        }
    }

    #[test]
    fn rotation_is_off_unless_a_size_or_an_age_is_given() {
        let rotation = |audit: &str| parse(audit, "").map(|c| c.audit_settings.rotation);
        let mib = 1024 * 1024;
        for (audit, bytes, age) in [
            ("", None, None),
            ("rotate_bytes = \"100MiB\"", Some(100 * mib), None),
            ("rotate_bytes = \"1 GiB\"", Some(1024 * mib), None),
            ("rotate_bytes = \"1KiB\"", Some(1024), None),
            ("rotate_bytes = 4096", Some(4096), None),
            ("rotate_bytes = \"4096\"", Some(4096), None),
            ("rotate_after = \"1d\"", None, Some(24 * HOUR)),
            (
                "rotate_bytes = \"1TiB\"\nrotate_after = \"1m\"",
                Some(1 << 40),
                Some(Duration::from_secs(60)),
            ),
        ] {
            assert_eq!(
                rotation(audit).unwrap(),
                RotateSettings {
                    max_bytes: bytes,
                    max_age: age
                },
                "{audit}"
            );
        }
    }

    #[test]
    fn a_bad_rotation_setting_says_what_to_write() {
        for (audit, words) in [
            ("rotate_bytes = 10", "10B is out of range"),
            ("rotate_bytes = \"512B\"", "512B is out of range"),
            ("rotate_bytes = \"2TiB\"", "2TiB is out of range"),
            ("rotate_bytes = \"100MB\"", "unknown unit \"MB\""),
            ("rotate_bytes = \"lots\"", "is not a size"),
            ("rotate_bytes = -1", "-1 is negative"),
            (
                "rotate_bytes = \"99999999999999999999KiB\"",
                "is not a size",
            ),
            ("rotate_bytes = \"99999999999TiB\"", "is too large"),
            ("rotate_after = \"10s\"", "`audit.rotate_after`"),
            ("rotate_after = \"400d\"", "from 1m to 1year"),
            (
                "rotate_bytes = true",
                "a number of bytes, or a string such as",
            ),
        ] {
            let e = parse(audit, "").unwrap_err();
            assert!(e.contains(words), "{audit}: {e}");
            if audit.starts_with("rotate_bytes") && !audit.ends_with("true") {
                assert!(
                    e.contains("`audit.rotate_bytes`") && e.contains("from 1KiB to 1TiB"),
                    "{audit}: {e}"
                );
            }
        }
    }
}
