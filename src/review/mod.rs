//! `jobkey review`: a read-only web page for auditors, served by jobkey
//! itself (server-rendered HTML, an inline SVG chart, no script).
//!
//! `GET /` reads the audit log (and its rotated files) and the policies
//! afresh and shows: exchanges and denials over time, the top identities
//! per environment, the credentials issued and by which rules, the denial
//! reasons and recent denials, who can have what per environment (the
//! policy tools' who-can), and the chain's status over the log and its
//! rotated files (`verify_log`).
//! `POST /lookup` takes a leaked value (a form field) and lists the
//! exchanges that issued it, by keyed fingerprint: the value is held as a
//! `SecretString`, never logged, never echoed back.
//!
//! Architecture invariant: the page holds no secret. The log holds none,
//! the policies name secrets' paths only, and the looked-up value is not
//! written into the answer.
//!
//! It listens on loopback unless told otherwise (`--allow-remote`): it has
//! no login of its own. Every answer carries `Cache-Control: no-store`
//! and a Content-Security-Policy that allows no script.

mod page;
mod stats;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

pub(crate) use stats::gather;

use crate::audit::query::LogSet;
use crate::policy::tools::who_can;
use crate::policy::{PolicyIssuer, PolicySet};
use crate::secret::SecretString;

/// The largest lookup form accepted, in bytes.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What the page reads, from the server config.
#[derive(Debug, Clone)]
pub(crate) struct ReviewSources {
    pub audit_path: PathBuf,
    pub fingerprint_key: PathBuf,
    pub policy_dir: PathBuf,
    pub issuers: Vec<PolicyIssuer>,
}

impl ReviewSources {
    pub(crate) fn from_config(path: &Path) -> Result<ReviewSources, String> {
        let cfg = crate::config::Config::load(path).map_err(|e| e.to_string())?;
        Ok(ReviewSources {
            audit_path: cfg.audit_path.clone(),
            fingerprint_key: cfg.audit_fingerprint_key.clone(),
            policy_dir: cfg.policy_dir.clone(),
            issuers: PolicyIssuer::from_settings(&cfg.issuers),
        })
    }
}

/// The page's routes.
pub(crate) fn router(sources: ReviewSources) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/lookup", post(lookup))
        .fallback(|| async { respond(StatusCode::NOT_FOUND, "<!doctype html><title>not found</title><p>Not found. The review page is at <a href=\"/\">/</a>.</p>".into()) })
        .with_state(Arc::new(sources))
}

/// `jobkey review`: serves the page until Ctrl-C.
pub(crate) async fn run(
    config: &Path,
    listen: SocketAddr,
    allow_remote: bool,
) -> Result<(), String> {
    if !listen.ip().is_loopback() && !allow_remote {
        return Err(format!(
            "{listen}: the review page shows who received which credential and has no login; it listens on loopback only (e.g. 127.0.0.1:8404) unless --allow-remote is given (then put an authenticating proxy in front)"
        ));
    }
    let sources = ReviewSources::from_config(config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("{listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("review page at http://{addr}/");
    axum::serve(listener, router(sources))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}

fn respond(status: StatusCode, html: String) -> Response {
    let mut r = (status, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn index(State(s): State<Arc<ReviewSources>>) -> Response {
    let html = tokio::task::spawn_blocking(move || build(&s, None))
        .await
        .unwrap_or_else(|_| "<!doctype html><p>The page could not be built.</p>".into());
    respond(StatusCode::OK, html)
}

async fn lookup(State(s): State<Arc<ReviewSources>>, body: Bytes) -> Response {
    if body.len() > MAX_FORM_BYTES {
        return respond(
            StatusCode::PAYLOAD_TOO_LARGE,
            "<!doctype html><p>The value is too long.</p>".into(),
        );
    }
    // The form's one field, decoded straight into a secret.
    let value = url::form_urlencoded::parse(&body)
        .find(|(k, _)| k == "value")
        .map(|(_, v)| SecretString::new(v.into_owned()));
    drop(body);
    let html = tokio::task::spawn_blocking(move || {
        let result = match &value {
            Some(v) if !v.expose_secret().trim().is_empty() => find(&s, v),
            _ => Err("Paste the value to look up.".to_owned()),
        };
        build(&s, Some(result))
    })
    .await
    .unwrap_or_else(|_| "<!doctype html><p>The page could not be built.</p>".into());
    respond(StatusCode::OK, html)
}

fn find(s: &ReviewSources, value: &SecretString) -> Result<Vec<crate::audit::Match>, String> {
    let fp = crate::audit::Fingerprinter::load(&s.fingerprint_key).map_err(|e| e.to_string())?;
    let set = LogSet::rotated(&s.audit_path).map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    for f in set.files() {
        let found =
            crate::audit::find_value(f, &fp, value.expose_secret()).map_err(|e| e.to_string())?;
        all.extend(found.matches);
    }
    all.sort_by(|a, b| a.time.cmp(&b.time));
    Ok(all)
}

fn build(s: &ReviewSources, lookup: Option<Result<Vec<crate::audit::Match>, String>>) -> String {
    let set = LogSet::rotated(&s.audit_path);
    let logs: Vec<String> = match &set {
        Ok(set) => set
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect(),
        Err(_) => vec![s.audit_path.display().to_string()],
    };
    let stats = set
        .map_err(|e| e.to_string())
        .and_then(|set| gather(&set).map_err(|e| e.to_string()));
    let chain = crate::audit::verify_log(&s.audit_path).map_err(|e| e.to_string());
    let who = PolicySet::load_dir(&s.policy_dir, &s.issuers)
        .map_err(|e| e.to_string())
        .and_then(|set| {
            set.environments()
                .map(|env| who_can::who_can(&set, env, None).map(|review| (env.to_owned(), review)))
                .collect::<Result<Vec<_>, String>>()
        });
    page::render(&page::Page {
        logs: &logs,
        stats: stats.as_ref().map_err(Clone::clone),
        chain: chain.as_ref().map_err(Clone::clone),
        who_can: who,
        lookup,
    })
}
