//! The revocation handle: a random bearer secret given to the job with its
//! credentials, which revokes that one exchange. jobkey keeps only its
//! SHA-256 ([`HandleHash`]), so a copy of the exchange store revokes nothing.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::random::RandomUnavailable;
use crate::secret::SecretString;

/// A revocation handle: `jkr_` and 32 random bytes in base64url.
///
/// A secret: `Debug` elides it, it is zeroized on drop (it lives in a
/// [`SecretString`]), and it is not `Clone`.
pub(crate) struct RevocationHandle(SecretString);

impl RevocationHandle {
    /// Prefix of every handle; an ID token (base64url JSON, so `eyJ…`)
    /// never starts with it.
    pub(crate) const PREFIX: &'static str = "jkr_";

    /// A new handle. No randomness is an error, never a guessable handle.
    pub(crate) fn mint() -> Result<Self, RandomUnavailable> {
        let mut b = crate::random::bytes::<32>()?;
        let s = SecretString::new(format!("{}{}", Self::PREFIX, URL_SAFE_NO_PAD.encode(b)));
        zeroize::Zeroize::zeroize(&mut b);
        Ok(RevocationHandle(s))
    }

    /// Whether a bearer credential is meant as a handle (rather than an ID
    /// token). It says nothing about whether the handle is valid.
    pub(crate) fn is_handle(bearer: &str) -> bool {
        bearer.starts_with(Self::PREFIX)
    }

    /// The bearer credential presented to `POST /v1/revoke`, as a handle
    /// when [`is_handle`](Self::is_handle) says so; otherwise it is given
    /// back unchanged.
    pub(crate) fn from_bearer(bearer: SecretString) -> Result<Self, SecretString> {
        if Self::is_handle(bearer.expose_secret()) {
            Ok(RevocationHandle(bearer))
        } else {
            Err(bearer)
        }
    }

    /// What the exchange store keeps instead of the handle.
    pub(crate) fn sha256(&self) -> HandleHash {
        HandleHash(super::sha256_hex(self.0.expose_secret().as_bytes()))
    }

    /// The handle, for the response body and the job's mask list.
    pub(crate) fn as_secret(&self) -> &SecretString {
        &self.0
    }
}

impl fmt::Debug for RevocationHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RevocationHandle(<redacted>)")
    }
}

/// Lowercase hex SHA-256 of a [`RevocationHandle`]. Not a secret: it
/// cannot be turned back into the handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HandleHash(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_handle_has_the_prefix_and_is_recognised() {
        let h = RevocationHandle::mint().unwrap();
        let s = h.as_secret().expose_secret();
        assert!(s.starts_with("jkr_") && s.len() == 4 + 43, "{}", s.len());
        assert!(RevocationHandle::is_handle(s));
        assert_ne!(
            s,
            RevocationHandle::mint()
                .unwrap()
                .as_secret()
                .expose_secret()
        );
    }

    #[test]
    fn an_id_token_is_not_a_handle() {
        let token = SecretString::new("eyJhbGciOiJSUzI1NiJ9.e30.c2ln".into());
        let back = RevocationHandle::from_bearer(token).unwrap_err();
        assert_eq!(back.expose_secret(), "eyJhbGciOiJSUzI1NiJ9.e30.c2ln");
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_handle_and_debug_hides_it() {
        let h = RevocationHandle::mint().unwrap();
        let presented = RevocationHandle::from_bearer(SecretString::new(
            h.as_secret().expose_secret().to_owned(),
        ))
        .unwrap();
        assert_eq!(
            presented.sha256(),
            h.sha256(),
            "the same handle, the same hash"
        );
        assert_ne!(RevocationHandle::mint().unwrap().sha256(), h.sha256());
        let fixed = RevocationHandle::from_bearer(SecretString::new("jkr_abc".into())).unwrap();
        assert_eq!(
            serde_json::to_value(fixed.sha256()).unwrap(),
            serde_json::json!(super::super::sha256_hex(b"jkr_abc")),
            "stored as plain hex, as before"
        );
        let shown = format!("{h:?}");
        assert!(
            !shown.contains(&h.as_secret().expose_secret()[4..]),
            "{shown}"
        );
    }
}
