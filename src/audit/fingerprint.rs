//! Fingerprints of issued values, so an auditor can answer "this value
//! leaked in a build log: which job received it, under which rule?" without
//! the audit log ever holding the value.
//!
//! A fingerprint is HMAC-SHA256 under a key kept beside the log (never in
//! it), truncated to 128 bits: someone who reads the log alone cannot test
//! guesses of a low-entropy secret against it, as they could with a plain
//! hash. `jobkey audit find` recomputes it from a value given on stdin.

use std::path::{Path, PathBuf};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::AuditError;

/// Prefix of every fingerprint (names the scheme, so it can change later).
pub(super) const PREFIX: &str = "hmac-sha256:";

/// A keyed fingerprint: `hmac-sha256:` and 128 bits of HMAC-SHA256, in hex.
/// Made by [`Fingerprinter::fingerprint`] (or read back from a log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct Fingerprint(String);

impl Fingerprint {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Computes fingerprints under one key.
pub struct Fingerprinter {
    key: hmac::Key,
}

impl std::fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprinter(<key redacted>)")
    }
}

impl Fingerprinter {
    /// Reads the key file, or creates it (32 random bytes, mode 0600) when
    /// it does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if !path.exists() {
            let mut key = crate::random::bytes::<32>().map_err(|e| AuditError::Io {
                path: path.display().to_string(),
                reason: format!("no new fingerprint key: {e}"),
            })?;
            let written = crate::files::create_private(path, &key);
            zeroize::Zeroize::zeroize(&mut key);
            written.map_err(io)?;
        }
        Self::load(path)
    }

    /// Reads an existing key file.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let bytes =
            crate::files::read_secret(path, 4 * crate::files::KIB).map_err(|e| AuditError::Io {
                path: path.display().to_string(),
                reason: e.reason(),
            })?;
        if bytes.len() < 32 {
            return Err(AuditError::Io {
                path: path.display().to_string(),
                reason: format!(
                    "a fingerprint key is 32 bytes; this file has {}",
                    bytes.len()
                ),
            });
        }
        Ok(Fingerprinter {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// The fingerprint of one value.
    pub fn fingerprint(&self, value: &str) -> Fingerprint {
        let tag = hmac::sign(&self.key, value.as_bytes());
        Fingerprint(format!(
            "{PREFIX}{}",
            crate::random::hex(&tag.as_ref()[..16])
        ))
    }
}

/// Where the key lives when the config does not say: beside the log.
pub(crate) fn default_key_path(audit_path: &Path) -> PathBuf {
    let mut name = audit_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "audit".into());
    name.push(".fingerprint-key");
    audit_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file holding bytes 0, 1, …, 31.
    fn fixed_key(dir: &Path) -> Fingerprinter {
        let p = dir.join("fixed.key");
        std::fs::write(&p, (0u8..32).collect::<Vec<u8>>()).unwrap();
        Fingerprinter::load(&p).unwrap()
    }

    #[test]
    fn a_fingerprint_is_the_truncated_hmac_of_the_value_under_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let fp = fixed_key(dir.path());
        // Expected values computed outside jobkey, with Python's hmac module:
        // hmac.new(bytes(range(32)), value, hashlib.sha256).hexdigest()[:32]
        for (value, expected) in [
            ("hunter2-correct-horse", "1e3d5dfbcfd0cc3a9d07752d238199c2"),
            ("hunter2-correct-horsE", "a3e020bb9584a995ee062dc7078a9480"),
        ] {
            assert_eq!(
                fp.fingerprint(value).as_str(),
                format!("{PREFIX}{expected}")
            );
            // And with ring's HMAC directly, on the same key and value.
            let key = hmac::Key::new(hmac::HMAC_SHA256, &(0u8..32).collect::<Vec<u8>>());
            let tag = hmac::sign(&key, value.as_bytes());
            assert_eq!(
                fp.fingerprint(value).as_str(),
                format!("{PREFIX}{}", crate::random::hex(&tag.as_ref()[..16]))
            );
        }
    }

    #[test]
    fn same_key_same_fingerprint_another_key_another() {
        let dir = tempfile::tempdir().unwrap();
        let a = Fingerprinter::load_or_create(&dir.path().join("a.key")).unwrap();
        let a_again = Fingerprinter::load_or_create(&dir.path().join("a.key")).unwrap();
        let b = Fingerprinter::load_or_create(&dir.path().join("b.key")).unwrap();
        let v = "hunter2-correct-horse";
        assert_eq!(
            a.fingerprint(v),
            a_again.fingerprint(v),
            "the key file is read back, not replaced"
        );
        assert_ne!(
            a.fingerprint(v),
            b.fingerprint(v),
            "another key, another fingerprint"
        );
        assert_ne!(a.fingerprint(v), a.fingerprint("hunter2-correct-horsE"));
        let key = std::fs::read(dir.path().join("a.key")).unwrap();
        assert_eq!(key.len(), 32);
        assert!(!format!("{a:?}").contains(&format!("{key:?}")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("a.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, b"short").unwrap();
        assert!(
            Fingerprinter::load(&p)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }

    #[test]
    fn default_key_sits_beside_the_log() {
        assert_eq!(
            default_key_path(Path::new("/var/log/jobkey/audit.jsonl")),
            Path::new("/var/log/jobkey/audit.jsonl.fingerprint-key")
        );
    }
}
