//! Who is asking: the token verified (or, when it is refused, read without
//! verification for the audit), the claims the audit keeps, and the run
//! that owns an exchange.

use serde_json::{Value, json};

use super::audited::Stop;
use super::{ApiError, AppState};
use crate::audit::{EventBuilder, Identity, Stage};
use crate::exchanges::Owner;
use crate::secret::SecretString;
use crate::token::{VerifiedToken, unverified_claims};

/// The claims copied into the audit record's identity (scalars only): who
/// ran what, where. The one list; a refused token's claims are read
/// through it too.
pub(super) fn audited_claims() -> &'static [&'static str] {
    &[
        "iss",
        "sub",
        "jti",
        "repository",
        "repository_id",
        "repository_owner",
        "repository_owner_id",
        "project_path",
        "project_id",
        "namespace_path",
        "namespace_id",
        "ref",
        "ref_type",
        "ref_protected",
        "sha",
        "environment",
        "event_name",
        "workflow_ref",
        "job_workflow_ref",
        "runner_environment",
        "actor",
        "user_login",
        "run_id",
        "run_attempt",
        "pipeline_id",
        "pipeline_source",
        "job_id",
        // Buildkite: the organisation (shared issuer), pipeline and build.
        "organization_slug",
        "organization_id",
        "pipeline_slug",
        "build_number",
        "build_branch",
        "step_key",
    ]
}

/// The job's identity for revocation by ID token: issuer name, `sub` and
/// the run (GitHub `run_id`, GitLab `pipeline_id`). `None` when any is
/// missing; then only the handle can revoke. The one rule for "the same
/// run".
pub(super) fn owner(v: &VerifiedToken) -> Option<Owner> {
    let text = |name: &str| match v.claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(n @ Value::Number(_)) => Some(n.to_string()),
        _ => None,
    };
    Some(Owner {
        issuer: v.issuer.clone(),
        sub: text("sub")?,
        run: text("run_id").or_else(|| text("pipeline_id"))?,
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
            event.identity(Identity::verified(&v.issuer, &v.claims, audited_claims()));
            Ok(v)
        }
        Err(e) => {
            let claims = unverified_claims(token.expose_secret(), audited_claims());
            event.identity(Identity::unverified(&claims, audited_claims()));
            let reason = json!({"code": e.code(), "message": e.to_string()});
            Err(Stop::new(Stage::Token, ApiError::Token(e), &reason))
        }
    }
}
