//! Signed checkpoints: tamper evidence that does not rest on the log alone.
//!
//! A hash chain shows that no record was edited, removed or reordered, but
//! not that the last records are still there: cutting the tail off leaves
//! a shorter chain that is just as intact. So every so often the log
//! appends a `checkpoint` record: the sequence number and hash of the
//! record before it (the chain's head), the time and the signing key's id,
//! signed with Ed25519 under a key kept beside the log ([`CheckpointKey`],
//! created at first start, mode 0600). The same checkpoint also goes to a
//! second sink that the broker cannot rewrite afterwards (its stdout, for
//! the log shipper or the journal, and/or an append-only file). Given the
//! latest checkpoint from that sink, or the public key and a sequence
//! number known to exist, `jobkey audit verify` tells a truncated log from
//! an intact one.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::AuditError;

/// Names the signed message's layout (so it can change later).
const DOMAIN: &str = "jobkey audit checkpoint v1";
/// Prefix of a public key as `jobkey audit public-key` prints it.
pub(super) const PUBLIC_KEY_PREFIX: &str = "ed25519:";

/// What a checkpoint record says, and what goes to the second sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The sequence number of the last record it covers (the record just
    /// before the checkpoint record).
    pub seq: u64,
    /// That record's `hash`: the chain's head.
    pub head: String,
    /// When it was signed (RFC 3339, UTC).
    pub time: String,
    /// The signing key's id: the first 8 bytes of the SHA-256 of its
    /// public key, in hex.
    pub key_id: String,
    /// The Ed25519 public key (base64), so a verifier can check the key id;
    /// trust comes from the key an auditor kept, not from this field.
    pub public_key: String,
    /// Ed25519 over `jobkey audit checkpoint v1`, `seq`, `head`, `time`
    /// and `key_id`, one per line (base64).
    pub signature: String,
}

impl Checkpoint {
    fn message(seq: u64, head: &str, time: &str, key_id: &str) -> String {
        format!("{DOMAIN}\n{seq}\n{head}\n{time}\n{key_id}")
    }

    /// Checks the signature with the key the checkpoint names (`trusted`
    /// empty) or with one of `trusted`. The error says what is wrong, for
    /// a message that names the line.
    pub fn check(&self, trusted: &[PublicKey]) -> Result<(), String> {
        let named = PublicKey::parse(&self.public_key)
            .map_err(|e| format!("its public key is not readable ({e})"))?;
        if named.id() != self.key_id {
            return Err(format!(
                "key id {} is not the id of the public key it carries ({})",
                self.key_id,
                named.id()
            ));
        }
        let key = if trusted.is_empty() {
            named
        } else {
            match trusted.iter().find(|k| k.id() == self.key_id) {
                Some(k) => k.clone(),
                None => {
                    return Err(format!(
                        "signed by key id {}, which is not a trusted key (trusted: {})",
                        self.key_id,
                        trusted
                            .iter()
                            .map(PublicKey::id)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        };
        let sig = B64
            .decode(&self.signature)
            .map_err(|_| "its signature is not base64".to_owned())?;
        let msg = Self::message(self.seq, &self.head, &self.time, &self.key_id);
        UnparsedPublicKey::new(&ED25519, &key.0)
            .verify(msg.as_bytes(), &sig)
            .map_err(|_| format!("signature does not verify with key id {}", self.key_id))
    }

    /// Reads a checkpoint as the second sink holds it: the sink's line
    /// (`{"audit_checkpoint": {…}}`), a log record with a `checkpoint`
    /// field, or the bare object. `arg` is a line (it starts with `{`) or
    /// a file, whose last non-empty line is taken.
    pub fn from_arg(arg: &str) -> Result<Checkpoint, String> {
        let text = if arg.trim_start().starts_with('{') {
            arg.to_owned()
        } else {
            let body = crate::files::read_to_string(Path::new(arg), 64 * crate::files::MIB)
                .map_err(|e| e.reason())?;
            body.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .ok_or_else(|| format!("{arg}: no checkpoint in it (empty)"))?
                .to_owned()
        };
        let v: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("a checkpoint is one JSON line: {e}"))?;
        let inner = v
            .get(SINK_FIELD)
            .or_else(|| v.get("checkpoint"))
            .cloned()
            .unwrap_or(v);
        serde_json::from_value(inner).map_err(|e| format!("not a checkpoint: {e}"))
    }
}

/// The field that holds the checkpoint in a second-sink line.
pub(super) const SINK_FIELD: &str = "audit_checkpoint";

/// An Ed25519 public key (32 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(Vec<u8>);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    /// `ed25519:<base64>` (as `jobkey audit public-key` prints it) or the
    /// bare base64.
    pub fn parse(s: &str) -> Result<PublicKey, String> {
        let b = s.trim();
        let b = b.strip_prefix(PUBLIC_KEY_PREFIX).unwrap_or(b);
        let bytes = B64
            .decode(b)
            .map_err(|_| "an Ed25519 public key is `ed25519:` and base64".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "an Ed25519 public key is 32 bytes; this one is {}",
                bytes.len()
            ));
        }
        Ok(PublicKey(bytes))
    }

    /// The first 8 bytes of its SHA-256, in hex.
    pub fn id(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, &self.0);
        crate::random::hex(&d.as_ref()[..8])
    }

    /// `ed25519:<base64>`.
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX}{}", B64.encode(&self.0))
    }
}

/// The checkpoint signing key (a PKCS#8 Ed25519 key pair in a file beside
/// the log).
pub(crate) struct CheckpointKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CheckpointKey({}, <private key redacted>)",
            self.public.id()
        )
    }
}

impl CheckpointKey {
    /// Reads the key file, or creates it (mode 0600) when it does not exist.
    pub(crate) fn load_or_create(path: &Path) -> Result<Self, AuditError> {
        let io = |e: std::io::Error| AuditError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        if !path.exists() {
            let doc =
                Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).map_err(|_| {
                    AuditError::Io {
                        path: path.display().to_string(),
                        reason: "no new checkpoint key: the random number generator failed".into(),
                    }
                })?;
            crate::files::create_private(path, doc.as_ref()).map_err(io)?;
        }
        Self::load(path)
    }

    /// Reads an existing key file.
    pub(crate) fn load(path: &Path) -> Result<Self, AuditError> {
        let bytes =
            crate::files::read_secret(path, 4 * crate::files::KIB).map_err(|e| AuditError::Io {
                path: path.display().to_string(),
                reason: e.reason(),
            })?;
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| AuditError::Io {
            path: path.display().to_string(),
            reason: "not an Ed25519 key in PKCS#8 (a checkpoint key)".into(),
        })?;
        let public = PublicKey(pair.public_key().as_ref().to_vec());
        Ok(CheckpointKey { pair, public })
    }

    pub(crate) fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs the chain's head: record `seq` whose hash is `head`, now.
    pub(crate) fn sign(&self, seq: u64, head: &str) -> Checkpoint {
        let time = super::timestamp();
        let key_id = self.public.id();
        let sig = self
            .pair
            .sign(Checkpoint::message(seq, head, &time, &key_id).as_bytes());
        Checkpoint {
            seq,
            head: head.to_owned(),
            time,
            key_id,
            public_key: B64.encode(&self.public.0),
            signature: B64.encode(sig.as_ref()),
        }
    }
}

/// Where the signing key lives when the config does not say: beside the log.
pub(crate) fn default_checkpoint_key_path(audit_path: &Path) -> PathBuf {
    let mut name = audit_path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "audit".into());
    name.push(".checkpoint-key");
    audit_path.with_file_name(name)
}

/// When checkpoints are written, and where else they go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// After this many records.
    pub every: u64,
    /// And at the first tick this long after the last one, if records
    /// were written since.
    pub interval: std::time::Duration,
    /// The signing key (`None`: beside the log).
    pub key_file: Option<PathBuf>,
    /// Print each checkpoint on stdout, one JSON line.
    pub stdout: bool,
    /// Append each checkpoint to this file, one JSON line, synced.
    pub file: Option<PathBuf>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            every: 1000,
            interval: std::time::Duration::from_secs(60),
            key_file: None,
            stdout: true,
            file: None,
        }
    }
}

/// The line the second sink gets.
#[derive(Serialize)]
struct SinkLine<'a> {
    audit_checkpoint: &'a Checkpoint,
    log: &'a str,
}

/// Sends a checkpoint to the second sink(s). A failure is logged, not
/// fatal: the checkpoint is in the log either way.
pub(super) fn emit(settings: &CheckpointSettings, log: &Path, cp: &Checkpoint) {
    let line = match serde_json::to_string(&SinkLine {
        audit_checkpoint: cp,
        log: &log.display().to_string(),
    }) {
        Ok(l) => l,
        Err(_) => return,
    };
    if settings.stdout {
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "could not print the audit checkpoint on stdout");
        }
    }
    if let Some(path) = &settings.file {
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let written = opts.open(path).and_then(|mut f| {
            f.write_all(format!("{line}\n").as_bytes())
                .and_then(|()| f.sync_data())
        });
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "could not append the audit checkpoint to the checkpoint file");
        }
    }
}
