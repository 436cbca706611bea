//! The checked settings of one trusted issuer, as the config layer builds them.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use url::Url;

/// One issuer jobkey trusts. Built only from server configuration: neither a
/// token nor a policy can add an issuer or change where its keys come from.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// The name policies use (`github`, `gitlab`, ...).
    pub name: String,
    /// The exact `iss` value; compared byte for byte.
    pub issuer: String,
    /// The CI provider that runs this issuer (from the config's preset,
    /// its `provider`, or its exact well-known URL).
    pub provider: crate::provider::Provider,
    /// Where the verification keys come from.
    pub keys: KeySource,
    /// Allowed `alg` values (never `none`, never HMAC).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// The longest `exp - iat` accepted.
    pub max_lifetime: Duration,
    /// A PEM bundle to trust instead of the system roots when fetching keys
    /// (self-managed instances behind an internal CA).
    pub ca_file: Option<PathBuf>,
}

/// Where an issuer's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration`, then its `jwks_uri`.
    Discovery,
    /// A JWKS URL given in the configuration.
    JwksUrl(Url),
    /// A pinned JWKS document on disk: read at start-up, and read again
    /// (rate-limited) only when a token names a key id it lacks. Never
    /// fetched over the network.
    JwksFile(PathBuf),
}

/// Limits on key fetching, shared by all issuers.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Timeout of one HTTP request to an issuer.
    pub timeout: Duration,
    /// Largest discovery or JWKS document accepted.
    pub max_bytes: usize,
    /// Fetches for an unknown `kid` start at most once per this interval:
    /// tokens with random key ids cost one fetch per interval however many
    /// there are, and a token signed with a newly published key waits at
    /// most this long (if it is no longer than two seconds; a longer
    /// interval refuses such a token until it has passed).
    pub min_refetch_interval: Duration,
    /// Keys are refreshed in the background when three quarters of this age
    /// have passed (the old set is kept if the refresh fails); requests
    /// never wait for it.
    pub max_key_age: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        FetchSettings {
            timeout: Duration::from_secs(5),
            max_bytes: 256 * 1024,
            min_refetch_interval: Duration::from_secs(1),
            max_key_age: Duration::from_secs(3600),
        }
    }
}
