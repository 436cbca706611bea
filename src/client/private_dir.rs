//! Directories the job client writes secrets into, held open as handles.
//!
//! A path is resolved once, when its directory is opened. Everything after
//! that (sub-directories, files, renames, removals) goes through the open
//! handle (`openat`, `mkdirat`, `renameat`, `unlinkat`), so a component
//! swapped for a symlink after the checks cannot redirect a secret file or a
//! removal. The rules:
//! - a directory jobkey creates is made 0700, and opened without following
//!   a symlink;
//! - an existing credentials directory must not be a symlink, must belong
//!   to the user jobkey runs as, and must be closed to group and others;
//! - the directories above the one asked for are followed as the user named
//!   them when they exist (a `$RUNNER_TEMP` behind a symlink is fine);
//! - a file is written to a new temporary name (`O_CREAT | O_EXCL |
//!   O_NOFOLLOW`, 0600) and renamed over its name, so a symlink planted at
//!   the name is replaced, never followed.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// Why a directory or file for secrets was refused, or an operation on it
/// failed. Messages name the path, never a file's contents.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FsError {
    /// The directory (or a component jobkey created) is a symlink.
    #[error(
        "{path} is a symlink, which jobkey does not follow for secrets: name the real directory"
    )]
    Symlink { path: PathBuf },
    /// Something other than a directory is in the way.
    #[error("{path} exists and is not a directory")]
    NotADirectory { path: PathBuf },
    /// Something other than a regular file is where a file is read.
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    /// The directory or file belongs to another user.
    #[error(
        "{path} belongs to uid {owner}, not to the user jobkey runs as (uid {me}); remove it or choose another directory"
    )]
    NotOwned { path: PathBuf, owner: u32, me: u32 },
    /// The directory or file is open to group or others.
    #[error(
        "{path} exists with mode {mode:o}, open to other users; remove it or choose another path"
    )]
    OpenToOthers { path: PathBuf, mode: u32 },
    /// A system call failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(path: &Path, e: Errno) -> FsError {
    FsError::Io {
        path: path.to_owned(),
        source: e.into(),
    }
}

/// The effective uid: who must own the directories and files jobkey uses.
pub(super) fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// What an existing directory at the asked path must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Existing {
    /// A credentials directory: not a symlink, the user's own, mode `0?00`.
    MustBePrivate,
    /// A directory the user named for a single 0600 file (the state's
    /// `--state` directory): any directory, followed as named.
    Accepted,
}

/// A directory held open; every operation is relative to the handle.
#[derive(Debug)]
pub(super) struct PrivateDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// A directory opened by [`PrivateDir::open`], and the directories created
/// on the way (outermost first, absolute).
#[derive(Debug)]
pub(super) struct Opened {
    pub dir: PrivateDir,
    pub created: Vec<PathBuf>,
}

/// What [`PrivateDir::remove_subdir`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Removal {
    Removed,
    Absent,
    NotEmpty,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);
const PASS_THROUGH: OFlags = OFlags::PATH.union(OFlags::DIRECTORY).union(OFlags::CLOEXEC);

impl PrivateDir {
    /// Opens `path`, creating it and any missing parent with mode 0700
    /// (none of which may turn out to be a symlink). An existing `path`
    /// must be what `existing` says.
    pub(super) fn open(path: &Path, existing: Existing) -> Result<Opened, FsError> {
        Self::walk(path, existing, true, current_uid())?.ok_or_else(|| FsError::Io {
            path: path.to_owned(),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    /// Opens an existing `path` (as [`PrivateDir::open`] would accept it);
    /// `None` when it or a parent does not exist.
    pub(super) fn open_existing(
        path: &Path,
        existing: Existing,
    ) -> Result<Option<PrivateDir>, FsError> {
        Ok(Self::walk(path, existing, false, current_uid())?.map(|o| o.dir))
    }

    /// The walk behind `open` and `open_existing`, with the uid that must
    /// own private directories (a parameter so tests can ask for another).
    fn walk(
        path: &Path,
        existing: Existing,
        create: bool,
        uid: u32,
    ) -> Result<Option<Opened>, FsError> {
        let abs = std::path::absolute(path).map_err(|source| FsError::Io {
            path: path.to_owned(),
            source,
        })?;
        let names: Vec<&OsStr> = abs
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                Component::ParentDir => Some(OsStr::new("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
            })
            .collect();
        let root = PathBuf::from("/");
        let mut cur = rustix::fs::openat(rustix::fs::CWD, "/", PASS_THROUGH, Mode::empty())
            .map_err(|e| io_error(&root, e))?;
        if names.is_empty() {
            // `/` itself: never private.
            return check_dir(&cur, &root, existing, uid).map(|()| {
                Some(Opened {
                    dir: PrivateDir {
                        fd: cur,
                        path: root,
                    },
                    created: Vec::new(),
                })
            });
        }
        let mut sofar = root;
        let mut created = Vec::new();
        let mut creating = false;
        for (i, name) in names.iter().enumerate() {
            sofar.push(name);
            let last = i + 1 == names.len();
            if !creating {
                let flags = match (last, existing) {
                    (false, _) => PASS_THROUGH,
                    (true, Existing::MustBePrivate) => DIR_FLAGS,
                    (true, Existing::Accepted) => DIR_FLAGS.difference(OFlags::NOFOLLOW),
                };
                match rustix::fs::openat(&cur, *name, flags, Mode::empty()) {
                    Ok(fd) => {
                        if last {
                            check_dir(&fd, &sofar, existing, uid)?;
                        }
                        cur = fd;
                        continue;
                    }
                    Err(Errno::NOENT) if create => creating = true,
                    Err(Errno::NOENT) => return Ok(None),
                    Err(Errno::LOOP | Errno::NOTDIR) if last => {
                        return Err(not_a_directory(&cur, name, &sofar));
                    }
                    Err(e) => return Err(io_error(&sofar, e)),
                }
            }
            // From the first missing component on, jobkey creates each one
            // and opens what it created without following a symlink: one
            // swapped in meanwhile is refused.
            match rustix::fs::mkdirat(&cur, *name, Mode::from_raw_mode(0o700)) {
                Ok(()) => created.push(sofar.clone()),
                Err(Errno::EXIST) => {}
                Err(e) => return Err(io_error(&sofar, e)),
            }
            let fd = match rustix::fs::openat(&cur, *name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(not_a_directory(&cur, name, &sofar));
                }
                Err(e) => return Err(io_error(&sofar, e)),
            };
            if created.last() == Some(&sofar) {
                // Exactly 0700, whatever the umask took away.
                rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700))
                    .map_err(|e| io_error(&sofar, e))?;
            }
            check_dir(&fd, &sofar, Existing::MustBePrivate, uid)?;
            cur = fd;
        }
        Ok(Some(Opened {
            dir: PrivateDir {
                fd: cur,
                path: sofar,
            },
            created,
        }))
    }

    /// The path this directory was opened at.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating it 0700 if missing) the private sub-directory
    /// `name`; `true` when it was created.
    pub(super) fn subdir(&self, name: &str) -> Result<(PrivateDir, bool), FsError> {
        let path = self.path.join(name);
        let created = match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(io_error(&path, e)),
        };
        let fd = match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => return Err(not_a_directory(&self.fd, name, &path)),
            Err(e) => return Err(io_error(&path, e)),
        };
        if created {
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700)).map_err(|e| io_error(&path, e))?;
        }
        check_dir(&fd, &path, Existing::MustBePrivate, current_uid())?;
        Ok((PrivateDir { fd, path }, created))
    }

    /// The existing private sub-directory `name`, or `None`.
    pub(super) fn existing_subdir(&self, name: &str) -> Result<Option<PrivateDir>, FsError> {
        let path = self.path.join(name);
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => {
                check_dir(&fd, &path, Existing::MustBePrivate, current_uid())?;
                Ok(Some(PrivateDir { fd, path }))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(not_a_directory(&self.fd, name, &path)),
            Err(e) => Err(io_error(&path, e)),
        }
    }

    /// Writes `bytes` to `name` with mode 0600: into a new temporary file
    /// (created exclusively, never through a symlink), synced, then renamed
    /// over `name` (which replaces a symlink there instead of following it).
    pub(super) fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), FsError> {
        let path = self.path.join(name);
        let hex = crate::random::hex_token::<8>().map_err(|e| FsError::Io {
            path: path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let tmp = format!(".{name}.{hex}.tmp");
        let fd = rustix::fs::openat(
            &self.fd,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io_error(&path, e))?;
        let mut f = File::from(fd);
        let written = rustix::fs::fchmod(&f, Mode::from_raw_mode(0o600))
            .map_err(std::io::Error::from)
            .and_then(|()| f.write_all(bytes))
            .and_then(|()| f.sync_all())
            .and_then(|()| {
                rustix::fs::renameat(&self.fd, tmp.as_str(), &self.fd, name).map_err(Into::into)
            });
        if let Err(source) = written {
            let _ = rustix::fs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
            return Err(FsError::Io { path, source });
        }
        Ok(())
    }

    /// Reads the file `name` (at most `limit` bytes) if it exists, is a
    /// regular file (not a symlink; a FIFO does not block the open), belongs
    /// to the user and is closed to group and others.
    pub(super) fn read_private_file(
        &self,
        name: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, FsError> {
        let path = self.path.join(name);
        let fd = match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(FsError::Symlink { path }),
            Err(e) => return Err(io_error(&path, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| io_error(&path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::NotAFile { path });
        }
        check_owner_and_mode(&st, &path, current_uid())?;
        let mut buf = Vec::new();
        File::from(fd)
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|source| FsError::Io { path, source })?;
        Ok(Some(buf))
    }

    /// Removes the file `name` (a symlink there is removed, not followed);
    /// `false` when there was none.
    pub(super) fn remove_file(&self, name: &str) -> Result<bool, FsError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_error(&self.path.join(name), e)),
        }
    }

    /// Removes the sub-directory `name` if it is empty.
    pub(super) fn remove_subdir(&self, name: &str) -> Result<Removal, FsError> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) => Ok(Removal::Removed),
            Err(Errno::NOENT) => Ok(Removal::Absent),
            Err(Errno::NOTEMPTY | Errno::EXIST) => Ok(Removal::NotEmpty),
            Err(e) => Err(io_error(&self.path.join(name), e)),
        }
    }

    /// Takes an exclusive lock on the directory (`flock`), held until the
    /// handle is dropped: two `jobkey` runs of one job update its state file
    /// one after the other.
    pub(super) fn lock(&self) -> Result<(), FsError> {
        rustix::fs::flock(&self.fd, FlockOperation::LockExclusive)
            .map_err(|e| io_error(&self.path, e))
    }
}

/// Removes the empty directory `path`, through a handle on its parent (a
/// symlink there is not followed: `rmdir` refuses it).
pub(super) fn remove_empty_dir(path: &Path) -> Result<Removal, FsError> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(Removal::NotEmpty);
    };
    let Some(parent) = PrivateDir::open_existing(parent, Existing::Accepted)? else {
        return Ok(Removal::Absent);
    };
    match rustix::fs::unlinkat(&parent.fd, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(Removal::Removed),
        Err(Errno::NOENT) => Ok(Removal::Absent),
        Err(Errno::NOTEMPTY | Errno::EXIST | Errno::NOTDIR) => Ok(Removal::NotEmpty),
        Err(e) => Err(io_error(path, e)),
    }
}

/// Says what is at `name` when it could not be opened as a directory.
fn not_a_directory(
    parent: &impl std::os::fd::AsFd,
    name: impl AsRef<OsStr>,
    path: &Path,
) -> FsError {
    match rustix::fs::statat(parent, name.as_ref(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => FsError::Symlink {
            path: path.to_owned(),
        },
        _ => FsError::NotADirectory {
            path: path.to_owned(),
        },
    }
}

fn check_dir(fd: &OwnedFd, path: &Path, existing: Existing, uid: u32) -> Result<(), FsError> {
    let st = rustix::fs::fstat(fd).map_err(|e| io_error(path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(FsError::NotADirectory {
            path: path.to_owned(),
        });
    }
    match existing {
        Existing::MustBePrivate => check_owner_and_mode(&st, path, uid),
        Existing::Accepted => Ok(()),
    }
}

fn check_owner_and_mode(st: &rustix::fs::Stat, path: &Path, uid: u32) -> Result<(), FsError> {
    if st.st_uid != uid {
        return Err(FsError::NotOwned {
            path: path.to_owned(),
            owner: st.st_uid,
            me: uid,
        });
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FsError::OpenToOthers {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn every_directory_jobkey_creates_is_0700_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let dir = base.join("a/b/creds");
        let o = PrivateDir::open(&dir, Existing::MustBePrivate).unwrap();
        assert_eq!(o.dir.path(), dir);
        assert_eq!(
            o.created,
            [base.join("a"), base.join("a/b"), base.join("a/b/creds")]
        );
        for p in &o.created {
            assert_eq!(mode(p), 0o700, "{}", p.display());
        }
        // Opened again: nothing created.
        let again = PrivateDir::open(&dir, Existing::MustBePrivate).unwrap();
        assert!(again.created.is_empty());
    }

    #[test]
    fn existing_directories_that_are_not_private_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let me = current_uid();

        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();

        let real = base.join("real");
        std::fs::create_dir(&real).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();

        let file = base.join("file");
        std::fs::write(&file, "x").unwrap();

        // (path, existing, uid that must own it, the refusal)
        type Case = (PathBuf, Existing, u32, fn(&FsError) -> bool);
        let cases: [Case; 6] = [
            (open.clone(), Existing::MustBePrivate, me, |e| {
                matches!(e, FsError::OpenToOthers { mode: 0o755, .. })
            }),
            (link.clone(), Existing::MustBePrivate, me, |e| {
                matches!(e, FsError::Symlink { .. })
            }),
            (file.clone(), Existing::MustBePrivate, me, |e| {
                matches!(e, FsError::NotADirectory { .. })
            }),
            (file.join("below"), Existing::MustBePrivate, me, |e| {
                matches!(e, FsError::Io { .. })
            }),
            // A directory that is private but not the user's (the owner
            // check, without needing another user).
            (real.clone(), Existing::MustBePrivate, me + 1, |e| {
                matches!(e, FsError::NotOwned { .. })
            }),
            // A symlink planted where jobkey is about to create a component.
            (link.join("x"), Existing::MustBePrivate, me, |_| false),
        ];
        for (path, existing, uid, refusal) in cases {
            match PrivateDir::walk(&path, existing, true, uid) {
                Err(e) => assert!(refusal(&e), "{}: {e:?}", path.display()),
                // Only the last case is accepted: `link` is a parent the
                // user named, followed as named; `x` is created under it.
                Ok(o) => {
                    assert_eq!(path, link.join("x"));
                    assert_eq!(o.unwrap().created, [link.join("x")]);
                }
            }
        }
        // An accepted (state) directory may be open and may be a symlink.
        assert!(PrivateDir::open(&open, Existing::Accepted).is_ok());
        assert!(PrivateDir::open(&link, Existing::Accepted).is_ok());
        // Missing: `open_existing` creates nothing.
        assert!(
            PrivateDir::open_existing(&base.join("missing/x"), Existing::MustBePrivate)
                .unwrap()
                .is_none()
        );
        assert!(!base.join("missing").exists());
    }

    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        if current_uid() == 0 {
            // As root: really another owner (nobody).
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
            let e = PrivateDir::open(&dir, Existing::MustBePrivate).unwrap_err();
            assert!(
                matches!(
                    e,
                    FsError::NotOwned {
                        owner: 65534,
                        me: 0,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(
                e.to_string().contains("belongs to uid 65534"),
                "the message names the owner: {e}"
            );
        } else {
            // Not root: the same check, asked for another uid.
            let e = PrivateDir::walk(&dir, Existing::MustBePrivate, true, current_uid() + 1)
                .unwrap_err();
            assert!(matches!(e, FsError::NotOwned { .. }), "{e:?}");
        }
    }

    #[test]
    fn handles_keep_pointing_at_the_checked_directory_after_a_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let dir = base.join("creds");
        let d = PrivateDir::open(&dir, Existing::MustBePrivate).unwrap().dir;
        // After the checks, the directory is moved away and a symlink to a
        // place the attacker reads is put at its path.
        let elsewhere = base.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::rename(&dir, base.join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();

        let (sub, created) = d.subdir("db").unwrap();
        assert!(created);
        sub.write_file("password", b"s3cret-value").unwrap();
        assert_eq!(
            std::fs::read_dir(&elsewhere).unwrap().count(),
            0,
            "nothing went through the symlink"
        );
        assert_eq!(
            std::fs::read_to_string(base.join("moved/db/password")).unwrap(),
            "s3cret-value"
        );
    }

    #[test]
    fn a_symlink_planted_at_the_file_name_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let d = PrivateDir::open(&base.join("creds"), Existing::MustBePrivate)
            .unwrap()
            .dir;
        let target = base.join("target");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, base.join("creds/password")).unwrap();
        // A leftover temporary name cannot be used either: the name is new
        // each time.
        d.write_file("password", b"value").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        let written = base.join("creds/password");
        assert!(!std::fs::symlink_metadata(&written).unwrap().is_symlink());
        assert_eq!(mode(&written), 0o600);
        assert_eq!(std::fs::read_to_string(&written).unwrap(), "value");
        let left: Vec<_> = std::fs::read_dir(base.join("creds"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, [OsStr::new("password")], "no temporary file left");

        // Reading refuses a symlink and a file open to others.
        std::fs::remove_file(&written).unwrap();
        std::os::unix::fs::symlink(&target, &written).unwrap();
        assert!(matches!(
            d.read_private_file("password", 1024),
            Err(FsError::Symlink { .. })
        ));
        std::fs::remove_file(&written).unwrap();
        std::fs::write(&written, "x").unwrap();
        std::fs::set_permissions(&written, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            d.read_private_file("password", 1024),
            Err(FsError::OpenToOthers { mode: 0o644, .. })
        ));
        assert_eq!(d.read_private_file("absent", 1024).unwrap(), None);
        // A FIFO planted at the name neither blocks nor is read.
        let fifo = base.join("creds/fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        assert!(matches!(
            d.read_private_file("fifo", 1024),
            Err(FsError::NotAFile { .. })
        ));
    }

    #[test]
    fn removal_goes_through_the_handle() {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let d = PrivateDir::open(&base.join("creds"), Existing::MustBePrivate)
            .unwrap()
            .dir;
        let (sub, _) = d.subdir("db").unwrap();
        sub.write_file("password", b"v").unwrap();
        assert_eq!(d.remove_subdir("db").unwrap(), Removal::NotEmpty);
        assert!(sub.remove_file("password").unwrap());
        assert!(!sub.remove_file("password").unwrap());
        assert_eq!(d.remove_subdir("db").unwrap(), Removal::Removed);
        assert_eq!(d.remove_subdir("db").unwrap(), Removal::Absent);
        assert_eq!(
            remove_empty_dir(&base.join("creds")).unwrap(),
            Removal::Removed
        );
        assert!(!base.join("creds").exists());
        // A symlink where a directory was is not followed by rmdir.
        std::fs::create_dir(base.join("kept")).unwrap();
        std::os::unix::fs::symlink(base.join("kept"), base.join("creds")).unwrap();
        assert_eq!(
            remove_empty_dir(&base.join("creds")).unwrap(),
            Removal::NotEmpty
        );
        assert!(base.join("kept").is_dir());
    }
}
