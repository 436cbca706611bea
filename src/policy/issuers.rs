//! What the policy compiler knows about the configured issuers: their
//! names (what rules refer to), and, derived from the issuer URL, the
//! provider kind (for lint) and the tenant claims a rule must bind when the
//! issuer is shared by many organisations (Buildkite, CircleCI).

use crate::token::IssuerSettings;

/// The CI provider an issuer URL belongs to, when it can be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerKind {
    Github,
    Gitlab,
    Buildkite,
    Circleci,
    /// Unknown from the URL (a self-managed instance, a dev issuer).
    Other,
}

/// One configured issuer, as the policy compiler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyIssuer {
    /// The configured name rules use (`github`).
    pub name: String,
    pub kind: IssuerKind,
    /// Non-empty for a shared issuer: every allow rule must bind one of
    /// these top-level claims to exact values.
    pub tenant_claims: Vec<String>,
}

const BUILDKITE: &str = "https://agent.buildkite.com";
const CIRCLECI_PREFIX: &str = "https://oidc.circleci.com/";

impl PolicyIssuer {
    /// An issuer known by name only (no URL): kind `Other`, no tenant claims.
    pub fn named(name: impl Into<String>) -> PolicyIssuer {
        PolicyIssuer {
            name: name.into(),
            kind: IssuerKind::Other,
            tenant_claims: Vec::new(),
        }
    }

    /// Derives the kind and tenant claims from the issuer URL (`iss`).
    pub fn from_url(name: impl Into<String>, url: &str) -> PolicyIssuer {
        let url = url.trim_end_matches('/');
        let (kind, tenant_claims): (IssuerKind, &[&str]) = if url == BUILDKITE {
            (
                IssuerKind::Buildkite,
                &["organization_slug", "organization_id"],
            )
        } else if url.starts_with(CIRCLECI_PREFIX) {
            (IssuerKind::Circleci, &["oidc.circleci.com/org-id"])
        } else if url.starts_with("https://token.actions.githubusercontent.com")
            || url.ends_with("/_services/token")
        {
            (IssuerKind::Github, &[])
        } else if url == "https://gitlab.com" {
            (IssuerKind::Gitlab, &[])
        } else {
            (IssuerKind::Other, &[])
        };
        PolicyIssuer {
            name: name.into(),
            kind,
            tenant_claims: tenant_claims.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// The issuers of a server configuration.
    pub fn from_settings(issuers: &[IssuerSettings]) -> Vec<PolicyIssuer> {
        issuers
            .iter()
            .map(|i| PolicyIssuer::from_url(i.name.clone(), &i.issuer))
            .collect()
    }
}

impl From<&str> for PolicyIssuer {
    fn from(name: &str) -> Self {
        PolicyIssuer::named(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_tenants_from_urls() {
        let table: &[(&str, IssuerKind, &[&str])] = &[
            (
                "https://agent.buildkite.com",
                IssuerKind::Buildkite,
                &["organization_slug", "organization_id"],
            ),
            (
                "https://agent.buildkite.com/",
                IssuerKind::Buildkite,
                &["organization_slug", "organization_id"],
            ),
            (
                "https://oidc.circleci.com/org/1f4e",
                IssuerKind::Circleci,
                &["oidc.circleci.com/org-id"],
            ),
            (
                "https://token.actions.githubusercontent.com",
                IssuerKind::Github,
                &[],
            ),
            (
                "https://token.actions.githubusercontent.com/acme",
                IssuerKind::Github,
                &[],
            ),
            (
                "https://ghe.example.com/_services/token",
                IssuerKind::Github,
                &[],
            ),
            ("https://gitlab.com", IssuerKind::Gitlab, &[]),
            ("http://127.0.0.1:8401", IssuerKind::Other, &[]),
            (
                "https://agent.buildkite.com.evil.example",
                IssuerKind::Other,
                &[],
            ),
        ];
        for (url, kind, tenants) in table {
            let i = PolicyIssuer::from_url("x", url);
            assert_eq!(i.kind, *kind, "{url}");
            assert_eq!(i.tenant_claims, *tenants, "{url}");
        }
    }
}
