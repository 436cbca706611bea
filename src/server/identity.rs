//! Who is asking: the token verified (every claim goes into the audit),
//! or, when it is refused, read without verification (its provider-audited
//! claims only, bounded), and the run
//! that owns an exchange.

use serde_json::{Value, json};

use super::audited::Stop;
use super::{ApiError, AppState};
use crate::audit::{EventBuilder, Identity, Stage};
use crate::exchanges::Owner;
use crate::provider::Provider;
use crate::secret::SecretString;
use crate::token::{VerifiedToken, unverified_claims};

/// The job's identity for revocation by ID token: issuer name, `sub` and
/// the run, as the issuer's provider defines one run (GitHub `run_id`,
/// GitLab `pipeline_id`, Buildkite the organisation, pipeline and build
/// number: one build, never the whole pipeline). `None` when any is missing
/// or the provider has no run claims (a `generic` issuer); then only the
/// handle can revoke.
pub(super) fn owner(v: &VerifiedToken) -> Option<Owner> {
    let sub = match v.claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return None,
    };
    Some(Owner {
        issuer: v.issuer.clone(),
        sub,
        run: v.provider.run_of(&v.claims)?,
    })
}

/// Verifies the ID token and puts the caller's identity into `event`
/// either way: the verified claims, or a refused token's claims read
/// without verification (`verified: false`, bounded). The token is
/// dropped (and zeroized) here.
pub(super) async fn verify(
    st: &AppState,
    token: SecretString,
    event: &mut EventBuilder,
) -> Result<VerifiedToken, Stop> {
    match st.verifier.verify(token.expose_secret()).await {
        Ok(v) => {
            event.identity(Identity::verified(&v.issuer, &v.claims));
            Ok(v)
        }
        Err(e) => {
            // Whose token it claims to be is not known: every provider's
            // audited claims, read without verification and bounded.
            let names = Provider::Generic.audited_claims();
            let claims = unverified_claims(token.expose_secret(), names);
            event.identity(Identity::unverified(&claims, names));
            let reason = json!({"code": e.code(), "message": e.to_string()});
            Err(Stop::new(Stage::Token, ApiError::Token(e), &reason))
        }
    }
}
