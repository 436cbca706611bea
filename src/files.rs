//! Reading the files jobkey loads: one capped reader for all of them.
//!
//! Every file jobkey reads whole (the config, policy files, policy fixtures
//! and their tokens, pinned JWKS documents, CA bundles, the fingerprint key,
//! `--claims` and `--token` files) is read through [`read`],
//! [`read_to_string`] or [`read_secret`]. Each one:
//! - opens the path (following symlinks) without blocking, so a FIFO with no
//!   writer cannot stall the open;
//! - checks the type of the handle it opened (`fstat`), not of the path, so a
//!   path swapped between a check and the open changes nothing;
//! - refuses anything but a regular file: a FIFO, a device such as
//!   `/dev/zero`, a directory or a socket;
//! - refuses a file whose size is over the cap, and reads at most the cap
//!   plus one byte whatever the size said, so a file that grows while it is
//!   read is refused too, never read into memory whole.
//!
//! [`open_regular`] is the same open and check for files read line by line
//! (the audit log), which have no cap.
//!
//! A [`FileError`] names the file and says what is wrong with it ("is a
//! FIFO, not a regular file", "is larger than 1 MiB").

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

/// One kibibyte.
pub(crate) const KIB: u64 = 1024;
/// One mebibyte.
pub(crate) const MIB: u64 = 1024 * KIB;

/// Why a file could not be read. `Display` names the file; [`reason`]
/// is the same without it, for errors that name the file themselves.
///
/// [`reason`]: FileError::reason
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// The open or the read failed (missing, unreadable, an I/O error).
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// What the path leads to is not a regular file (after symlinks).
    #[error("{path} is {kind}, not a regular file")]
    NotRegular { path: String, kind: &'static str },
    /// The file is larger than the cap (`size` is what was seen: the size
    /// the file declared, or the cap plus one when it grew while read).
    #[error("{path} is larger than {}", bytes_text(*limit))]
    TooLarge { path: String, size: u64, limit: u64 },
    /// A text file that is not UTF-8.
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: String },
}

impl FileError {
    /// What is wrong, without the file's name: "it is a FIFO, not a regular
    /// file", "it is larger than 1 MiB", or the I/O error.
    pub(crate) fn reason(&self) -> String {
        match self {
            FileError::Io { source, .. } => source.to_string(),
            FileError::NotRegular { kind, .. } => format!("it is {kind}, not a regular file"),
            FileError::TooLarge { limit, .. } => {
                format!("it is larger than {}", bytes_text(*limit))
            }
            FileError::NotUtf8 { .. } => "it is not UTF-8 text".into(),
        }
    }

    /// As an `std::io::Error` whose text is [`reason`](FileError::reason)
    /// (for error types that wrap an I/O error and name the file
    /// themselves); a failed open or read stays the original error.
    pub(crate) fn into_io(self) -> std::io::Error {
        match self {
            FileError::Io { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.reason()),
        }
    }
}

/// `1 MiB`, `256 KiB`, `100 bytes`.
fn bytes_text(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// Opens `path` for reading, following symlinks, and checks that the handle
/// is a regular file. Returns the file and the size it declares.
pub(crate) fn open_regular(path: &Path) -> Result<(File, u64), FileError> {
    let io = |source| FileError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Without O_NONBLOCK, opening a FIFO waits for a writer; O_NOCTTY
        // keeps a terminal device from becoming the controlling terminal.
        // Neither changes how a regular file is read.
        opts.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = opts.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(FileError::NotRegular {
            path: path.display().to_string(),
            kind: kind(&meta.file_type()),
        });
    }
    Ok((file, meta.len()))
}

fn kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    "a special file"
}

/// Reads the regular file `path`, refusing one larger than `limit` bytes.
pub(crate) fn read(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let mut buf = Vec::new();
    read_into(path, limit, &mut buf)?;
    Ok(buf)
}

/// [`read`], as UTF-8 text.
pub(crate) fn read_to_string(path: &Path, limit: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, limit)?).map_err(|_| FileError::NotUtf8 {
        path: path.display().to_string(),
    })
}

/// [`read`] for a secret (a key, a token): the buffer is allocated once at
/// the cap plus one, so no copy is left behind by growing it, and it is
/// wiped when dropped, on every path.
pub(crate) fn read_secret(path: &Path, limit: u64) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let cap = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let mut buf = Zeroizing::new(Vec::with_capacity(cap));
    read_into(path, limit, &mut buf)?;
    Ok(buf)
}

/// Writes `bytes` to a new file at `path` (mode 0600, created with
/// `O_EXCL`, parents created, synced), for keys jobkey makes once and keeps:
/// a file already there is never overwritten.
pub(crate) fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn read_into(path: &Path, limit: u64, buf: &mut Vec<u8>) -> Result<(), FileError> {
    let too_large = |size| FileError::TooLarge {
        path: path.display().to_string(),
        size,
        limit,
    };
    let (file, declared) = open_regular(path)?;
    if declared > limit {
        return Err(too_large(declared));
    }
    file.take(limit.saturating_add(1))
        .read_to_end(buf)
        .map_err(|source| FileError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if buf.len() as u64 > limit {
        return Err(too_large(buf.len() as u64));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
