//! A `jsonwebtoken` crypto provider backed by `ring`.
//!
//! jsonwebtoken 11 ships providers for aws-lc-rs and RustCrypto only; this one
//! keeps the process on a single crypto stack (ring, which rustls uses too).
//! It verifies only: jobkey never signs with jsonwebtoken (the dev issuer signs
//! with ring directly), and it refuses every HMAC algorithm outright, so a
//! token signed with an RSA public key as an HMAC secret cannot verify.

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey};
use ring::signature::{
    self as ring_sig, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm,
};

/// The provider; install it once with [`install`].
static RING_PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: no_signer,
    verifier_factory: ring_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs the ring provider as jsonwebtoken's process default. Idempotent:
/// a second call (tests, several servers in one process) is a no-op.
pub(super) fn install() {
    let _ = RING_PROVIDER.install_default();
}

fn no_signer(_: &Algorithm, _: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Err(ErrorKind::UnsupportedAlgorithm.into())
}

enum Scheme {
    Rsa(&'static ring_sig::RsaParameters),
    Other(&'static dyn VerificationAlgorithm),
}

/// The ring algorithm for a JWS `alg`. HMAC and anything unknown: `None`.
fn scheme(alg: Algorithm) -> Option<Scheme> {
    use Algorithm::*;
    Some(match alg {
        RS256 => Scheme::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
        RS384 => Scheme::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
        RS512 => Scheme::Rsa(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
        PS256 => Scheme::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA256),
        PS384 => Scheme::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA384),
        PS512 => Scheme::Rsa(&ring_sig::RSA_PSS_2048_8192_SHA512),
        // JWS ECDSA signatures are the fixed-width r||s form; ring's FIXED
        // algorithms refuse a DER-encoded signature, as RFC 7518 requires.
        ES256 => Scheme::Other(&ring_sig::ECDSA_P256_SHA256_FIXED),
        ES384 => Scheme::Other(&ring_sig::ECDSA_P384_SHA384_FIXED),
        EdDSA => Scheme::Other(&ring_sig::ED25519),
        _ => return None,
    })
}

struct RingVerifier {
    alg: Algorithm,
    key: DecodingKey,
}

fn ring_verifier(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let Some(scheme) = scheme(*alg) else {
        return Err(ErrorKind::InvalidAlgorithm.into());
    };
    if key.family() != alg.family() {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    if let (Scheme::Other(_), DecodingKeyKind::RsaModulusExponent { .. }) = (&scheme, key.kind()) {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RingVerifier {
        alg: *alg,
        key: key.clone(),
    }))
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let ok = match (scheme(self.alg), self.key.kind()) {
            (Some(Scheme::Rsa(params)), DecodingKeyKind::RsaModulusExponent { n, e }) => {
                RsaPublicKeyComponents { n, e }.verify(params, msg, sig)
            }
            (Some(Scheme::Rsa(params)), DecodingKeyKind::SecretOrDer(der)) => {
                UnparsedPublicKey::new(params, der).verify(msg, sig)
            }
            (Some(Scheme::Other(alg)), DecodingKeyKind::SecretOrDer(raw)) => {
                UnparsedPublicKey::new(alg, raw).verify(msg, sig)
            }
            _ => Err(ring::error::Unspecified),
        };
        ok.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}
