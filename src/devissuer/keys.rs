//! Signing keys of the dev issuer (ring only: RSA from a PKCS#8 PEM file,
//! P-256 generated in process).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::{Value, json};

/// Why a signing key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM file: {0}")]
    Pem(String),
    #[error("expected an RSA private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`): {0}")]
    Rsa(String),
    #[error("could not generate a key")]
    Generate,
}

enum Kind {
    Rsa(RsaKeyPair),
    Es256(EcdsaKeyPair),
}

/// A key the dev issuer signs with. Test material only.
pub struct SigningKey {
    kind: Kind,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({} {})", self.alg(), self.kid)
    }
}

impl SigningKey {
    /// An RSA key from PKCS#8 PEM text (`openssl genpkey -algorithm RSA`).
    pub fn rsa_from_pem(pem_text: &str, kid: &str) -> Result<Self, KeyError> {
        let p = pem::parse(pem_text).map_err(|e| KeyError::Pem(e.to_string()))?;
        let kp = RsaKeyPair::from_pkcs8(p.contents()).map_err(|e| KeyError::Rsa(e.to_string()))?;
        Ok(SigningKey {
            kind: Kind::Rsa(kp),
            kid: kid.to_owned(),
        })
    }

    /// A fresh P-256 key (ES256).
    pub fn generate_es256(kid: &str) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| KeyError::Generate)?;
        let kp =
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).map_err(|_| KeyError::Generate)?;
        Ok(SigningKey {
            kind: Kind::Es256(kp),
            kid: kid.to_owned(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> &'static str {
        match self.kind {
            Kind::Rsa(_) => "RS256",
            Kind::Es256(_) => "ES256",
        }
    }

    /// The public key as a JWK (with `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> Value {
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        match &self.kind {
            Kind::Rsa(kp) => {
                let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
                json!({
                    "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                    "n": b64(&c.n),
                    "e": b64(&c.e),
                })
            }
            Kind::Es256(kp) => {
                let point = kp.public_key().as_ref();
                let x = point.get(1..33).unwrap_or_default();
                let y = point.get(33..65).unwrap_or_default();
                json!({
                    "kty": "EC", "use": "sig", "alg": "ES256", "kid": self.kid, "crv": "P-256",
                    "x": b64(x), "y": b64(y),
                })
            }
        }
    }

    /// Raw signature of `message` with this key's algorithm.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.kind {
            Kind::Rsa(kp) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                // Signing with a valid key pair and a correctly sized buffer
                // only fails on an RNG failure; the signature stays zero then
                // and simply does not verify.
                let _ = kp.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut sig);
                sig
            }
            Kind::Es256(kp) => kp
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .unwrap_or_default(),
        }
    }

    /// A compact JWS of `header` and `payload`, exactly as given (tests use
    /// this to craft hostile tokens).
    pub fn sign_parts(&self, header: &Value, payload: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self.sign_bytes(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// A token with the standard header (`alg`, `typ`, `kid`).
    pub fn mint(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        self.sign_parts(&header, claims)
    }
}
