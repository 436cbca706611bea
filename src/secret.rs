//! Secret-bearing types.
//!
//! Every value that would hurt if it leaked (an ID token, a Vault token, a
//! credential read from Vault) lives in one of these types:
//! - `Debug` prints a placeholder, never the value;
//! - the bytes are zeroized when the value is dropped;
//! - there is no `Clone`, no `Display` and no `Serialize`: reading the value
//!   is an explicit call to `expose_secret()`, easy to find in review.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A UTF-8 secret string (a token, a password, a private key in PEM).
#[derive(Zeroize, ZeroizeOnDrop, Default, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value; the caller hands over ownership so no copy stays behind.
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret value. Every call site is a place a secret leaves this type.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = SecretString::new("hunter2-very-secret".to_owned());
        let shown = format!("{s:?} {:#?}", s);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }
}
