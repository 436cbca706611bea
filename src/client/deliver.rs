//! Delivering credentials without printing them: files (mode 0600 in a
//! directory of mode 0700), environment variables for `--exec`, and
//! GitHub's `$GITHUB_ENV` / `$GITHUB_OUTPUT` files.
//!
//! File layout (shared contract): `DIR/<credential>/<field>`, except that
//! certificate fields are `tls.crt` (certificate), `tls.key` (private_key)
//! and `ca.crt` (ca_chain), and a kubeconfig is `kubeconfig`.
//!
//! Environment names: `JOBKEY_<CREDENTIAL>_<FIELD>`, upper snake case
//! (`deploy-db` / `password` → `JOBKEY_DEPLOY_DB_PASSWORD`), plus
//! `KUBECONFIG` when a kubeconfig file is written. Two fields that map to
//! the same name are refused.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClientError;
use super::broker::ExchangeResponse;
use super::private_dir::{self, Existing, FsError, PrivateDir, Removal};
use crate::secret::SecretString;

/// One field of one credential, secret or not.
pub(super) struct Field<'a> {
    pub credential: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub value: &'a str,
}

/// Every field of the response, secret values and non-secret info alike,
/// after checking that every name is usable as a path component.
pub(super) fn fields(resp: &ExchangeResponse) -> Result<Vec<Field<'_>>, ClientError> {
    let mut out = Vec::new();
    for (cred, c) in &resp.credentials {
        check_name("credential", cred)?;
        for (name, v) in &c.values {
            check_name("field", name)?;
            out.push(Field {
                credential: cred,
                kind: &c.kind,
                name,
                value: v.0.expose_secret(),
            });
        }
        for (name, v) in &c.info {
            check_name("field", name)?;
            if c.values.contains_key(name) {
                return Err(ClientError::Deliver(format!(
                    "credential `{cred}` has `{name}` both as a value and as info"
                )));
            }
            out.push(Field {
                credential: cred,
                kind: &c.kind,
                name,
                value: v,
            });
        }
    }
    Ok(out)
}

/// Names from the broker become file and variable names: letters, digits,
/// `-`, `_`, `.`; not starting with `.`; at most 100 characters.
fn check_name(what: &str, name: &str) -> Result<(), ClientError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ClientError::Deliver(format!(
            "the broker sent a {what} name that cannot be a file name: {:?}",
            name.chars().take(100).collect::<String>()
        )))
    }
}

/// The file a field is written to, inside its credential's directory.
pub(super) fn file_name<'a>(kind: &str, field: &'a str) -> &'a str {
    match (kind, field) {
        ("certificate", "certificate") => "tls.crt",
        ("certificate", "private_key") => "tls.key",
        ("certificate", "ca_chain") => "ca.crt",
        _ => field,
    }
}

fn upper_snake(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `JOBKEY_<CREDENTIAL>_<FIELD>`.
pub(super) fn env_name(credential: &str, field: &str) -> String {
    format!("JOBKEY_{}_{}", upper_snake(credential), upper_snake(field))
}

/// The step-output name: `<credential>_<field>`, lower snake case.
pub(super) fn output_name(credential: &str, field: &str) -> String {
    format!("{credential}_{field}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The environment for the fields, refusing two fields with one name.
pub(super) fn env_vars(
    fields: &[Field<'_>],
    name: fn(&str, &str) -> String,
) -> Result<Vec<(String, SecretString)>, ClientError> {
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for f in fields {
        let n = name(f.credential, f.name);
        if let Some((c, fl)) = seen.insert(n.clone(), (f.credential.into(), f.name.into())) {
            return Err(ClientError::Deliver(format!(
                "`{c}.{fl}` and `{}.{}` would both be {n}",
                f.credential, f.name
            )));
        }
        out.push((n, SecretString::new(f.value.to_owned())));
    }
    Ok(out)
}

/// What `write_files` wrote.
#[derive(Debug, Default)]
pub(super) struct Written {
    /// The kubeconfig files, for `KUBECONFIG`.
    pub kubeconfigs: Vec<PathBuf>,
    pub files: usize,
    /// What to remove later (`jobkey revoke`, or after `--exec`).
    pub delivered: Delivered,
}

/// What `fetch` put on disk, kept in the revocation state so that `jobkey
/// revoke` removes it: the credentials directory, the directories `fetch`
/// created, and each credential's files. Names only, never a value.
#[derive(Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Delivered {
    /// The credentials directory (absolute).
    pub dir: PathBuf,
    /// The directories `fetch` created for it (missing parents and the
    /// directory itself), outermost first.
    #[serde(default)]
    pub created: Vec<PathBuf>,
    /// Each credential's sub-directory and files.
    #[serde(default)]
    pub credentials: Vec<DeliveredCredential>,
}

/// One credential's sub-directory of [`Delivered::dir`].
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeliveredCredential {
    /// The credential's name, which is its sub-directory's name.
    pub name: String,
    /// `true` when `fetch` created the sub-directory.
    pub created: bool,
    /// The file names in it.
    pub files: Vec<String>,
}

/// Writes every field to `dir` (see the module docs). On a failure, what
/// was written is removed again before the error is returned.
pub(super) fn write_files(dir: &Path, fields: &[Field<'_>]) -> Result<Written, ClientError> {
    let opened = PrivateDir::open(dir, Existing::MustBePrivate).map_err(ClientError::Files)?;
    let mut w = Written {
        delivered: Delivered {
            dir: opened.dir.path().to_owned(),
            created: opened.created,
            credentials: Vec::new(),
        },
        ..Written::default()
    };
    let mut subdirs: BTreeMap<&str, (PrivateDir, usize)> = BTreeMap::new();
    let mut write_all = || -> Result<(), FsError> {
        for f in fields {
            let (sub, i) = match subdirs.entry(f.credential) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let (sub, created) = opened.dir.subdir(f.credential)?;
                    w.delivered.credentials.push(DeliveredCredential {
                        name: f.credential.to_owned(),
                        created,
                        files: Vec::new(),
                    });
                    e.insert((sub, w.delivered.credentials.len() - 1))
                }
            };
            let name = file_name(f.kind, f.name);
            sub.write_file(name, f.value.as_bytes())?;
            w.delivered.credentials[*i].files.push(name.to_owned());
            w.files += 1;
            if f.kind == "kubeconfig" && f.name == "kubeconfig" {
                w.kubeconfigs.push(sub.path().join(name));
            }
        }
        Ok(())
    };
    if let Err(e) = write_all() {
        drop(subdirs);
        let _ = w.delivered.remove_files();
        remove_created_dirs(w.delivered.created.iter().map(PathBuf::as_path));
        return Err(ClientError::Files(e));
    }
    Ok(w)
}

impl Delivered {
    /// Removes the files, through handles on the checked directories, and
    /// the credential sub-directories `fetch` created once they are empty.
    /// Returns how many files were removed. The directories in `created`
    /// are left for [`remove_created_dirs`], once nothing else is in them.
    pub(super) fn remove_files(&self) -> Result<usize, FsError> {
        let Some(dir) = PrivateDir::open_existing(&self.dir, Existing::MustBePrivate)? else {
            return Ok(0);
        };
        let mut removed = 0;
        for c in &self.credentials {
            let Some(sub) = dir.existing_subdir(&c.name)? else {
                continue;
            };
            for f in &c.files {
                if sub.remove_file(f)? {
                    removed += 1;
                }
            }
            if c.created {
                match dir.remove_subdir(&c.name)? {
                    Removal::NotEmpty => eprintln!(
                        "jobkey: left {}: something other than jobkey's files is in it",
                        sub.path().display()
                    ),
                    Removal::Removed | Removal::Absent => {}
                }
            }
        }
        Ok(removed)
    }
}

/// Removes the directories `fetch` created, innermost first, each only
/// when it is empty.
pub(super) fn remove_created_dirs<'a>(dirs: impl Iterator<Item = &'a Path>) {
    let mut dirs: Vec<&Path> = dirs.collect();
    dirs.sort_by(|a, b| {
        b.components()
            .count()
            .cmp(&a.components().count())
            .then_with(|| a.cmp(b))
    });
    dirs.dedup();
    for d in dirs {
        match private_dir::remove_empty_dir(d) {
            Ok(Removal::NotEmpty) => eprintln!(
                "jobkey: left {}: it is not empty (or no longer a directory)",
                d.display()
            ),
            Ok(Removal::Removed | Removal::Absent) => {}
            Err(e) => eprintln!("jobkey: warning: cannot remove {e}"),
        }
    }
}

/// `KUBECONFIG` for the kubeconfig files written, if any.
pub(super) fn kubeconfig_var(w: &Written) -> Option<String> {
    if w.kubeconfigs.is_empty() {
        return None;
    }
    let parts: Vec<String> = w
        .kubeconfigs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    Some(parts.join(":"))
}

/// One `$GITHUB_ENV` / `$GITHUB_OUTPUT` entry in the heredoc form, with a
/// delimiter chosen at random for this entry. A value (or name) that
/// contains the delimiter is refused: it could end the entry early and
/// inject other variables.
pub(crate) fn github_file_entry(
    name: &str,
    value: &str,
    delimiter: &str,
) -> Result<SecretString, ClientError> {
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !name_ok {
        return Err(ClientError::Deliver(format!(
            "`{name}` is not a usable variable name"
        )));
    }
    if value.contains(delimiter) {
        return Err(ClientError::Deliver(format!(
            "the value of {name} contains the heredoc delimiter; refusing to write it"
        )));
    }
    Ok(SecretString::new(format!(
        "{name}<<{delimiter}\n{value}\n{delimiter}\n"
    )))
}

/// A fresh delimiter: `ghadelimiter_` and 128 random bits, as GitHub's own
/// toolkit does.
pub(super) fn github_delimiter() -> Result<String, ClientError> {
    Ok(format!("ghadelimiter_{}", random_hex::<16>()?))
}

/// Appends entries to the file GitHub names in `$GITHUB_ENV` or
/// `$GITHUB_OUTPUT`. All entries are checked before anything is written.
///
/// An earlier step may have left the file's last line without a newline
/// (`echo -n FOO=bar >> $GITHUB_ENV`); the first entry would then join that
/// line, and the runner would read the entry's value lines as variables of
/// their own. Such a line is ended first.
pub(crate) fn append_github_file(
    path: &Path,
    vars: &[(String, SecretString)],
) -> Result<(), ClientError> {
    let err = |e: std::io::Error| ClientError::Deliver(format!("{}: {e}", path.display()));
    let mut blocks = Vec::new();
    for (name, value) in vars {
        blocks.push(github_file_entry(
            name,
            value.expose_secret(),
            &github_delimiter()?,
        )?);
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    if !blocks.is_empty() && !ends_a_line(&mut f).map_err(err)? {
        f.write_all(b"\n").map_err(err)?;
    }
    for b in &blocks {
        f.write_all(b.expose_secret().as_bytes()).map_err(err)?;
    }
    Ok(())
}

/// Whether `f` is empty or ends with a newline.
fn ends_a_line(f: &mut std::fs::File) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// `N` random bytes as hex; no randomness is an error, never a guessable
/// name or delimiter.
pub(super) fn random_hex<const N: usize>() -> Result<String, ClientError> {
    crate::random::hex_token::<N>().map_err(|e| ClientError::Deliver(e.to_string()))
}

/// The reader the integration tests use too: one copy, written from the
/// runner's format.
#[cfg(test)]
#[path = "../../tests/it/fetch_support/github_file.rs"]
mod github_file;
#[cfg(test)]
use github_file::parse_github_file;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_files_and_variables() {
        // (kind, field, file, env)
        let cases = [
            (
                "certificate",
                "certificate",
                "tls.crt",
                "JOBKEY_WEB_TLS_CERTIFICATE",
            ),
            (
                "certificate",
                "private_key",
                "tls.key",
                "JOBKEY_WEB_TLS_PRIVATE_KEY",
            ),
            (
                "certificate",
                "ca_chain",
                "ca.crt",
                "JOBKEY_WEB_TLS_CA_CHAIN",
            ),
            (
                "certificate",
                "serial_number",
                "serial_number",
                "JOBKEY_WEB_TLS_SERIAL_NUMBER",
            ),
            (
                "kubeconfig",
                "kubeconfig",
                "kubeconfig",
                "JOBKEY_WEB_TLS_KUBECONFIG",
            ),
            ("kv", "api.key", "api.key", "JOBKEY_WEB_TLS_API_KEY"),
        ];
        for (kind, field, file, env) in cases {
            assert_eq!(file_name(kind, field), file);
            assert_eq!(env_name("web-tls", field), env);
        }
        assert_eq!(output_name("deploy-db", "password"), "deploy_db_password");
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [
            "",
            "..",
            ".hidden",
            "a/b",
            "a\\b",
            "a\nb",
            "é",
            &"x".repeat(101),
        ] {
            assert!(check_name("field", bad).is_err(), "{bad:?}");
        }
        for good in ["password", "tls.crt", "deploy-db", "API_KEY"] {
            assert!(check_name("field", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn colliding_variable_names_are_refused() {
        let f = |c: &'static str, n: &'static str| Field {
            credential: c,
            kind: "kv",
            name: n,
            value: "v",
        };
        let e = env_vars(
            &[f("deploy-db", "password"), f("deploy_db", "password")],
            env_name,
        )
        .unwrap_err();
        assert!(e.to_string().contains("JOBKEY_DEPLOY_DB_PASSWORD"), "{e}");
        assert_eq!(
            env_vars(&[f("a", "x"), f("b", "x")], env_name)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_hostile_value_cannot_inject_github_variables() {
        let delim = github_delimiter().unwrap();
        // (value, accepted)
        let cases = [
            ("plain".to_owned(), true),
            ("x\nEVIL=1\nPATH=/tmp".to_owned(), true),
            // A guessed delimiter that is not ours stays inside the value.
            (
                "x\nghadelimiter_00000000000000000000000000000000\nLD_PRELOAD=/tmp/e.so".to_owned(),
                true,
            ),
            (format!("x\n{delim}\nLD_PRELOAD=/tmp/e.so"), false),
            (delim.clone(), false),
        ];
        for (value, ok) in cases {
            let r = github_file_entry("JOBKEY_X_Y", &value, &delim);
            assert_eq!(r.is_ok(), ok, "{value:?}");
            if let Ok(entry) = r {
                let parsed = parse_github_file(entry.expose_secret());
                assert_eq!(parsed, vec![("JOBKEY_X_Y".to_owned(), value.clone())]);
            } else {
                assert!(
                    !r.unwrap_err().to_string().contains("LD_PRELOAD"),
                    "the error hides the value"
                );
            }
        }
        assert_ne!(
            github_delimiter().unwrap(),
            github_delimiter().unwrap(),
            "random per entry"
        );
        assert!(github_file_entry("A=B", "v", &delim).is_err());
        assert!(github_file_entry("A\nB", "v", &delim).is_err());
    }

    /// Found by the `github_env` fuzz target: appended after a last line
    /// without a newline, the first entry's header joined that line, and
    /// the runner read the value's lines as variables (or refused the file).
    #[test]
    fn an_unterminated_last_line_does_not_swallow_the_first_entry() {
        // (what earlier steps wrote, the value appended)
        let cases = [
            // The fuzzer's input.
            (
                "ooJ=",
                "value\r\nwith CR\r\n\u{1}234###########################J#",
            ),
            ("FOO=bar", "x\nEVIL=1\nLD_PRELOAD=/tmp/e.so"),
            ("FOO=bar\n", "x\nEVIL=1"),
            ("", "x\nEVIL=1"),
            ("NOTES<<EOF\nline\nEOF", "x\nEVIL=1"),
        ];
        for (before, value) in cases {
            let tmp = tempfile::tempdir().unwrap();
            let path = tmp.path().join("github_env");
            std::fs::write(&path, before).unwrap();
            let vars = [("KEY_X_Y".to_owned(), SecretString::new(value.to_owned()))];
            append_github_file(&path, &vars).unwrap();
            let written = std::fs::read_to_string(&path).unwrap();
            let mut expected = parse_github_file(before);
            expected.push(("KEY_X_Y".to_owned(), value.to_owned()));
            assert_eq!(parse_github_file(&written), expected, "after {before:?}");
            assert!(written.starts_with(before), "{written:?}");

            // Nothing to write: the file is left as it was.
            std::fs::write(&path, before).unwrap();
            append_github_file(&path, &[]).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        }
    }

    #[test]
    fn files_are_0600_in_a_0700_directory_and_symlinks_are_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("creds");
        let fields = [
            Field {
                credential: "web",
                kind: "certificate",
                name: "private_key",
                value: "KEY",
            },
            Field {
                credential: "k8s",
                kind: "kubeconfig",
                name: "kubeconfig",
                value: "apiVersion: v1",
            },
        ];
        let w = write_files(&dir, &fields).unwrap();
        assert_eq!(w.files, 2);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("web")), 0o700);
        assert_eq!(mode(&dir.join("web/tls.key")), 0o600);
        assert_eq!(
            std::fs::read_to_string(dir.join("web/tls.key")).unwrap(),
            "KEY"
        );
        assert_eq!(
            kubeconfig_var(&w).unwrap(),
            dir.join("k8s/kubeconfig").display().to_string()
        );

        // A planted symlink is replaced, its target untouched.
        let target = tmp.path().join("target");
        std::fs::write(&target, "untouched").unwrap();
        std::fs::remove_file(dir.join("web/tls.key")).unwrap();
        std::os::unix::fs::symlink(&target, dir.join("web/tls.key")).unwrap();
        write_files(&dir, &fields).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert_eq!(
            std::fs::read_to_string(dir.join("web/tls.key")).unwrap(),
            "KEY"
        );

        // An existing directory open to others is refused; a symlinked one too.
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            write_files(&open, &fields),
            Err(ClientError::Files(FsError::OpenToOthers { .. }))
        ));
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        assert!(matches!(
            write_files(&link, &fields),
            Err(ClientError::Files(FsError::Symlink { .. }))
        ));
    }

    #[test]
    fn what_was_delivered_is_recorded_and_removed_to_the_last_directory_fetch_made() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let field = |credential, name| Field {
            credential,
            kind: "kv",
            name,
            value: "v",
        };
        // An existing private directory, with one credential directory the
        // job made itself.
        let existing = base.join("existing");
        std::fs::create_dir(&existing).unwrap();
        std::fs::set_permissions(
            &existing,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        std::fs::create_dir(existing.join("app")).unwrap();
        std::fs::set_permissions(
            existing.join("app"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let fields = [
            field("db", "password"),
            field("db", "username"),
            field("app", "key"),
        ];
        let w = write_files(&existing, &fields).unwrap();
        assert_eq!(
            w.delivered,
            Delivered {
                dir: existing.clone(),
                created: vec![],
                credentials: vec![
                    DeliveredCredential {
                        name: "db".into(),
                        created: true,
                        files: vec!["password".into(), "username".into()],
                    },
                    DeliveredCredential {
                        name: "app".into(),
                        created: false,
                        files: vec!["key".into()],
                    },
                ],
            }
        );
        assert_eq!(w.delivered.remove_files().unwrap(), 3);
        assert!(!existing.join("db").exists(), "fetch made it: removed");
        assert!(existing.join("app").is_dir(), "the job made it: kept");
        assert!(existing.is_dir());

        // A new directory under new parents: all of them go.
        let fresh = base.join("a/b/creds");
        let w = write_files(&fresh, &fields).unwrap();
        assert_eq!(
            w.delivered.created,
            [base.join("a"), base.join("a/b"), fresh.clone()]
        );
        assert_eq!(w.delivered.remove_files().unwrap(), 3);
        remove_created_dirs(w.delivered.created.iter().map(PathBuf::as_path));
        assert!(!base.join("a").exists());

        // A failed write leaves nothing behind.
        let e = write_files(
            &base.join("c/creds"),
            &[field("db", "x"), field("db", "x/y")],
        );
        assert!(matches!(e, Err(ClientError::Files(_))), "{e:?}");
        assert!(!base.join("c").exists());
    }
}
