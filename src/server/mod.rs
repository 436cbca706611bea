//! The HTTP server: routes, shared state, start-up and shutdown.
//!
//! Architecture invariant: handlers hold no state of their own; everything
//! shared lives in [`AppState`] (read-mostly, swappable policies), so
//! replicas are interchangeable.

mod audited;
mod error;
mod exchange;
mod identity;
mod listener;
pub(crate) mod reload;
mod request;
mod revoke;
pub(crate) mod tls;

use std::future::Future;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use thiserror::Error;
use tokio::net::TcpListener;

pub(crate) use error::ApiError;
pub(crate) use listener::{Peer, ServerSettings};
pub(crate) use tls::{TlsError, TlsSettings};

use crate::audit::{AuditError, AuditLog, Fingerprinter};
use crate::config::Config;
use crate::exchanges::{ExchangeStore, ExchangeStoreError, MemoryStore, RedisStore};
use crate::limits::{Limiter, RedisLimits, ReplayCache};
use crate::mask::MaskCache;
use crate::policy::{PolicyError, PolicyIssuer, PolicySet};
use crate::token::{FetchError, Verifier};
use crate::vault::{Vault, VaultError};

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("issuer setup: {0}")]
    Issuers(#[from] FetchError),
    #[error("policies: {0}")]
    Policy(#[from] PolicyError),
    #[error("vault: {0}")]
    Vault(#[from] VaultError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    #[error("listening: {0}")]
    Io(#[from] std::io::Error),
    #[error("exchange store: {0}")]
    Store(#[from] ExchangeStoreError),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// No key for the mask cache (`src/mask/cache.rs`).
    #[error("the operating system's random number generator failed (the mask cache's key)")]
    Random,
}

/// Everything a request handler needs.
pub struct AppState {
    pub verifier: Verifier,
    pub policies: ArcSwap<PolicySet>,
    /// Where `policies` is reloaded from, and against which issuers.
    pub policy_dir: std::path::PathBuf,
    pub policy_issuers: Vec<PolicyIssuer>,
    /// Whether the last reload succeeded (`/readyz`).
    pub policy_status: ArcSwap<reload::PolicyStatus>,
    pub vault: Vault,
    pub audit: AuditLog,
    /// Keyed fingerprints of issued values, for the audit log.
    pub fingerprints: Fingerprinter,
    /// The mask hints of KV values, kept for `[masks] cache_ttl`.
    pub(crate) masks: MaskCache,
    /// Each exchange's revocable credentials (Redis, or in-memory).
    pub exchanges: ExchangeStore,
    /// Rate limits per source and per identity (Redis, or in-memory).
    pub limits: Limiter,
    /// Spent tokens of `single_use` issuers (Redis, or in-memory).
    pub replay: ReplayCache,
    pub max_body_bytes: usize,
    /// The longest token accepted (the header cap is set from it).
    pub max_token_bytes: usize,
    /// The listener's timeouts and limits.
    pub server: ServerSettings,
    /// Exchanges and revocations handled at once
    /// (`server.max_in_flight`); one more is answered `503 server_busy`.
    pub in_flight: tokio::sync::Semaphore,
    /// Whether the exchange store answered its last ping (`/readyz`;
    /// pinged in the background, see [`spawn_store_pinger`]).
    pub store_ready: std::sync::atomic::AtomicBool,
}

impl AppState {
    /// Builds the state from the configuration: policies compiled, audit log
    /// opened (and verified), Vault logged in, issuer keys fetched once.
    pub async fn build(cfg: &Config) -> Result<Arc<AppState>, ServeError> {
        let issuers = PolicyIssuer::from_settings(&cfg.issuers);
        let policies = PolicySet::load_dir(&cfg.policy_dir, &issuers)?;
        policies.check_token_policies(cfg.vault.token_role.as_ref())?;
        let audit = AuditLog::open_as(
            &cfg.audit_path,
            cfg.audit_settings.clone(),
            Some(&cfg.replica_id),
        )?;
        let fingerprints = Fingerprinter::load_or_create(&cfg.audit_fingerprint_key)?;
        let verifier = Verifier::new(
            cfg.issuers.clone(),
            cfg.audiences.clone(),
            cfg.fetch.clone(),
            cfg.max_token_bytes,
        )?;
        for (issuer, err) in verifier.warm_up().await {
            tracing::warn!(%issuer, error = %err, "could not fetch the issuer's keys at start-up; will retry on first use");
        }
        let vault = Vault::connect(cfg.vault.clone()).await?;
        // One connection to Redis, shared by the exchange store, the rate
        // limits and the spent-token cache.
        let redis = match &cfg.state {
            Some(st) => Some(
                crate::redis_conn::connect(&st.redis_url, st.timeout)
                    .await
                    .map_err(|reason| {
                        ServeError::Store(ExchangeStoreError::Unavailable { reason })
                    })?,
            ),
            None => None,
        };
        let exchanges = match (&cfg.state, &redis) {
            (Some(st), Some(conn)) => {
                ExchangeStore::Redis(RedisStore::new(conn.clone(), &st.key_prefix))
            }
            _ => {
                tracing::warn!(
                    "no [state] section: exchange records are kept in memory; run a single replica"
                );
                ExchangeStore::Memory(MemoryStore::default())
            }
        };
        let policy_status = reload::PolicyStatus::current();
        crate::metrics::policy_loaded(policy_status.loaded_at);
        let single_use: std::collections::BTreeMap<String, std::time::Duration> = cfg
            .issuers
            .iter()
            .filter(|i| cfg.limits.single_use.contains(&i.name))
            .map(|i| (i.name.clone(), i.leeway))
            .collect();
        let (limits, replay) = match (&cfg.state, redis) {
            (Some(st), Some(conn)) => {
                let redis = RedisLimits::new(conn, &st.key_prefix);
                (
                    Limiter::redis(cfg.limits.clone(), redis.clone()),
                    ReplayCache::redis(single_use, redis),
                )
            }
            _ => (
                Limiter::memory(cfg.limits.clone()),
                ReplayCache::memory(single_use, cfg.limits.max_entries),
            ),
        };
        tracing::info!(
            environments = policies.environments().count(),
            issuers = issuers.len(),
            audit = %cfg.audit_path.display(),
            "jobkey is ready"
        );
        Ok(Arc::new(AppState {
            verifier,
            policies: ArcSwap::from_pointee(policies),
            policy_dir: cfg.policy_dir.clone(),
            policy_issuers: issuers,
            policy_status: ArcSwap::from_pointee(policy_status),
            vault,
            audit,
            fingerprints,
            masks: MaskCache::new(cfg.masks).map_err(|_| ServeError::Random)?,
            exchanges,
            limits,
            replay,
            max_body_bytes: cfg.max_body_bytes,
            max_token_bytes: cfg.max_token_bytes,
            server: cfg.server,
            in_flight: tokio::sync::Semaphore::new(cfg.server.max_in_flight),
            store_ready: std::sync::atomic::AtomicBool::new(true),
        }))
    }
}

/// The routes; `/metrics` too unless `metrics_elsewhere` (it is then
/// served on the `[metrics] listen` address only).
pub(crate) fn router(state: Arc<AppState>, metrics_elsewhere: bool) -> Router {
    let limit = state.max_body_bytes;
    let mut routes = Router::new()
        .route("/v1/exchange", post(exchange::exchange))
        .route("/v1/revoke", post(revoke::revoke))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if !metrics_elsewhere {
        routes = routes.route("/metrics", get(metrics));
    }
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

async fn no_store(resp: axum::response::Response) -> axum::response::Response {
    secure_headers(resp)
}

/// Every response: `Cache-Control: no-store` (credentials must not be cached
/// by any proxy), and no MIME sniffing.
fn secure_headers(mut resp: axum::response::Response) -> axum::response::Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// `GET /metrics`: every series, in the OpenMetrics text format
/// (`src/metrics.rs`).
async fn metrics() -> axum::response::Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(),
    )
        .into_response()
}

/// The `[metrics] listen` listener's routes: `/metrics` only.
fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::map_response(no_store))
}

async fn not_found() -> axum::response::Response {
    ApiError::NotFound.into_response_with(&request::request_id())
}

async fn method_not_allowed() -> axum::response::Response {
    ApiError::MethodNotAllowed.into_response_with(&request::request_id())
}

/// Status only: what is ready, never why not (the reasons, which may name
/// internal things, are in jobkey's log and `jobkey check`).
async fn readyz(State(st): State<Arc<AppState>>) -> axum::response::Response {
    let vault = st.vault.readiness();
    let vault_ready = vault.ready;
    let audit_writable = st.audit.is_writable();
    let store_ready = st.store_ready.load(std::sync::atomic::Ordering::Relaxed);
    let ready = vault_ready && audit_writable && store_ready;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = (
        status,
        axum::Json(json!({
            "status": if ready { "ready" } else { "not_ready" },
            "vault": if vault_ready { "ready" } else { "not_ready" },
            // Why not ready, in a few fixed words (never a policy's or an
            // error's text): Vault's reason first, then the audit log's,
            // then the exchange store's.
            "reason": vault
                .reason
                .or((!audit_writable).then_some("the audit log is unwritable"))
                .or((!store_ready).then_some("the exchange store does not answer")),
            "audit": if audit_writable { "ready" } else { "unwritable" },
            "store": if store_ready { "ready" } else { "not_ready" },
            "environments": st.policies.load().environments().count(),
            "policies": st.policy_status.load().to_json(),
        })),
    )
        .into_response();
    if !ready {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

/// Serves `state` on `listener` until `shutdown` completes, with the
/// listener's timeouts and limits (`src/server/listener.rs`); then waits
/// for the requests in progress and writes the audit log's open summaries.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, state, Extras::default(), shutdown).await
}

/// [`serve`], with TLS and a separate metrics listener when `extras` has
/// them.
pub(crate) async fn serve_with(
    listener: TcpListener,
    state: Arc<AppState>,
    extras: Extras,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    tracing::info!(addr = %listener.local_addr()?, tls = extras.tls.is_some(), "listening");
    // Policies reload on SIGHUP and file change while serving; so do the
    // TLS certificate and key.
    let _reloader = reload::spawn(state.clone());
    let _cert_reloader = extras
        .tls
        .as_ref()
        .map(|t| tls::spawn_reloader(t.store.clone()));
    let _ticker = AuditTicker::spawn(state.audit.clone());
    let _mask_purger = spawn_mask_purger(state.clone());
    let _pinger = spawn_store_pinger(state.clone());
    let metrics_elsewhere = extras.metrics.is_some();
    let _metrics = extras.metrics.map(|l| {
        tracing::info!(addr = ?l.local_addr().ok(), "serving /metrics");
        AbortOnDrop(tokio::spawn(async move {
            if let Err(error) = axum::serve(l, metrics_router()).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        }))
    });
    let limits = listener::Limits {
        settings: state.server,
        max_body_bytes: state.max_body_bytes,
        // The token, and room for the other headers.
        max_header_bytes: state.max_token_bytes.saturating_add(16 * 1024),
    };
    let app = router(state.clone(), metrics_elsewhere);
    let acceptor = extras.tls.map(|t| t.acceptor);
    listener::run(listener, app, limits, acceptor, shutdown).await?;
    if let Err(error) = state.audit.flush().await {
        tracing::error!(%error, "could not write the audit log's last summaries");
    }
    Ok(())
}

/// What [`serve`] serves besides the routes.
#[derive(Default)]
pub(crate) struct Extras {
    /// TLS on the listener (`[tls]`).
    pub tls: Option<tls::Tls>,
    /// `/metrics` on this listener instead of the main one
    /// (`[metrics] listen`).
    pub metrics: Option<TcpListener>,
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often the exchange store is pinged for `/readyz`.
const STORE_PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Pings the exchange store every [`STORE_PING_INTERVAL`] and records the
/// answer in [`AppState::store_ready`], so `/readyz` costs no I/O. A
/// failure is logged once, when the store stops answering.
fn spawn_store_pinger(state: Arc<AppState>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(STORE_PING_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let ok = state.exchanges.ping().await;
            let was = state
                .store_ready
                .swap(ok.is_ok(), std::sync::atomic::Ordering::Relaxed);
            match ok {
                Err(error) if was => {
                    tracing::warn!(%error, "the exchange store does not answer; not ready");
                }
                Ok(()) if !was => tracing::info!("the exchange store answers again"),
                _ => {}
            }
        }
    }))
}

/// Drops expired mask hints every second, so that derived secret strings
/// live no longer than `[masks] cache_ttl` (and a second) with no traffic.
fn spawn_mask_purger(state: Arc<AppState>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            state.masks.purge();
        }
    }))
}

/// Runs [`AuditLog::tick`] every `sync_interval` until dropped: refusal
/// lines reach the disk, ended windows are summarized, and after a failed
/// write appends are retried.
struct AuditTicker(tokio::task::JoinHandle<()>);

impl AuditTicker {
    fn spawn(audit: AuditLog) -> AuditTicker {
        AuditTicker(tokio::spawn(async move {
            let mut every = tokio::time::interval(audit.sync_interval());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let _ = audit.tick().await;
            }
        }))
    }
}

impl Drop for AuditTicker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `jobkey serve`: load, bind, serve until Ctrl-C or SIGTERM.
pub(crate) async fn run(cfg: Config) -> Result<(), ServeError> {
    if cfg.tls.is_none() && !cfg.listen.ip().is_loopback() {
        tracing::warn!(
            listen = %cfg.listen,
            "jobkey speaks plain HTTP: configure [tls] or put TLS in front of it (a load balancer or a sidecar); ID tokens and credentials cross this socket"
        );
    }
    // The certificate is checked before anything else starts.
    let tls = cfg.tls.as_ref().map(tls::Tls::new).transpose()?;
    let state = AppState::build(&cfg).await?;
    let listener = TcpListener::bind(cfg.listen).await?;
    let metrics = match cfg.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    serve_with(listener, state, Extras { tls, metrics }, shutdown_signal()).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
