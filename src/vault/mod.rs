//! The Vault (and OpenBao) layer: the only part of jobkey that talks to Vault.
//!
//! [`Vault::connect`] logs jobkey in (a token from a file or an environment
//! variable, or AppRole) and starts a background task that keeps the token
//! alive and, every few seconds, asks `sys/health` and looks jobkey's own
//! token up (`auth/token/lookup-self`), so that [`Vault::readiness`] tells
//! the truth without any traffic. [`Vault`] is a cheap, clonable handle for
//! the server's request handlers.
//!
//! Built on vaultrs 0.8. What vaultrs does not do well is done here:
//! - its `VaultClient` keeps the token it was built with, so the handle holds
//!   an [`arc_swap::ArcSwap`] of clients and swaps in a new one after a new
//!   login;
//! - its health call does not parse OpenBao's answer ([`health`] is a plain
//!   GET through vaultrs' own HTTP client);
//! - its settings fall back to `VAULT_*` environment variables; every setting
//!   is given explicitly instead.
//!
//! Secrets: tokens, the AppRole role_id and secret_id, and every value read
//! from Vault are held in [`SecretString`]. No [`VaultError`], log line or
//! `Debug` output of this module contains one. Known limit: the HTTP response
//! bodies and vaultrs' intermediate JSON values are ordinary heap memory and
//! are not wiped.

mod auth;
mod engines;
mod error;
mod health;
mod http;
mod kv;
mod tokens;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use engines::Revocable;
pub use error::VaultError;
pub(crate) use tokens::NO_TOKEN_ROLE;
pub use tokens::TokenRole;

use crate::secret::SecretString;
use auth::{ClientHandle, ClientParams, TokenState};

/// How to reach Vault and how jobkey logs in. Holds paths and names only, no
/// secret, so it derives `Debug`.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    /// Vault's base address, e.g. `https://vault.internal:8200`.
    pub address: url::Url,
    /// A PEM bundle of CA certificates for an https Vault (in addition to
    /// the system roots). Ignored for `http://` addresses.
    pub ca_file: Option<PathBuf>,
    pub auth: VaultAuth,
    /// Timeout for each HTTP request to Vault (connect + answer), e.g. 10 s.
    pub request_timeout: Duration,
    /// The token role `vault_token` credentials are created through, with
    /// the policies they may carry. `None`: such credentials are refused.
    pub token_role: Option<TokenRole>,
}

impl VaultConfig {
    /// A reasonable default for [`VaultConfig::request_timeout`].
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
}

/// How jobkey authenticates itself to Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// A token read from this file (surrounding whitespace trimmed). The file
    /// is read again when the token can no longer be renewed, so a sidecar
    /// that rotates it is picked up.
    TokenFile(PathBuf),
    /// A token read from this environment variable (trimmed).
    TokenEnv(String),
    /// AppRole login at `auth/<mount>/login` with a role_id and a secret_id
    /// read from files (trimmed; read again at each login).
    AppRole {
        mount: String,
        role_id_file: PathBuf,
        secret_id_file: PathBuf,
    },
}

impl VaultAuth {
    fn kind(&self) -> &'static str {
        match self {
            VaultAuth::TokenFile(_) => "token-file",
            VaultAuth::TokenEnv(_) => "token-env",
            VaultAuth::AppRole { .. } => "approle",
        }
    }
}

/// A handle to Vault, logged in as jobkey. Cheap to clone (an `Arc`); the
/// background task stops when the last clone is dropped.
#[derive(Clone)]
pub struct Vault {
    inner: Arc<Inner>,
}

/// Whether jobkey can use Vault now, and if not, why: what `/readyz` says.
/// Computed without I/O from what the background poll and the last
/// requests saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    /// A short fixed phrase when not ready: "vault unreachable", "vault
    /// sealed", "vault not initialized", "vault unavailable", "no recent
    /// answer from vault", "jobkey's token was refused", "jobkey's token
    /// expired".
    pub reason: Option<&'static str>,
}

/// What jobkey last saw of Vault's health.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// When Vault last answered healthy (sys/health or a successful request).
    at: Option<Instant>,
    /// Why the last check or request found it unavailable; cleared by a
    /// healthy answer.
    problem: Option<&'static str>,
}

/// Readiness reason when no health answer is recent enough.
const STALE: &str = "no recent answer from vault";

pub(crate) struct Inner {
    params: ClientParams,
    auth: VaultAuth,
    token_role: Option<TokenRole>,
    /// The client carrying the current token; replaced after a new login.
    client: ArcSwap<ClientHandle>,
    token: Mutex<TokenState>,
    health: Mutex<Health>,
    /// Wakes the background task early (e.g. the token was found dead).
    wake: Arc<Notify>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl Inner {
    fn state(&self) -> TokenState {
        *self.token.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&self, st: TokenState) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = st;
    }

    fn update_state(&self, f: impl FnOnce(&mut TokenState)) {
        f(&mut self.token.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark_healthy(&self) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Health {
            at: Some(Instant::now()),
            problem: None,
        };
    }

    fn mark_unhealthy(&self, reason: &'static str) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Health {
            at: None,
            problem: Some(reason),
        };
    }

    fn health_is_fresh(&self, now: Instant) -> bool {
        self.health()
            .at
            .is_some_and(|at| now.saturating_duration_since(at) < auth::HEALTH_FRESH)
    }

    async fn check_health(&self) -> Result<(), VaultError> {
        let client = self.client.load_full();
        match health::check(&client.0.http.http, &self.params.address).await {
            Ok(()) => {
                self.mark_healthy();
                Ok(())
            }
            Err(u) => {
                if self.health_is_fresh(Instant::now()) {
                    tracing::warn!(error = %u.error, "Vault health check failed");
                }
                self.mark_unhealthy(u.reason);
                Err(u.error)
            }
        }
    }

    /// Looks jobkey's own token up (`auth/token/lookup-self`), once: a
    /// refusal marks it refused at once (and wakes the background task to
    /// log in again). Skipped while the token is already known not to be
    /// live.
    async fn check_token(&self) -> Result<(), VaultError> {
        if let Some(e) = self.token_error() {
            return Err(e);
        }
        let client = self.client.load_full();
        match auth::token_is_valid(&client).await {
            Ok(true) => {
                self.mark_healthy();
                Ok(())
            }
            Ok(false) => Err(self.mark_refused(&client)),
            Err(e) => {
                if e.is_unavailable() {
                    self.mark_unhealthy(health::UNAVAILABLE);
                }
                Err(e)
            }
        }
    }

    /// Vault refused the token of `client`: jobkey is not ready until a new
    /// login (AppRole) or a reread of the token source works. Only if no
    /// new login replaced this client meanwhile.
    fn mark_refused(&self, client: &Arc<ClientHandle>) -> VaultError {
        if Arc::ptr_eq(client, &self.client.load()) {
            if self.state().logged_in {
                tracing::warn!("Vault refused jobkey's token; logging in again");
            }
            self.update_state(|s| {
                s.logged_in = false;
                s.refused = true;
                s.next = Some(Instant::now());
            });
            self.wake.notify_one();
        }
        VaultError::Login {
            reason: "Vault refused jobkey's token; a new login is pending".into(),
        }
    }

    fn token_error(&self) -> Option<VaultError> {
        let st = self.state();
        if st.is_live(Instant::now()) {
            None
        } else if !st.logged_in {
            Some(VaultError::Login {
                reason: "Vault refused jobkey's token; a new login is pending".into(),
            })
        } else {
            Some(VaultError::Login {
                reason: "jobkey's Vault token expired and could not be renewed yet".into(),
            })
        }
    }

    fn readiness(&self) -> Readiness {
        let now = Instant::now();
        let not_ready = |reason| Readiness {
            ready: false,
            reason: Some(reason),
        };
        // Vault itself first: a token cannot be checked against a Vault
        // that does not answer.
        let h = self.health();
        if let Some(problem) = h.problem {
            return not_ready(problem);
        }
        let st = self.state();
        if let Some(reason) = st.problem(now) {
            return not_ready(reason);
        }
        if !self.health_is_fresh(now) {
            return not_ready(STALE);
        }
        Readiness {
            ready: true,
            reason: None,
        }
    }
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("address", &self.inner.params.address.as_str())
            .field("auth", &self.inner.auth.kind())
            .field("readiness", &self.readiness())
            .finish_non_exhaustive()
    }
}

impl Vault {
    /// Logs in and starts the background task.
    ///
    /// Checks `sys/health` first (so a sealed Vault is reported as such),
    /// then logs in: with a token, looks it up (`auth/token/lookup-self`) to
    /// learn its TTL and renewability; with AppRole, logs in. The background
    /// task renews jobkey's token at about 2/3 of its TTL (`renew-self`),
    /// logs in again with AppRole when renewal fails, the token is gone or
    /// its max TTL is reached, and rereads a static token from its source
    /// when Vault refuses it (marking itself not ready until that works).
    /// Every few seconds it also asks `sys/health` and, when Vault is
    /// healthy, looks the token up: a Vault that restarted and forgot the
    /// token, or a token revoked behind jobkey's back, makes jobkey not
    /// ready within one interval, with no request needed.
    ///
    /// Must be called inside a tokio runtime. Installs rustls' ring provider.
    pub async fn connect(cfg: VaultConfig) -> Result<Vault, VaultError> {
        crate::tls::install_rustls_ring_provider();
        match cfg.address.scheme() {
            "http" | "https" => {}
            other => {
                return Err(VaultError::Config {
                    reason: format!("Vault address must be http or https, not {other}"),
                });
            }
        }
        let params = ClientParams {
            address: cfg.address,
            ca_file: cfg.ca_file,
            request_timeout: cfg.request_timeout,
        };
        // A token-less client for the health check; it also validates the
        // CA file before any credential is read.
        let probe = auth::build_client(&params, None)?;
        health::check(&probe.0.http.http, &params.address).await?;
        if let Some(role) = &cfg.token_role {
            kv::check_path("token role", &role.name).map_err(|e| VaultError::Config {
                reason: e.to_string(),
            })?;
        }
        let session = auth::login(&params, &cfg.auth).await?;
        let approle = matches!(cfg.auth, VaultAuth::AppRole { .. });
        let inner = Arc::new(Inner {
            params,
            auth: cfg.auth,
            token_role: cfg.token_role,
            client: ArcSwap::from_pointee(session.client),
            token: Mutex::new(TokenState::fresh(session.lease, approle)),
            health: Mutex::new(Health {
                at: Some(Instant::now()),
                problem: None,
            }),
            wake: Arc::new(Notify::new()),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(auth::maintain(Arc::downgrade(&inner), inner.wake.clone()));
        *inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task.abort_handle());
        tracing::info!(
            address = %inner.params.address,
            auth = inner.auth.kind(),
            ttl_s = session.lease.ttl.as_secs(),
            renewable = session.lease.renewable,
            "logged in to Vault"
        );
        Ok(Vault { inner })
    }

    /// Reads a KV v2 secret at `mount`/`path`: all fields, or only `fields`.
    ///
    /// A named field that the secret lacks is [`VaultError::NotFound`]
    /// naming the field. Values that are not JSON strings are returned as
    /// their JSON text (`5432`, `true`, `["a","b"]`). A 403 is reported as
    /// [`VaultError::PermissionDenied`] only after checking that jobkey's own
    /// token is still valid; if it is not, the answer is
    /// [`VaultError::Login`] and a new login is started.
    pub async fn read_kv(
        &self,
        mount: &str,
        path: &str,
        fields: Option<&[String]>,
    ) -> Result<BTreeMap<String, SecretString>, VaultError> {
        self.run("kv_read", |client| async move {
            kv::read(&client, mount, path, fields).await
        })
        .await
    }

    /// Runs one request with the current client, with the bookkeeping every
    /// call shares: refused at once while jobkey's own token is not live;
    /// a success marks Vault healthy and an unavailable answer unhealthy; a
    /// 403 is [`VaultError::PermissionDenied`] only after checking that
    /// jobkey's token is still valid (if not: [`VaultError::Login`], jobkey
    /// is not ready from that moment, and a new login is started).
    ///
    /// `kind` names the request in the metrics (`jobkey_vault_requests_total`).
    pub(crate) async fn run<T, F, Fut>(&self, kind: &'static str, f: F) -> Result<T, VaultError>
    where
        F: FnOnce(Arc<ClientHandle>) -> Fut,
        Fut: std::future::Future<Output = Result<T, VaultError>>,
    {
        let inner = &self.inner;
        if let Some(e) = inner.token_error() {
            crate::metrics::vault_request(kind, false, std::time::Duration::ZERO);
            return Err(e);
        }
        let client = inner.client.load_full();
        let started = std::time::Instant::now();
        let answered = f(client.clone()).await;
        crate::metrics::vault_request(kind, answered.is_ok(), started.elapsed());
        match answered {
            Ok(v) => {
                inner.mark_healthy();
                Ok(v)
            }
            Err(e) if e.is_unavailable() => {
                inner.mark_unhealthy(health::UNAVAILABLE);
                Err(e)
            }
            Err(VaultError::PermissionDenied { what }) => {
                if let Ok(false) = auth::token_is_valid(&client).await {
                    return Err(inner.mark_refused(&client));
                }
                Err(VaultError::PermissionDenied { what })
            }
            Err(e) => Err(e),
        }
    }

    /// Does now what the background task does every few seconds: asks
    /// Vault's `sys/health`, then looks jobkey's own token up. `Ok(())`
    /// means ready: Vault is up and unsealed and accepts jobkey's token.
    /// Also refreshes what [`Vault::readiness`] reports.
    pub async fn health(&self) -> Result<(), VaultError> {
        self.inner.check_health().await?;
        self.inner.check_token().await
    }

    /// Ready = Vault answered healthy recently (within the last 15 s: the
    /// background task polls every 5 s, and any request that finds Vault
    /// unavailable clears it at once), and jobkey holds a token that is
    /// live and that Vault accepted at the last lookup. When not ready, the
    /// reason. No I/O: suitable for a readiness probe.
    pub fn readiness(&self) -> Readiness {
        self.inner.readiness()
    }

    /// [`Vault::readiness`]`().ready`.
    pub fn is_ready(&self) -> bool {
        self.readiness().ready
    }

    /// The Vault address this handle talks to.
    pub fn address(&self) -> &url::Url {
        &self.inner.params.address
    }
}
