//! Hot reload of the policy directory, on SIGHUP and on file change.
//!
//! The new set is loaded and compiled completely before anything changes;
//! only a set that compiles is swapped into [`AppState::policies`] (one
//! atomic pointer store: a request sees the old set or the new one, never a
//! mix). An invalid set is refused: the old set keeps serving, the error is
//! logged, and `/readyz` shows `"policies": {"status": "stale",
//! "refused_at": "..."}` until a later reload succeeds. `/readyz` never
//! shows the error itself: anyone can ask, and a policy's text may name
//! internal things (`jobkey check` and the log say what is wrong). Readiness stays 200
//! while stale: the broker is serving a policy that was valid, and taking
//! every replica out of rotation because of a typo would be an outage.
//!
//! File events are debounced ([`DEBOUNCE`]) so an editor's
//! write-rename-chmod sequence causes one reload. The directory is watched
//! non-recursively (`policies/tests/` fixtures do not trigger reloads).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::AppState;
use crate::policy::PolicySet;

/// Quiet time after the last file event before reloading.
pub(crate) const DEBOUNCE: Duration = Duration::from_millis(250);

/// The state of the serving policy set, for `/readyz`.
#[derive(Debug, Clone)]
pub struct PolicyStatus {
    /// When the serving set was loaded.
    pub loaded_at: SystemTime,
    /// When the last reload attempt was refused, if it was (the set that
    /// serves is then older than the files on disk). The error itself is
    /// only logged.
    pub refused_at: Option<SystemTime>,
}

impl PolicyStatus {
    pub fn current() -> PolicyStatus {
        PolicyStatus {
            loaded_at: SystemTime::now(),
            refused_at: None,
        }
    }

    /// The `/readyz` JSON: status and times only.
    pub fn to_json(&self) -> serde_json::Value {
        let time = |t| humantime::format_rfc3339_seconds(t).to_string();
        let loaded_at = time(self.loaded_at);
        match self.refused_at {
            None => serde_json::json!({"status": "current", "loaded_at": loaded_at}),
            Some(refused) => serde_json::json!({
                "status": "stale",
                "loaded_at": loaded_at,
                "refused_at": time(refused),
            }),
        }
    }
}

/// Reloads now; `trigger` is logged (`"SIGHUP"`, `"file change"`).
/// Returns the number of environments, or the error (also recorded).
pub(crate) async fn reload(state: &AppState, trigger: &str) -> Result<usize, String> {
    let dir = state.policy_dir.clone();
    let issuers = state.policy_issuers.clone();
    let role = state.vault.token_role().cloned();
    let loaded = tokio::task::spawn_blocking(move || {
        let set = PolicySet::load_dir(&dir, &issuers)?;
        set.check_token_policies(role.as_ref()).map(|()| set)
    })
    .await
    .map_err(|e| format!("the reload task failed: {e}"))
    .and_then(|r| r.map_err(|e| e.to_string()));
    match loaded {
        Ok(set) => {
            let n = set.environments().count();
            state.policies.store(Arc::new(set));
            let status = PolicyStatus::current();
            crate::metrics::policy_reload(true, status.loaded_at);
            state.policy_status.store(Arc::new(status));
            tracing::info!(trigger, environments = n, "reloaded policies");
            Ok(n)
        }
        Err(error) => {
            crate::metrics::policy_reload(false, SystemTime::now());
            tracing::error!(trigger, %error, "policy reload refused; the previous policies keep serving");
            let loaded_at = state.policy_status.load().loaded_at;
            state.policy_status.store(Arc::new(PolicyStatus {
                loaded_at,
                refused_at: Some(SystemTime::now()),
            }));
            Err(error)
        }
    }
}

/// Watches the policy directory and SIGHUP until dropped.
pub(crate) struct Reloader {
    _watcher: Option<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reloader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Trigger {
    File,
    #[allow(dead_code)] // SIGHUP arrives through `next_hangup`
    Hangup,
}

#[cfg(unix)]
pub(super) type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
pub(super) type Hangup = Option<()>;

#[cfg(unix)]
pub(super) fn hangup_signal() -> Hangup {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP");
            None
        }
    }
}

#[cfg(not(unix))]
pub(super) fn hangup_signal() -> Hangup {
    None
}

/// Completes on the next SIGHUP; never when there is no handler.
pub(super) async fn next_hangup(hup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(s) = hup
        && s.recv().await.is_some()
    {
        return;
    }
    let _ = hup;
    std::future::pending::<()>().await
}

/// Starts watching. A watcher that cannot start (inotify limits) is
/// logged; SIGHUP still works.
pub(crate) fn spawn(state: Arc<AppState>) -> Reloader {
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    let file_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && !event.kind.is_access()
        {
            let _ = file_tx.send(Trigger::File);
        }
    })
    .and_then(|mut w| {
        w.watch(&state.policy_dir, RecursiveMode::NonRecursive)?;
        Ok(w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(error) => {
            tracing::warn!(dir = %state.policy_dir.display(), %error, "cannot watch the policy directory; reload with SIGHUP");
            None
        }
    };
    drop(tx);
    let task = tokio::spawn(async move {
        let mut hup = hangup_signal();
        loop {
            let mut hangup = tokio::select! {
                t = rx.recv() => match t {
                    Some(t) => matches!(t, Trigger::Hangup),
                    None => return,
                },
                _ = next_hangup(&mut hup) => true,
            };
            // Debounce: wait until the directory has been quiet for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(t)) => hangup |= matches!(t, Trigger::Hangup),
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let trigger = if hangup { "SIGHUP" } else { "file change" };
            let _ = reload(&state, trigger).await;
        }
    });
    Reloader {
        _watcher: watcher,
        task,
    }
}
