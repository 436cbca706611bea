//! The revocation state `jobkey fetch` leaves for `jobkey revoke` when it
//! does not run the command itself: the broker URL, the exchange's
//! request id and its revocation handle (a secret), in a 0600 file. It holds
//! what `jobkey revoke` needs and nothing else.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ClientError;
use super::broker::Secret;
use super::deliver;
use crate::secret::SecretString;

/// The file name used inside `--out DIR` when no other place is known.
pub const FILE_IN_OUT_DIR: &str = ".jobkey-revocation.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub url: String,
    pub request_id: String,
    pub handle: Secret,
}

/// Where the state goes: `--state`, else `$RUNNER_TEMP/jobkey/revocation.json`
/// (GitHub), else inside the credentials directory.
pub fn default_path(
    state: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    out: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(s) = state {
        return Some(s.to_owned());
    }
    if let Some(t) = env("RUNNER_TEMP").filter(|t| !t.is_empty()) {
        return Some(Path::new(&t).join("jobkey/revocation.json"));
    }
    out.map(|o| o.join(FILE_IN_OUT_DIR))
}

/// Writes the state (0600; its directory is created 0700 if missing).
pub fn save(
    path: &Path,
    url: &str,
    request_id: &str,
    handle: &SecretString,
) -> Result<(), ClientError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        deliver::private_dir(parent).map_err(|e| ClientError::State(e.to_string()))?;
    }
    let body = SecretString::new(
        serde_json::json!({
            "url": url,
            "request_id": request_id,
            "handle": handle.expose_secret(),
        })
        .to_string(),
    );
    deliver::private_file(path, body.expose_secret().as_bytes())
        .map_err(|e| ClientError::State(e.to_string()))
}

/// Reads the state written by `save`.
pub fn load(path: &Path) -> Result<State, ClientError> {
    let body = SecretString::new(std::fs::read_to_string(path).map_err(|e| {
        ClientError::State(format!(
            "{}: {e} (was `jobkey fetch` run in this job, with the same --state?)",
            path.display()
        ))
    })?);
    serde_json::from_str(body.expose_secret()).map_err(|e| {
        ClientError::State(format!(
            "{}: not a jobkey revocation state file (line {}, column {})",
            path.display(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn state_round_trips_in_a_private_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("jobkey/revocation.json");
        save(
            &p,
            "http://127.0.0.1:1",
            "rid",
            &SecretString::new("handle-x".into()),
        )
        .unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(p.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let s = load(&p).unwrap();
        assert_eq!(s.request_id, "rid");
        assert_eq!(s.handle.0.expose_secret(), "handle-x");
        assert!(!format!("{s:?}").contains("handle-x"));
    }

    #[test]
    fn default_paths() {
        let gh = |k: &str| (k == "RUNNER_TEMP").then(|| "/rt".to_owned());
        let none = |_: &str| None;
        type Case<'a> = (
            Option<&'a Path>,
            &'a dyn Fn(&str) -> Option<String>,
            Option<&'a Path>,
            Option<&'a str>,
        );
        let cases: [Case; 4] = [
            (Some(Path::new("/s.json")), &gh, None, Some("/s.json")),
            (
                None,
                &gh,
                Some(Path::new("/out")),
                Some("/rt/jobkey/revocation.json"),
            ),
            (
                None,
                &none,
                Some(Path::new("/out")),
                Some("/out/.jobkey-revocation.json"),
            ),
            (None, &none, None, None),
        ];
        for (state, env, out, want) in cases {
            assert_eq!(
                default_path(state, env, out).as_deref(),
                want.map(Path::new)
            );
        }
    }
}
