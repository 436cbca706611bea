//! Randomness and hex encoding, in one place (ring's `SystemRandom`).
//!
//! A failure to get randomness is an error, never silently zero bytes: a
//! revocation handle or a `$GITHUB_ENV` delimiter made of zeros would be
//! guessable.

use ring::rand::{SecureRandom, SystemRandom};

/// The operating system gave no randomness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub(crate) struct RandomUnavailable;

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], RandomUnavailable> {
    let mut b = [0u8; N];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| RandomUnavailable)?;
    Ok(b)
}

/// `N` random bytes as lowercase hex.
pub(crate) fn hex_token<const N: usize>() -> Result<String, RandomUnavailable> {
    bytes::<N>().map(|b| hex(&b))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_random() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        let a = hex_token::<16>().unwrap();
        let b = hex_token::<16>().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_ne!(bytes::<32>().unwrap(), [0u8; 32]);
    }
}
