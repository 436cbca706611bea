//! The job's SSH public key (checked before it is sent to Vault) and the
//! validity window of the certificate Vault returns.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Longest public key line accepted.
const MAX_KEY: usize = 16 * 1024;

/// `TYPE BASE64 [comment]` on one line, a known key type whose blob
/// starts with that type.
pub(crate) fn check_public_key(key: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`ssh_public_key` {why}; send one line like `ssh-ed25519 AAAA… comment`"
        ))
    };
    if key.len() > MAX_KEY {
        return bad("is too long");
    }
    if key.chars().any(|c| c.is_control()) {
        return bad("must be a single line");
    }
    let mut parts = key.split(' ');
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return bad("is not an OpenSSH public key");
    };
    const TYPES: &[&str] = &[
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    if !TYPES.contains(&kind) {
        return bad("has an unsupported key type");
    }
    let Ok(blob) = STANDARD.decode(b64) else {
        return bad("is not valid base64");
    };
    match read_string(&blob, 0) {
        Some((t, _)) if t == kind.as_bytes() => Ok(()),
        _ => bad("does not match its key type"),
    }
}

fn read_u32(b: &[u8], at: usize) -> Option<(u32, usize)> {
    let s = b.get(at..at + 4)?;
    Some((u32::from_be_bytes([s[0], s[1], s[2], s[3]]), at + 4))
}

fn read_u64(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some((u64::from_be_bytes(a), at + 8))
}

fn read_string(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let (n, at) = read_u32(b, at)?;
    let end = at.checked_add(n as usize)?;
    Some((b.get(at..end)?, end))
}

/// The `valid before` time (Unix seconds) of an OpenSSH certificate line
/// (PROTOCOL.certkeys), or `None` for a key type it does not know.
pub(crate) fn valid_before(cert_line: &str) -> Option<u64> {
    let b64 = cert_line.split_whitespace().nth(1)?;
    let blob = STANDARD.decode(b64).ok()?;
    let (kind, mut at) = read_string(&blob, 0)?;
    (_, at) = read_string(&blob, at)?; // nonce
    let key_strings = match kind {
        b"ssh-ed25519-cert-v01@openssh.com" => 1,
        b"ssh-rsa-cert-v01@openssh.com" => 2,
        k if k.starts_with(b"ecdsa-sha2-") => 2,
        _ => return None,
    };
    for _ in 0..key_strings {
        (_, at) = read_string(&blob, at)?;
    }
    (_, at) = read_u64(&blob, at)?; // serial
    (_, at) = read_u32(&blob, at)?; // type
    (_, at) = read_string(&blob, at)?; // key id
    (_, at) = read_string(&blob, at)?; // principals
    (_, at) = read_u64(&blob, at)?; // valid after
    let (before, _) = read_u64(&blob, at)?;
    Some(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(v: &[u8]) -> Vec<u8> {
        let mut out = (v.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(v);
        out
    }

    #[test]
    fn public_keys_are_checked() {
        let blob = STANDARD.encode([string(b"ssh-ed25519"), string(&[7u8; 32])].concat());
        assert_eq!(
            check_public_key(&format!("ssh-ed25519 {blob} me@host")),
            Ok(())
        );
        for bad in [
            String::new(),
            "ssh-ed25519".into(),
            format!("ssh-rsa {blob}"),
            format!("ssh-ed25519 {blob}\nssh-ed25519 {blob}"),
            "ssh-dss AAAA".into(),
            "ssh-ed25519 !!!".into(),
            format!("ssh-ed25519 {}", "A".repeat(MAX_KEY)),
        ] {
            assert!(check_public_key(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn valid_before_is_read_from_a_certificate() {
        let blob = [
            string(b"ssh-ed25519-cert-v01@openssh.com"),
            string(b"nonce"),
            string(&[1u8; 32]),
            7u64.to_be_bytes().to_vec(),
            1u32.to_be_bytes().to_vec(),
            string(b"key-id"),
            string(&string(b"deploy")),
            100u64.to_be_bytes().to_vec(),
            200u64.to_be_bytes().to_vec(),
        ]
        .concat();
        let line = format!("ssh-ed25519-cert-v01@openssh.com {}", STANDARD.encode(blob));
        assert_eq!(valid_before(&line), Some(200));
        assert_eq!(valid_before("ssh-ed25519-cert-v01@openssh.com AAAA"), None);
        assert_eq!(valid_before("garbage"), None);
    }
}
