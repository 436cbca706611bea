//! The revocation state `jobkey fetch` leaves for `jobkey revoke` when it
//! does not run the command itself: every exchange of the job, in one 0600
//! file. Each `jobkey fetch` adds its exchange (under an exclusive lock on
//! the file's directory, so two at once do not lose one); `jobkey revoke`
//! revokes them all and removes the file.
//!
//! The file (format 2):
//!
//! ```json
//! {"version": 2,
//!  "created": ["<directories made for this file>"],
//!  "exchanges": [{"url": "<broker>", "request_id": "<id>", "handle": "<revocation handle>",
//!                 "files": {"dir": "<credentials directory>",
//!                           "created": ["<directories fetch made>"],
//!                           "credentials": [{"name": "deploy-db", "created": true,
//!                                            "files": ["password", "username"]}]}}]}
//! ```
//!
//! `files` is null when the exchange wrote no file (`--github-env` only).
//! `handle` is absent when the broker issued none (the exchange issued
//! nothing revocable, say KV reads only): `jobkey revoke` then only removes
//! its files. The handle is a secret; the rest are names. A file of the earlier form
//! (one exchange: `url`, `request_id`, `handle`) is read too.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::ClientError;
use super::broker::Secret;
use super::deliver::Delivered;
use super::private_dir::{Existing, PrivateDir};
use crate::secret::SecretString;

/// The file name used inside `--out DIR` when no other place is known.
pub(super) const FILE_IN_OUT_DIR: &str = ".jobkey-revocation.json";

/// The format written.
const VERSION: u32 = 2;

/// The largest state file read.
const MAX_BYTES: u64 = 1024 * 1024;

/// The state file, as read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct State {
    pub version: u32,
    /// Directories made for the state file itself, outermost first.
    #[serde(default)]
    pub created: Vec<PathBuf>,
    pub exchanges: Vec<SavedExchange>,
}

impl State {
    /// Every directory `jobkey fetch` made: for the state file and for
    /// each exchange's files.
    pub(super) fn created_dirs(&self) -> Vec<PathBuf> {
        self.created
            .iter()
            .chain(
                self.exchanges
                    .iter()
                    .flat_map(|e| e.files.iter().flat_map(|f| &f.created)),
            )
            .cloned()
            .collect()
    }
}

/// One exchange, as read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SavedExchange {
    pub url: String,
    pub request_id: String,
    /// `None`: the exchange issued nothing revocable.
    #[serde(default)]
    pub handle: Option<Secret>,
    /// What the exchange's `fetch` wrote to disk.
    #[serde(default)]
    pub files: Option<Delivered>,
}

/// The earlier form: one exchange, no version.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SingleExchange {
    url: String,
    request_id: String,
    handle: Secret,
}

/// The state file, as written: the same fields, the handles borrowed only
/// for the write (into a buffer wiped afterwards).
#[derive(Serialize)]
struct StateRecord<'a> {
    version: u32,
    created: &'a [PathBuf],
    exchanges: Vec<ExchangeRecord<'a>>,
}

#[derive(Serialize)]
struct ExchangeRecord<'a> {
    url: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
    files: Option<&'a Delivered>,
}

impl<'a> ExchangeRecord<'a> {
    fn of(e: &'a SavedExchange) -> Self {
        ExchangeRecord {
            url: &e.url,
            request_id: &e.request_id,
            handle: e.handle.as_ref().map(|h| h.0.expose_secret()),
            files: e.files.as_ref(),
        }
    }
}

/// The exchange a `jobkey fetch` adds.
pub(super) struct NewExchange<'a> {
    pub url: &'a str,
    pub request_id: &'a str,
    /// `None` when the broker issued no revocation handle.
    pub handle: Option<&'a SecretString>,
    pub files: Option<&'a Delivered>,
}

/// Where the state goes: `--state`, else `$RUNNER_TEMP/jobkey/revocation.json`
/// (GitHub), else inside the credentials directory.
pub(super) fn default_path(
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

/// The file's directory and name.
fn split(path: &Path) -> Result<(&Path, &OsStr), ClientError> {
    let name = path
        .file_name()
        .ok_or_else(|| ClientError::State(format!("{}: not a file name", path.display())))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

fn name_str<'p>(path: &'p Path, name: &'p OsStr) -> Result<&'p str, ClientError> {
    name.to_str().ok_or_else(|| {
        ClientError::State(format!("{}: the file name is not UTF-8", path.display()))
    })
}

/// Adds an exchange to the state at `path` (creating the file 0600, and its
/// directory 0700 if missing); returns how many exchanges it now holds.
pub(super) fn append(path: &Path, new: NewExchange<'_>) -> Result<usize, ClientError> {
    let (dir, name) = split(path)?;
    let name = name_str(path, name)?;
    let opened = PrivateDir::open(dir, Existing::Accepted).map_err(ClientError::StateFiles)?;
    opened.dir.lock().map_err(ClientError::StateFiles)?;
    // An existing file that is not a state file is not overwritten: it may
    // be another exchange's state that this version cannot read.
    let existing = read(&opened.dir, name, path)?;
    let (created, saved) = match existing {
        Some(s) => (s.created, s.exchanges),
        None => (opened.created, Vec::new()),
    };
    let mut exchanges: Vec<ExchangeRecord<'_>> = saved.iter().map(ExchangeRecord::of).collect();
    exchanges.push(ExchangeRecord {
        url: new.url,
        request_id: new.request_id,
        handle: new.handle.map(SecretString::expose_secret),
        files: new.files,
    });
    let n = exchanges.len();
    write(
        &opened.dir,
        name,
        path,
        &StateRecord {
            version: VERSION,
            created: &created,
            exchanges,
        },
    )?;
    Ok(n)
}

fn write(
    dir: &PrivateDir,
    name: &str,
    path: &Path,
    record: &StateRecord<'_>,
) -> Result<(), ClientError> {
    let mut body = Zeroizing::new(Vec::with_capacity(16 * 1024));
    serde_json::to_writer(&mut *body, record)
        .map_err(|e| ClientError::State(format!("{}: cannot be written: {e}", path.display())))?;
    dir.write_file(name, &body).map_err(ClientError::StateFiles)
}

/// Reads and parses the state file `name` in `dir`, if there is one.
fn read(dir: &PrivateDir, name: &str, path: &Path) -> Result<Option<State>, ClientError> {
    let Some(bytes) = dir
        .read_private_file(name, MAX_BYTES)
        .map_err(ClientError::StateFiles)?
    else {
        return Ok(None);
    };
    let body = Zeroizing::new(bytes);
    parse(&body, path).map(Some)
}

fn parse(body: &[u8], path: &Path) -> Result<State, ClientError> {
    let state = match serde_json::from_slice::<State>(body) {
        Ok(s) => s,
        Err(e) => match serde_json::from_slice::<SingleExchange>(body) {
            Ok(one) => State {
                version: VERSION,
                created: Vec::new(),
                exchanges: vec![SavedExchange {
                    url: one.url,
                    request_id: one.request_id,
                    handle: Some(one.handle),
                    files: None,
                }],
            },
            Err(_) => {
                return Err(ClientError::State(format!(
                    "{}: not a jobkey revocation state file (line {}, column {}); it is left as it is",
                    path.display(),
                    e.line(),
                    e.column()
                )));
            }
        },
    };
    if state.version != VERSION {
        return Err(ClientError::State(format!(
            "{}: a state file of format {} (this jobkey reads format {VERSION}); use the jobkey that wrote it",
            path.display(),
            state.version
        )));
    }
    Ok(state)
}

/// A state file read by `jobkey revoke`, locked until [`Loaded::finish`].
#[derive(Debug)]
pub(super) struct Loaded {
    dir: PrivateDir,
    name: String,
    path: PathBuf,
    pub state: State,
}

/// Reads the state written by `append`, and keeps its directory locked.
pub(super) fn load(path: &Path) -> Result<Loaded, ClientError> {
    let missing = || {
        ClientError::State(format!(
            "{}: no such file (was `jobkey fetch` run in this job, with the same --state?)",
            path.display()
        ))
    };
    let (dir, name) = split(path)?;
    let name = name_str(path, name)?;
    let dir = PrivateDir::open_existing(dir, Existing::Accepted)
        .map_err(ClientError::StateFiles)?
        .ok_or_else(missing)?;
    dir.lock().map_err(ClientError::StateFiles)?;
    let state = read(&dir, name, path)?.ok_or_else(missing)?;
    Ok(Loaded {
        dir,
        name: name.to_owned(),
        path: path.to_owned(),
        state,
    })
}

impl Loaded {
    /// Ends `jobkey revoke`: removes the file when `keep` is empty, else
    /// rewrites it with the exchanges of `keep` (indexes into
    /// `state.exchanges`), for another try.
    pub(super) fn finish(self, keep: &[usize]) -> Result<(), ClientError> {
        if keep.is_empty() {
            return self
                .dir
                .remove_file(&self.name)
                .map(|_| ())
                .map_err(ClientError::StateFiles);
        }
        let exchanges = keep
            .iter()
            .filter_map(|i| self.state.exchanges.get(*i))
            .map(ExchangeRecord::of)
            .collect();
        write(
            &self.dir,
            &self.name,
            &self.path,
            &StateRecord {
                version: VERSION,
                created: &self.state.created,
                exchanges,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::client::deliver::DeliveredCredential;

    fn new<'a>(
        rid: &'a str,
        handle: Option<&'a SecretString>,
        files: Option<&'a Delivered>,
    ) -> NewExchange<'a> {
        NewExchange {
            url: "http://127.0.0.1:1",
            request_id: rid,
            handle,
            files,
        }
    }

    #[test]
    fn state_round_trips_in_a_private_file() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let p = base.join("jobkey/revocation.json");
        let files = Delivered {
            dir: base.join("creds"),
            created: vec![base.join("creds")],
            credentials: vec![DeliveredCredential {
                name: "db".into(),
                created: true,
                files: vec!["password".into()],
            }],
        };
        let h = SecretString::new("handle-x".into());
        assert_eq!(append(&p, new("rid", Some(&h), Some(&files))).unwrap(), 1);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(p.parent().unwrap()), 0o700);
        let l = load(&p).unwrap();
        assert_eq!(l.state.created, [base.join("jobkey")]);
        let [s] = &l.state.exchanges[..] else {
            panic!("one exchange")
        };
        assert_eq!(s.request_id, "rid");
        assert_eq!(s.handle.as_ref().unwrap().0.expose_secret(), "handle-x");
        assert_eq!(s.files.as_ref(), Some(&files));
        assert!(!format!("{s:?}").contains("handle-x"));
    }

    #[test]
    fn every_exchange_of_the_job_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("revocation.json");
        let (h1, h2) = (
            SecretString::new("handle-1".into()),
            SecretString::new("handle-2".into()),
        );
        assert_eq!(append(&p, new("first", Some(&h1), None)).unwrap(), 1);
        assert_eq!(append(&p, new("second", Some(&h2), None)).unwrap(), 2);
        // An exchange that issued nothing revocable has no handle: it is
        // kept for its files, and written without one.
        assert_eq!(append(&p, new("kv-only", None, None)).unwrap(), 3);
        assert!(
            !std::fs::read_to_string(&p)
                .unwrap()
                .contains(r#""handle":null"#)
        );
        let l = load(&p).unwrap();
        let ids: Vec<(&str, Option<&str>)> = l
            .state
            .exchanges
            .iter()
            .map(|e| {
                (
                    e.request_id.as_str(),
                    e.handle.as_ref().map(|h| h.0.expose_secret()),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("first", Some("handle-1")),
                ("second", Some("handle-2")),
                ("kv-only", None)
            ]
        );

        // Finishing with one kept rewrites the file with that one; with
        // none, removes it.
        l.finish(&[1]).unwrap();
        let l = load(&p).unwrap();
        assert_eq!(l.state.exchanges.len(), 1);
        assert_eq!(l.state.exchanges[0].request_id, "second");
        l.finish(&[]).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn unreadable_or_foreign_state_files_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let h = SecretString::new("handle-x".into());
        let p = tmp.path().join("state.json");
        // (contents, mode, accepted, what the error says)
        let cases = [
            (
                r#"{"url":"http://127.0.0.1:1","request_id":"old","handle":"h"}"#,
                0o600,
                true,
                "",
            ),
            (
                "not json",
                0o600,
                false,
                "not a jobkey revocation state file",
            ),
            (r#"{"version":3,"exchanges":[]}"#, 0o600, false, "format 3"),
            (
                r#"{"version":2,"exchanges":[]}"#,
                0o644,
                false,
                "open to other users",
            ),
        ];
        for (body, m, ok, says) in cases {
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
            match (load(&p), ok) {
                (Ok(l), true) => assert_eq!(l.state.exchanges[0].request_id, "old"),
                (Err(e), false) => assert!(e.to_string().contains(says), "{body}: {e}"),
                (r, _) => panic!("{body}: {:?}", r.err()),
            }
            // Appending to it keeps the earlier exchange, or refuses.
            match append(&p, new("next", Some(&h), None)) {
                Ok(n) => assert!(ok && n == 2, "{body}"),
                Err(e) => {
                    assert!(!ok, "{body}: {e}");
                    assert_eq!(std::fs::read_to_string(&p).unwrap(), body, "left alone");
                }
            }
        }
        // A symlink at the state's name is not read.
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("elsewhere"), &p).unwrap();
        assert!(load(&p).unwrap_err().to_string().contains("symlink"));
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
