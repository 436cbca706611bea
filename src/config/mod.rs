//! Server configuration: a TOML file parsed strictly (unknown keys are
//! errors), then checked into [`Config`]. Every error names the file, the
//! key and what to write instead.

mod issuer_entry;
mod limits;
mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use url::Url;

use crate::limits::{LimitSettings, Rate};
use crate::outbound::url_is_allowed;
use crate::token::{FetchSettings, IssuerSettings};
use crate::vault::{TokenRole, VaultAuth, VaultConfig};

/// A configuration problem. `Display` names the file and the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file: {reason}")]
    Read { file: String, reason: String },
    /// TOML syntax, an unknown key, or a value of the wrong type.
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A value that parses but cannot be used.
    #[error("{file}: `{key}`: {message}")]
    Invalid {
        file: String,
        key: String,
        message: String,
    },
}

/// The checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub audiences: Vec<String>,
    pub policy_dir: PathBuf,
    pub audit_path: PathBuf,
    /// The key of the audit log's value fingerprints (created if missing).
    pub audit_fingerprint_key: PathBuf,
    /// `[audit]`: how refusals are collapsed and how often lines are synced.
    pub audit_settings: crate::audit::AuditSettings,
    /// `[server]`: the listener's timeouts and limits.
    pub server: crate::server::ServerSettings,
    /// `[masks]`: how long the mask hints of a KV value are kept.
    pub masks: crate::mask::MaskCacheSettings,
    /// `[tls]`: TLS on the listener; `None`: plain HTTP.
    pub tls: Option<crate::server::TlsSettings>,
    /// `[metrics] listen`: `/metrics` on this address (plain HTTP) instead
    /// of the main listener.
    pub metrics_listen: Option<SocketAddr>,
    pub max_token_bytes: usize,
    pub max_body_bytes: usize,
    /// Where Vault is and how jobkey logs in (paths and names only).
    pub vault: VaultConfig,
    pub fetch: FetchSettings,
    /// `None`: the in-memory lease store (one replica only).
    pub state: Option<StateSettings>,
    /// `[limits]` and the issuers' `single_use`.
    pub limits: LimitSettings,
    /// `[audit] replica_id`: written on every audit record.
    pub replica_id: String,
    pub issuers: Vec<IssuerSettings>,
}

/// The shared lease store. `Debug` omits the URL (it may hold a password).
#[derive(Clone)]
pub struct StateSettings {
    pub redis_url: String,
    pub key_prefix: String,
    pub timeout: Duration,
}

impl std::fmt::Debug for StateSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSettings")
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Largest config file [`Config::load`] reads.
pub(crate) const MAX_CONFIG_BYTES: u64 = crate::files::MIB;

impl Config {
    /// Reads (a regular file of at most [`MAX_CONFIG_BYTES`]) and checks
    /// `path`. Relative paths inside the file are relative
    /// to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = crate::files::read_to_string(path, MAX_CONFIG_BYTES).map_err(|e| {
            ConfigError::Read {
                file: path.display().to_string(),
                reason: e.reason(),
            }
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.clone(),
            message: toml_message(text, &e),
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Checker { file, base }.check(raw)
    }
}

/// toml's message and its position, without the source line toml's own
/// `Display` quotes: that line may hold a secret (the password of
/// `[state] redis_url`).
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(before) = e.span().and_then(|s| text.get(..s.start)) else {
        return format!("TOML parse error: {message}");
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("TOML parse error at line {line}, column {column}: {message}")
}

pub(crate) struct Checker {
    pub file: String,
    pub base: PathBuf,
}

impl Checker {
    pub(crate) fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// A URL that jobkey may fetch: https, or http to loopback only.
    pub(crate) fn fetch_url(&self, key: &str, value: &str) -> Result<Url, ConfigError> {
        let url = Url::parse(value).map_err(|e| {
            self.err(
                key,
                format!("{value:?} is not a URL ({e}); write e.g. \"https://gitlab.example.com\""),
            )
        })?;
        if !url_is_allowed(&url) {
            return Err(self.err(
                key,
                format!(
                    "{value:?}: plain http is refused except to a loopback address; use https://"
                ),
            ));
        }
        Ok(url)
    }

    fn check(&self, raw: raw::RawConfig) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw.listen.parse().map_err(|_| {
            self.err(
                "listen",
                format!(
                    "{:?} is not an address; write e.g. \"127.0.0.1:8400\"",
                    raw.listen
                ),
            )
        })?;
        if raw.audiences.is_empty() || raw.audiences.iter().any(|a| a.trim().is_empty()) {
            return Err(self.err(
                "audiences",
                "list at least one non-empty audience, e.g. audiences = [\"jobkey\"]; jobs request their token for it",
            ));
        }
        if raw.issuers.is_empty() {
            return Err(self.err(
                "issuers",
                "no issuer is trusted; add one, e.g. [issuers.github] preset = \"github\"",
            ));
        }
        let defaults = FetchSettings::default();
        let fetch = FetchSettings {
            timeout: raw.fetch.timeout.unwrap_or(defaults.timeout),
            max_bytes: raw.fetch.max_bytes.unwrap_or(defaults.max_bytes),
            min_refetch_interval: raw
                .fetch
                .min_refetch_interval
                .unwrap_or(defaults.min_refetch_interval),
            max_key_age: raw.fetch.max_key_age.unwrap_or(defaults.max_key_age),
        };
        let mut issuers = Vec::new();
        for (name, ri) in &raw.issuers {
            let settings = issuer_entry::check(self, name, ri)?;
            if let Some(other) = issuers
                .iter()
                .find(|o: &&IssuerSettings| o.issuer == settings.issuer)
            {
                return Err(self.err(
                    format!("issuers.{name}"),
                    format!(
                        "issuer URL {:?} is already configured as `{}`",
                        settings.issuer, other.name
                    ),
                ));
            }
            issuers.push(settings);
        }
        let vault = self.vault(&raw.vault)?;
        let state = match &raw.state {
            None => None,
            Some(st) => {
                let scheme_ok = Url::parse(&st.redis_url)
                    .map(|u| u.scheme() == "redis" && u.host().is_some())
                    .unwrap_or(false);
                if !scheme_ok {
                    return Err(self.err(
                        "state.redis_url",
                        "must be a redis:// URL, e.g. \"redis://127.0.0.1:6379\"",
                    ));
                }
                let key_prefix = st.key_prefix.clone().unwrap_or_else(|| "jobkey:".into());
                if key_prefix
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(self.err("state.key_prefix", "must not contain whitespace"));
                }
                Some(StateSettings {
                    redis_url: st.redis_url.clone(),
                    key_prefix,
                    timeout: st.timeout.unwrap_or(Duration::from_secs(3)),
                })
            }
        };
        let mut audit_settings = limits::audit(self, &raw.audit)?;
        audit_settings.checkpoints.key_file = Some(match &raw.audit.checkpoint_key_file {
            Some(p) => self.path(p),
            None => crate::audit::default_checkpoint_key_path(&self.path(&raw.audit.path)),
        });
        audit_settings.checkpoints.file = raw.audit.checkpoint_file.as_ref().map(|p| self.path(p));
        let server = limits::server(self, &raw.server)?;
        let masks = limits::masks(self, &raw.masks)?;
        let tls = raw.tls.as_ref().map(|t| crate::server::TlsSettings {
            cert_file: self.path(&t.cert_file),
            key_file: self.path(&t.key_file),
            client_ca_file: t.client_ca_file.as_deref().map(|p| self.path(p)),
        });
        let metrics_listen = self.metrics_listen(raw.metrics.as_ref(), listen)?;
        let mut limits = self.limits(&raw.limits)?;
        limits.single_use = raw
            .issuers
            .iter()
            .filter(|(_, ri)| ri.single_use)
            .map(|(name, _)| name.clone())
            .collect();
        let replica_id = match &raw.audit.replica_id {
            Some(id) => {
                if id.is_empty()
                    || id.len() > 128
                    || id.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(self.err(
                        "audit.replica_id",
                        "write 1 to 128 characters without spaces, e.g. \"jobkey-0\"",
                    ));
                }
                id.clone()
            }
            None => host_name(),
        };
        Ok(Config {
            file: PathBuf::from(&self.file),
            listen,
            audiences: raw.audiences,
            policy_dir: self.path(&raw.policy_dir),
            audit_path: self.path(&raw.audit.path),
            audit_fingerprint_key: match &raw.audit.fingerprint_key_file {
                Some(p) => self.path(p),
                None => crate::audit::default_key_path(&self.path(&raw.audit.path)),
            },
            audit_settings,
            server,
            masks,
            tls,
            metrics_listen,
            max_token_bytes: raw
                .max_token_bytes
                .unwrap_or(crate::token::DEFAULT_MAX_TOKEN_BYTES),
            max_body_bytes: raw.max_body_bytes.unwrap_or(64 * 1024),
            vault,
            fetch,
            state,
            limits,
            replica_id,
            issuers,
        })
    }

    /// `[metrics] listen`: an address other than `listen`, on loopback
    /// (it is plain HTTP, and the series say which environments exist and
    /// how busy they are).
    fn metrics_listen(
        &self,
        m: Option<&raw::RawMetrics>,
        listen: SocketAddr,
    ) -> Result<Option<SocketAddr>, ConfigError> {
        let Some(value) = m.and_then(|m| m.listen.as_deref()) else {
            return Ok(None);
        };
        let addr: SocketAddr = value.parse().map_err(|_| {
            self.err(
                "metrics.listen",
                format!("{value:?} is not an address; write e.g. \"127.0.0.1:9400\""),
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(self.err(
                "metrics.listen",
                format!("{value:?}: the metrics listener is plain HTTP and listens on loopback only, e.g. \"127.0.0.1:9400\"; to scrape from elsewhere, leave it out and scrape /metrics on the main listener"),
            ));
        }
        if addr == listen {
            return Err(self.err(
                "metrics.listen",
                "is the same address as `listen`; leave it out to serve /metrics there",
            ));
        }
        Ok(Some(addr))
    }

    /// `[limits]`: each rate checked, the defaults where a key is absent.
    fn limits(&self, l: &raw::RawLimits) -> Result<LimitSettings, ConfigError> {
        let d = LimitSettings::default();
        let rate = |key: &str, text: &Option<String>, burst: Option<u32>, default: Option<Rate>| {
            match text {
                Some(t) => Rate::parse(t, burst),
                None => Ok(default.map(|r: Rate| Rate {
                    burst: burst.unwrap_or(r.burst),
                    ..r
                })),
            }
            .map_err(|e| self.err(key, e.to_string()))
        };
        let mut environments = std::collections::BTreeMap::new();
        for (name, e) in &l.environments {
            let key = format!("limits.environments.{name}.per_identity");
            let r = rate(
                &key,
                &Some(e.per_identity.clone()),
                e.per_identity_burst,
                None,
            )?;
            environments.insert(name.clone(), r);
        }
        let max_entries = l.max_entries.unwrap_or(d.max_entries);
        if !(100..=10_000_000).contains(&max_entries) {
            return Err(self.err(
                "limits.max_entries",
                format!(
                    "{max_entries} is out of range; write a number from 100 to 10000000, e.g. {}",
                    d.max_entries
                ),
            ));
        }
        Ok(LimitSettings {
            per_source: rate(
                "limits.per_source",
                &l.per_source,
                l.per_source_burst,
                d.per_source,
            )?,
            per_identity: rate(
                "limits.per_identity",
                &l.per_identity,
                l.per_identity_burst,
                d.per_identity,
            )?,
            environments,
            max_entries,
            single_use: Default::default(),
        })
    }

    fn vault(&self, v: &raw::RawVault) -> Result<VaultConfig, ConfigError> {
        let address = Url::parse(&v.address).map_err(|e| {
            self.err(
                "vault.address",
                format!(
                    "{:?} is not a URL ({e}); write e.g. \"https://vault.example.com:8200\"",
                    v.address
                ),
            )
        })?;
        if !url_is_allowed(&address) {
            return Err(self.err(
                "vault.address",
                "plain http is refused except to a loopback address: Vault tokens and secrets would cross the network in clear; use https://",
            ));
        }
        let auth = match &v.auth {
            raw::RawVaultAuth::Token {
                token_file,
                token_env,
            } => match (token_file, token_env) {
                (Some(f), None) => VaultAuth::TokenFile(self.path(f)),
                (None, Some(e)) if !e.is_empty() => VaultAuth::TokenEnv(e.clone()),
                _ => {
                    return Err(self.err(
                        "vault.auth",
                        "with method = \"token\", set exactly one of token_file = \"/run/secrets/vault-token\" or token_env = \"VAULT_TOKEN\"",
                    ));
                }
            },
            raw::RawVaultAuth::Approle {
                mount,
                role_id_file,
                secret_id_file,
            } => VaultAuth::AppRole {
                mount: mount.clone().unwrap_or_else(|| "approle".into()),
                role_id_file: self.path(role_id_file),
                secret_id_file: self.path(secret_id_file),
            },
        };
        Ok(VaultConfig {
            address,
            ca_file: v.ca_file.as_deref().map(|p| self.path(p)),
            request_timeout: v.timeout.unwrap_or(VaultConfig::DEFAULT_REQUEST_TIMEOUT),
            auth,
            token_role: self.token_role(v)?,
        })
    }

    /// `token_role` and `allowed_token_policies`: both or neither. Without
    /// them, policies with `vault_token` credentials are refused.
    fn token_role(&self, v: &raw::RawVault) -> Result<Option<TokenRole>, ConfigError> {
        const EXAMPLE: &str =
            "token_role = \"jobkey-job\" and allowed_token_policies = [\"deploy\"]";
        let (name, policies) = match (&v.token_role, &v.allowed_token_policies) {
            (None, None) => return Ok(None),
            (Some(name), Some(policies)) => (name, policies),
            (Some(_), None) => {
                return Err(self.err(
                    "vault.allowed_token_policies",
                    format!("missing: list the Vault policies a vault_token may carry (the token role's allowed_policies); write e.g. {EXAMPLE}"),
                ));
            }
            (None, Some(_)) => {
                return Err(self.err(
                    "vault.token_role",
                    format!("missing: name the Vault token role jobkey creates vault_token credentials through; write e.g. {EXAMPLE}"),
                ));
            }
        };
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        };
        if !plain(name) {
            return Err(self.err(
                "vault.token_role",
                format!("{name:?}: a role name is lowercase letters, digits, `-`, `_` and `.`, e.g. \"jobkey-job\""),
            ));
        }
        if policies.is_empty() {
            return Err(self.err(
                "vault.allowed_token_policies",
                "is empty: list at least one Vault policy, or remove both token_role and allowed_token_policies to refuse vault_token credentials",
            ));
        }
        let mut allowed = std::collections::BTreeSet::new();
        for p in policies {
            if !plain(p) {
                return Err(self.err(
                    "vault.allowed_token_policies",
                    format!(
                        "{p:?}: Vault policy names are lowercase letters, digits, `-`, `_` and `.`"
                    ),
                ));
            }
            if p == "root" {
                return Err(self.err(
                    "vault.allowed_token_policies",
                    "`root` can never be handed to a job; remove it",
                ));
            }
            allowed.insert(p.clone());
        }
        Ok(Some(TokenRole {
            name: name.clone(),
            allowed_policies: allowed,
        }))
    }
}

/// This host's name (the default replica id), or `jobkey` when it cannot
/// be read.
fn host_name() -> String {
    crate::files::read_to_string(Path::new("/proc/sys/kernel/hostname"), 256)
        .ok()
        .map(|h| h.trim().to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty() && !h.chars().any(|c| c.is_whitespace() || c.is_control()))
        .unwrap_or_else(|| "jobkey".to_owned())
}

#[cfg(test)]
mod tests;
