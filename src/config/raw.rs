//! The config file as written (TOML), parsed strictly: unknown keys are errors.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::provider::{Param, Preset, Provider};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: String,
    pub audiences: Vec<String>,
    pub policy_dir: PathBuf,
    #[serde(default)]
    pub max_token_bytes: Option<usize>,
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    pub audit: RawAudit,
    pub vault: RawVault,
    #[serde(default)]
    pub fetch: RawFetch,
    #[serde(default)]
    pub state: Option<RawState>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub metrics: Option<RawMetrics>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub masks: RawMasks,
    pub issuers: BTreeMap<String, RawIssuer>,
}

/// `[masks]`: how long the mask hints of a KV value are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMasks {
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    #[serde(default)]
    pub cache_max_bytes: Option<RawSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    pub path: PathBuf,
    #[serde(default)]
    pub fingerprint_key_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub refusal_window: Option<Duration>,
    #[serde(default)]
    pub refusal_table_size: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub sync_interval: Option<Duration>,
    /// A signed checkpoint after this many records.
    #[serde(default)]
    pub checkpoint_every: Option<usize>,
    /// And at least this often while records are written.
    #[serde(default, with = "humantime_serde")]
    pub checkpoint_interval: Option<Duration>,
    /// The checkpoint signing key (default: beside the log).
    #[serde(default)]
    pub checkpoint_key_file: Option<PathBuf>,
    /// Print each checkpoint on stdout (default true).
    #[serde(default)]
    pub checkpoint_stdout: Option<bool>,
    /// Also append each checkpoint to this file.
    #[serde(default)]
    pub checkpoint_file: Option<PathBuf>,
    /// Written on every record: which replica wrote it (default: the
    /// host name).
    #[serde(default)]
    pub replica_id: Option<String>,
    /// Rotate the live file once it is this big.
    #[serde(default)]
    pub rotate_bytes: Option<RawSize>,
    /// Rotate the live file once it is this old.
    #[serde(default, with = "humantime_serde")]
    pub rotate_after: Option<Duration>,
}

/// A size as written: a number of bytes (`1048576`) or a number and a
/// binary unit (`"100MiB"`). `limits::size` checks it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum RawSize {
    Bytes(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RawSize;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a number of bytes, or a string such as \"100MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawSize, E> {
                Ok(RawSize::Bytes(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawSize, E> {
                Ok(RawSize::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[limits]`: rate limits per source and per identity.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default)]
    pub per_source: Option<String>,
    #[serde(default)]
    pub per_source_burst: Option<u32>,
    #[serde(default)]
    pub per_identity: Option<String>,
    #[serde(default)]
    pub per_identity_burst: Option<u32>,
    #[serde(default)]
    pub max_entries: Option<usize>,
    #[serde(default)]
    pub environments: BTreeMap<String, RawEnvironmentLimits>,
}

/// `[limits.environments.NAME]`: the environment's own identity limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironmentLimits {
    pub per_identity: String,
    #[serde(default)]
    pub per_identity_burst: Option<u32>,
}

/// `[server]`: timeouts and limits of the HTTP listener.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default, with = "humantime_serde")]
    pub header_read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub request_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub max_connections: Option<usize>,
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub queue_timeout: Option<Duration>,
}

/// `[tls]`: TLS on the listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// `[metrics]`: where `/metrics` is served.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// A separate listener for `/metrics` only (it then leaves the main
    /// listener).
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    pub address: String,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// The Vault token role `vault_token` credentials are created through.
    #[serde(default)]
    pub token_role: Option<String>,
    /// The Vault policies a `vault_token` credential may carry.
    #[serde(default)]
    pub allowed_token_policies: Option<Vec<String>>,
    pub auth: RawVaultAuth,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "method", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawVaultAuth {
    Token {
        #[serde(default)]
        token_file: Option<PathBuf>,
        #[serde(default)]
        token_env: Option<String>,
    },
    Approle {
        #[serde(default)]
        mount: Option<String>,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
}

/// `[state]`: where exchange records (leases to revoke) are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub redis_url: String,
    #[serde(default)]
    pub key_prefix: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFetch {
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default)]
    pub max_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub min_refetch_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_key_age: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIssuer {
    #[serde(default)]
    pub preset: Option<PresetName>,
    /// The CI provider, for an issuer without a preset.
    #[serde(default)]
    pub provider: Option<Provider>,
    #[serde(default)]
    pub enterprise: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub organization: Option<String>,
    #[serde(default)]
    pub workspace: Option<String>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    pub leeway: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub max_lifetime: Option<Duration>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A token of this issuer may be exchanged once.
    #[serde(default)]
    pub single_use: bool,
}

impl RawIssuer {
    /// The value of a preset parameter's key, as written.
    pub(super) fn param(&self, p: Param) -> Option<&str> {
        match p {
            Param::Enterprise => self.enterprise.as_deref(),
            Param::Host => self.host.as_deref(),
            Param::Url => self.url.as_deref(),
            Param::Organization => self.organization.as_deref(),
            Param::Workspace => self.workspace.as_deref(),
        }
    }
}

/// `preset = "..."`: one of the presets of `crate::provider`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PresetName(pub &'static Preset);

impl<'de> Deserialize<'de> for PresetName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Preset::by_name(&name)
            .map(PresetName)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, Preset::names()))
    }
}
