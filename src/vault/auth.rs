//! jobkey's own identity at Vault: reading its credentials, logging in,
//! renewing its token, and the background task that keeps it alive.
//!
//! Secrets handled here (the token, the AppRole role_id and secret_id) live in
//! [`SecretString`]. vaultrs keeps the token it was built with as a plain
//! `String` (in its settings and its middleware); [`ClientHandle`] wipes both
//! copies when the client is dropped.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use vaultrs::client::{Client, VaultClient, VaultClientSettingsBuilder};
use zeroize::Zeroize;

use super::error::{VaultError, from_client};
use super::{Inner, VaultAuth, kv};
use crate::secret::SecretString;

/// How often the background task asks `sys/health` and looks jobkey's token
/// up: two small requests per interval, whatever the traffic.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// A health answer older than this no longer counts for readiness.
pub(crate) const HEALTH_FRESH: Duration = Duration::from_secs(15);
/// First retry delay after a failed renewal or login; doubles up to the max.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Never schedule token work closer together than this.
const MIN_STEP: Duration = Duration::from_millis(200);

/// A vaultrs client that wipes its copies of the token when dropped.
pub(crate) struct ClientHandle(pub(crate) VaultClient);

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.0.settings.token.zeroize();
        self.0.middle.token.zeroize();
    }
}

/// What is needed to build a vaultrs client (no secrets).
#[derive(Debug, Clone)]
pub(crate) struct ClientParams {
    pub(crate) address: url::Url,
    pub(crate) ca_file: Option<std::path::PathBuf>,
    pub(crate) request_timeout: Duration,
}

/// Builds a client. Every setting is given explicitly so that vaultrs does
/// not pick up `VAULT_TOKEN`, `VAULT_CACERT`, `VAULT_SKIP_VERIFY` or client
/// certificates from the environment.
pub(crate) fn build_client(
    p: &ClientParams,
    token: Option<&SecretString>,
) -> Result<ClientHandle, VaultError> {
    let mut ca_certs = Vec::new();
    if let Some(ca) = &p.ca_file {
        check_ca_file(ca)?;
        let path = ca.to_str().ok_or_else(|| VaultError::Config {
            reason: format!("CA file path {} is not UTF-8", ca.display()),
        })?;
        ca_certs.push(path.to_owned());
    }
    // The token is set after building: the builder would keep a copy that
    // nobody wipes.
    let settings = VaultClientSettingsBuilder::default()
        .address(p.address.as_str())
        .ca_certs(ca_certs)
        .identity(None)
        .timeout(Some(p.request_timeout))
        .token(String::new())
        .verify(true)
        .version(1u8)
        .wrapping(false)
        .namespace(None)
        .build()
        .map_err(|e| VaultError::Config {
            reason: format!("Vault client settings: {e}"),
        })?;
    let mut client =
        ClientHandle(VaultClient::new(settings).map_err(|e| from_client(e, "client set-up"))?);
    if let Some(t) = token {
        client.0.set_token(t.expose_secret());
    }
    Ok(client)
}

/// vaultrs (through reqwest) accepts a CA file without any certificate in it
/// and then trusts only the system roots; refuse that, and PEM errors, here.
fn check_ca_file(path: &std::path::Path) -> Result<(), VaultError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let bad = |why: String| VaultError::Config {
        reason: format!("CA file {}: {why}", path.display()),
    };
    let pem = crate::files::read(path, crate::files::MIB).map_err(|e| bad(e.reason()))?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| bad(format!("bad PEM: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(())
}

/// jobkey's credentials, read fresh at each login so that a rotated token
/// file or secret_id file is picked up.
pub(crate) enum Credentials {
    Token(SecretString),
    AppRole {
        mount: String,
        role_id: SecretString,
        secret_id: SecretString,
    },
}

fn read_secret_file(path: &std::path::Path, what: &str) -> Result<SecretString, VaultError> {
    // A token or secret_id is short: 64 KiB is generous, and a FIFO or a
    // device is refused instead of read until memory runs out.
    let cannot = |why: String| VaultError::Config {
        reason: format!("cannot read the {what} file {}: {why}", path.display()),
    };
    let bytes =
        crate::files::read_secret(path, 64 * crate::files::KIB).map_err(|e| cannot(e.reason()))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| cannot("it is not UTF-8 text".into()))?;
    let raw = SecretString::new(text.to_owned());
    let value = raw.expose_secret().trim();
    if value.is_empty() {
        return Err(VaultError::Config {
            reason: format!("the {what} file {} is empty", path.display()),
        });
    }
    Ok(SecretString::new(value.to_owned()))
}

/// A token becomes an HTTP header; vaultrs panics on a value that is not a
/// valid header, so refuse it here with an error that names only the source.
fn check_token(token: &SecretString, source: &str) -> Result<(), VaultError> {
    if token.expose_secret().bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(VaultError::Config {
            reason: format!("the token from {source} contains characters not allowed in a token"),
        })
    }
}

pub(crate) fn load_credentials(auth: &VaultAuth) -> Result<Credentials, VaultError> {
    match auth {
        VaultAuth::TokenFile(path) => {
            let token = read_secret_file(path, "token")?;
            check_token(&token, &path.display().to_string())?;
            Ok(Credentials::Token(token))
        }
        VaultAuth::TokenEnv(name) => {
            let raw = match std::env::var(name) {
                Ok(v) => SecretString::new(v),
                Err(std::env::VarError::NotPresent) => {
                    return Err(VaultError::Config {
                        reason: format!("environment variable {name} is not set"),
                    });
                }
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(VaultError::Config {
                        reason: format!("environment variable {name} is not UTF-8"),
                    });
                }
            };
            let token = SecretString::new(raw.expose_secret().trim().to_owned());
            if token.is_empty() {
                return Err(VaultError::Config {
                    reason: format!("environment variable {name} is empty"),
                });
            }
            check_token(&token, &format!("environment variable {name}"))?;
            Ok(Credentials::Token(token))
        }
        VaultAuth::AppRole {
            mount,
            role_id_file,
            secret_id_file,
        } => {
            kv::check_path("AppRole mount", mount).map_err(|e| VaultError::Config {
                reason: e.to_string(),
            })?;
            Ok(Credentials::AppRole {
                mount: mount.trim_matches('/').to_owned(),
                role_id: read_secret_file(role_id_file, "AppRole role_id")?,
                secret_id: read_secret_file(secret_id_file, "AppRole secret_id")?,
            })
        }
    }
}

/// The lifetime of jobkey's current token, as Vault last told it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lease {
    /// Time to live when `obtained`; zero means the token never expires.
    pub(crate) ttl: Duration,
    pub(crate) renewable: bool,
    pub(crate) obtained: Instant,
    /// The TTL granted at login. A renewal that returns less has been capped
    /// by the token's max TTL.
    pub(crate) login_ttl: Duration,
}

impl Lease {
    fn new(ttl_secs: u64, renewable: bool) -> Lease {
        let ttl = Duration::from_secs(ttl_secs);
        Lease {
            ttl,
            renewable,
            obtained: Instant::now(),
            login_ttl: ttl,
        }
    }

    pub(crate) fn expires_at(&self) -> Option<Instant> {
        (!self.ttl.is_zero()).then(|| self.obtained + self.ttl)
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at().is_some_and(|at| now >= at)
    }

    /// When to act on this lease: renew (or log in again) at 2/3 of the TTL;
    /// a static token that cannot be renewed is reloaded from its source
    /// when it expires. `None` for a token without TTL (e.g. a root token).
    pub(crate) fn next_action(&self, approle: bool) -> Option<Instant> {
        let at = if self.renewable || approle {
            self.obtained + self.ttl * 2 / 3
        } else {
            self.expires_at()?
        };
        self.expires_at()?;
        Some(at.max(Instant::now() + MIN_STEP))
    }
}

/// A logged-in client and its lease.
pub(crate) struct Session {
    pub(crate) client: ClientHandle,
    pub(crate) lease: Lease,
}

/// Logs in with the configured method.
///
/// Token: the token is looked up (`auth/token/lookup-self`) to check it and
/// learn its TTL. AppRole: `auth/<mount>/login`. Failures other than Vault
/// being unavailable become [`VaultError::Login`].
pub(crate) async fn login(p: &ClientParams, auth: &VaultAuth) -> Result<Session, VaultError> {
    let as_login = |e: VaultError| match e {
        e @ (VaultError::Unavailable { .. } | VaultError::Config { .. }) => e,
        VaultError::PermissionDenied { .. } => VaultError::Login {
            reason: "Vault refused the token (expired, revoked or invalid)".into(),
        },
        other => VaultError::Login {
            reason: other.to_string(),
        },
    };
    match load_credentials(auth)? {
        Credentials::Token(token) => {
            let client = build_client(p, Some(&token))?;
            drop(token);
            let mut info = vaultrs::token::lookup_self(&client.0)
                .await
                .map_err(|e| as_login(from_client(e, "auth/token/lookup-self")))?;
            info.id.zeroize();
            // TTL 0 means "never expires" only for tokens without an expiry
            // time (root tokens); otherwise the token is about to expire.
            if info.ttl == 0 && info.expire_time.is_some() {
                return Err(VaultError::Login {
                    reason: "the token is about to expire".into(),
                });
            }
            let lease = Lease::new(info.ttl, info.renewable.unwrap_or(false));
            Ok(Session { client, lease })
        }
        Credentials::AppRole {
            mount,
            role_id,
            secret_id,
        } => {
            let mut client = build_client(p, None)?;
            let what = format!("auth/{mount}/login");
            let auth = vaultrs::auth::approle::login(
                &client.0,
                &mount,
                role_id.expose_secret(),
                secret_id.expose_secret(),
            )
            .await
            .map_err(|e| as_login(from_client(e, &what)))?;
            let token = SecretString::new(auth.client_token);
            if token.is_empty() {
                return Err(VaultError::Login {
                    reason: format!("{what} returned no token"),
                });
            }
            check_token(&token, &what)?;
            client.0.set_token(token.expose_secret());
            let lease = Lease::new(auth.lease_duration, auth.renewable);
            Ok(Session { client, lease })
        }
    }
}

/// `auth/token/renew-self`: returns the new TTL and renewability.
pub(crate) async fn renew(client: &ClientHandle) -> Result<(Duration, bool), VaultError> {
    let mut auth = vaultrs::token::renew_self(&client.0, None)
        .await
        .map_err(|e| from_client(e, "auth/token/renew-self"))?;
    auth.client_token.zeroize();
    Ok((Duration::from_secs(auth.lease_duration), auth.renewable))
}

/// Whether Vault still accepts this client's token: `Ok(false)` when
/// `lookup-self` is refused.
pub(crate) async fn token_is_valid(client: &ClientHandle) -> Result<bool, VaultError> {
    match vaultrs::token::lookup_self(&client.0).await {
        Ok(mut info) => {
            info.id.zeroize();
            Ok(true)
        }
        Err(e) => match from_client(e, "auth/token/lookup-self") {
            VaultError::PermissionDenied { .. } => Ok(false),
            other => Err(other),
        },
    }
}

/// Readiness reasons (see [`super::Readiness`]).
pub(crate) const TOKEN_REFUSED: &str = "jobkey's token was refused";
pub(crate) const TOKEN_EXPIRED: &str = "jobkey's token expired";

/// The token's state, shared by the handles and the background task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenState {
    pub(crate) lease: Lease,
    /// False once Vault refused the token (or it expired) and no new login
    /// succeeded.
    pub(crate) logged_in: bool,
    /// Vault refused the token (rather than it expiring); for the
    /// readiness reason.
    pub(crate) refused: bool,
    /// When the background task should next renew or log in.
    pub(crate) next: Option<Instant>,
    pub(crate) failures: u32,
}

impl TokenState {
    pub(crate) fn fresh(lease: Lease, approle: bool) -> TokenState {
        TokenState {
            lease,
            logged_in: true,
            refused: false,
            next: lease.next_action(approle),
            failures: 0,
        }
    }

    pub(crate) fn is_live(&self, now: Instant) -> bool {
        self.logged_in && !self.lease.is_expired(now)
    }

    /// Why the token is not usable now, if it is not.
    pub(crate) fn problem(&self, now: Instant) -> Option<&'static str> {
        if self.is_live(now) {
            None
        } else if self.refused {
            Some(TOKEN_REFUSED)
        } else {
            Some(TOKEN_EXPIRED)
        }
    }

    /// Schedules a retry with exponential back-off, early enough to retry
    /// again before a still-valid token expires.
    fn retry_later(&mut self, now: Instant) {
        let exp = self.failures.min(6);
        self.failures = self.failures.saturating_add(1);
        let mut delay = (RETRY_MIN * 2u32.pow(exp)).min(RETRY_MAX);
        if let Some(at) = self.lease.expires_at().filter(|at| *at > now) {
            delay = delay.min((at - now) / 2);
        }
        self.next = Some(now + delay.max(MIN_STEP));
    }
}

/// Runs until every [`super::Vault`] handle is gone: keeps the token alive
/// and, every [`HEALTH_INTERVAL`], polls `sys/health` and then (when Vault
/// is healthy and the token is thought live) `lookup-self`. A refused
/// lookup makes the token due for a new login at once.
pub(crate) async fn maintain(weak: Weak<Inner>, wake: Arc<Notify>) {
    let mut next_health = Instant::now() + HEALTH_INTERVAL;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let now = Instant::now();
        if now >= next_health {
            if inner.check_health().await.is_ok() {
                let _ = inner.check_token().await;
            }
            next_health = Instant::now() + HEALTH_INTERVAL;
        }
        let due = inner.state().next.is_some_and(|at| at <= Instant::now());
        if due {
            token_step(&inner).await;
        }
        let deadline = inner
            .state()
            .next
            .map_or(next_health, |at| at.min(next_health));
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            _ = wake.notified() => {}
        }
    }
}

/// One renewal or login attempt.
async fn token_step(inner: &Inner) {
    let st = inner.state();
    let approle = matches!(inner.auth, VaultAuth::AppRole { .. });
    if st.logged_in && st.lease.renewable {
        let client = inner.client.load_full();
        match renew(&client).await {
            Ok((ttl, _)) if ttl.is_zero() => {
                // Renewed to nothing: the token is at its max TTL. Log in
                // again, or reload a static token when the current one ends.
                if approle {
                    relogin(inner).await;
                } else {
                    inner.update_state(|s| {
                        s.lease.renewable = false;
                        s.next = s.lease.expires_at();
                    });
                }
                return;
            }
            Ok((ttl, renewable)) => {
                if approle && (ttl < st.lease.login_ttl || !renewable) {
                    // Capped by the max TTL: a fresh login gives a full TTL.
                    tracing::debug!("Vault token reached its max TTL; logging in again");
                    relogin(inner).await;
                } else {
                    tracing::debug!(ttl_s = ttl.as_secs(), "renewed jobkey's Vault token");
                    let lease = Lease {
                        ttl,
                        renewable,
                        obtained: Instant::now(),
                        login_ttl: st.lease.login_ttl,
                    };
                    inner.set_state(TokenState::fresh(lease, approle));
                }
                return;
            }
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "renewing jobkey's Vault token failed; will retry");
                inner.mark_unhealthy(super::health::UNAVAILABLE);
                inner.update_state(|s| s.retry_later(Instant::now()));
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Vault refused to renew jobkey's token; logging in again");
            }
        }
    }
    relogin(inner).await;
}

/// Logs in again (AppRole) or reloads the token from its source.
async fn relogin(inner: &Inner) {
    match login(&inner.params, &inner.auth).await {
        Ok(session) => {
            let approle = matches!(inner.auth, VaultAuth::AppRole { .. });
            inner.client.store(Arc::new(session.client));
            inner.set_state(TokenState::fresh(session.lease, approle));
            tracing::info!(
                ttl_s = session.lease.ttl.as_secs(),
                "logged in to Vault again"
            );
        }
        Err(e) => {
            let now = Instant::now();
            let refused = matches!(e, VaultError::Login { .. } | VaultError::Config { .. });
            let static_token = !matches!(inner.auth, VaultAuth::AppRole { .. });
            inner.update_state(|s| {
                // A static token that Vault refuses is dead; an AppRole token
                // stays usable until it expires even when a new login fails.
                if static_token && refused {
                    s.logged_in = false;
                    s.refused = true;
                }
                if s.lease.is_expired(now) {
                    s.logged_in = false;
                }
                s.retry_later(now);
            });
            if e.is_unavailable() {
                inner.mark_unhealthy(super::health::UNAVAILABLE);
            }
            tracing::warn!(error = %e, "Vault login failed; will retry");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_without_ttl_needs_no_work() {
        let l = Lease::new(0, false);
        assert!(l.next_action(false).is_none());
        assert!(!l.is_expired(Instant::now() + Duration::from_secs(1_000_000)));
    }

    #[test]
    fn renewal_is_planned_at_two_thirds_of_the_ttl() {
        let l = Lease::new(30, true);
        let at = l.next_action(false).unwrap();
        let d = at - l.obtained;
        assert!(
            d >= Duration::from_secs(19) && d <= Duration::from_secs(21),
            "{d:?}"
        );
    }

    #[test]
    fn a_static_non_renewable_token_is_reloaded_at_expiry() {
        let l = Lease::new(30, false);
        assert_eq!(l.next_action(false), l.expires_at());
        // AppRole logs in again at 2/3 instead.
        assert!(l.next_action(true).unwrap() < l.expires_at().unwrap());
    }

    #[test]
    fn retries_back_off_but_stay_before_expiry() {
        let mut st = TokenState::fresh(Lease::new(4, true), true);
        let now = Instant::now();
        for _ in 0..10 {
            st.retry_later(now);
            let next = st.next.unwrap();
            assert!(next < st.lease.expires_at().unwrap(), "retry after expiry");
        }
        let mut st = TokenState::fresh(Lease::new(0, false), false);
        for _ in 0..20 {
            st.retry_later(now);
        }
        assert!(st.next.unwrap() - now <= RETRY_MAX);
    }

    #[test]
    fn a_dead_token_says_whether_it_was_refused_or_expired() {
        let now = Instant::now();
        let live = TokenState::fresh(Lease::new(60, true), false);
        assert_eq!(live.problem(now), None);
        let mut refused = live;
        refused.logged_in = false;
        refused.refused = true;
        assert_eq!(refused.problem(now), Some(TOKEN_REFUSED));
        assert_eq!(
            live.problem(now + Duration::from_secs(61)),
            Some(TOKEN_EXPIRED)
        );
        let mut lost = live;
        lost.logged_in = false;
        assert_eq!(lost.problem(now), Some(TOKEN_EXPIRED));
        // A token without TTL (root) never expires on its own.
        let root = TokenState::fresh(Lease::new(0, false), false);
        assert_eq!(root.problem(now + Duration::from_secs(1_000_000)), None);
    }

    #[test]
    fn token_files_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "  s.abc123\n").unwrap();
        match load_credentials(&VaultAuth::TokenFile(p.clone())).unwrap() {
            Credentials::Token(t) => assert_eq!(t.expose_secret(), "s.abc123"),
            _ => unreachable!(),
        }
        std::fs::write(&p, "s.abc 123\n").unwrap();
        let e = load_credentials(&VaultAuth::TokenFile(p.clone()))
            .err()
            .unwrap();
        assert!(matches!(e, VaultError::Config { .. }), "{e}");
        assert!(!e.to_string().contains("abc"), "{e}");
        std::fs::write(&p, "\n").unwrap();
        assert!(load_credentials(&VaultAuth::TokenFile(p)).is_err());
        let e = load_credentials(&VaultAuth::TokenFile(dir.path().join("missing")))
            .err()
            .unwrap();
        assert!(matches!(e, VaultError::Config { .. }), "{e}");
    }
}
