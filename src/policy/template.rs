//! Name templates filled from the job's verified claims: certificate common
//! names and SANs, Kubernetes user names, SSH principals.
//!
//! Syntax: literal text with `{claim}` placeholders (claim names are
//! `[A-Za-z0-9_]+`); `{` and `}` have no other use. Templates are filled
//! only from verified token claims, never from the request body.
//!
//! A claim that the token lacks, or whose value is not a scalar, is an error
//! (the credential is refused), never an empty string. Claim values are not
//! rewritten, because rewriting maps different values to one name
//! (`acme-x/api` and `acme/x-api` would both become `acme-x-api`): a value
//! with a character the context does not allow is refused instead.
//!
//! - [`NameKind::Dns`] (certificate names): the value is lowercased; it may
//!   hold `[a-z0-9-]` and `/`, and each `/` becomes `.` (so
//!   `acme/api` becomes the labels `acme.api`). A `.` in a claim value is
//!   refused: it is what keeps that mapping one-to-one. The rendered name
//!   must then be a valid DNS name (labels of 1 to 63 characters, no
//!   leading or trailing `-`, at most 253 characters); a leading `*.` in the
//!   literal text is allowed for wildcard names.
//! - [`NameKind::Identity`] (Kubernetes user, SSH principal): the value is
//!   kept as is and may hold `[A-Za-z0-9._/@:+=-]`; the rendered name is at
//!   most 256 characters.

use std::fmt;

use serde_json::{Map, Value};

/// Where a rendered name is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Dns,
    Identity,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
enum Part {
    Lit(String),
    Claim(String),
}

/// A parsed template. Displays as written.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub struct Template {
    parts: Vec<Part>,
    kind: NameKind,
}

impl From<Template> for String {
    fn from(t: Template) -> String {
        t.to_string()
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Lit(s) => f.write_str(s)?,
                Part::Claim(c) => write!(f, "{{{c}}}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?}, {:?})", self.to_string(), self.kind)
    }
}

/// Why a template could not be filled. Names the claim, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the token has no `{claim}` claim, which the credential's name template needs")]
    MissingClaim { claim: String },
    #[error("the `{claim}` claim is not a string, number or boolean")]
    NotScalar { claim: String },
    #[error("the `{claim}` claim holds characters not allowed in a {context}")]
    BadValue {
        claim: String,
        context: &'static str,
    },
    #[error("the filled-in name is not a valid {context}")]
    BadName { context: &'static str },
}

impl Template {
    /// Parses `text`. Errors are for policy authors.
    pub fn parse(text: &str, kind: NameKind) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            if rest[i..].starts_with('}') {
                return Err(format!("unmatched `}}` in template {text:?}"));
            }
            let after = &rest[i + 1..];
            let Some(end) = after.find('}') else {
                return Err(format!("unclosed `{{` in template {text:?}"));
            };
            let claim = &after[..end];
            if claim.is_empty() || !claim.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`{{{claim}}}` in template {text:?} is not a claim name (letters, digits, `_`)"
                ));
            }
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Claim(claim.to_owned()));
            rest = &after[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        if parts.is_empty() {
            return Err("the template is empty".into());
        }
        let t = Template { parts, kind };
        // The literal text alone must already fit the context (claims
        // replaced by a harmless stand-in).
        let probe: String = t
            .parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.as_str(),
                Part::Claim(_) => "x",
            })
            .collect();
        if !valid_name(&probe, kind) {
            return Err(format!(
                "template {text:?} cannot produce a valid {}",
                context(kind)
            ));
        }
        Ok(t)
    }

    /// The claims the template uses.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Claim(c) => Some(c.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Fills the template from verified claims.
    pub fn render(&self, claims: &Map<String, Value>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Claim(c) => {
                    let text = match claims.get(c) {
                        None => return Err(TemplateError::MissingClaim { claim: c.clone() }),
                        Some(Value::String(s)) => s.clone(),
                        Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                        Some(_) => return Err(TemplateError::NotScalar { claim: c.clone() }),
                    };
                    out.push_str(&fill(&text, self.kind).ok_or_else(|| {
                        TemplateError::BadValue {
                            claim: c.clone(),
                            context: context(self.kind),
                        }
                    })?);
                }
            }
        }
        if valid_name(&out, self.kind) {
            Ok(out)
        } else {
            Err(TemplateError::BadName {
                context: context(self.kind),
            })
        }
    }
}

fn context(kind: NameKind) -> &'static str {
    match kind {
        NameKind::Dns => "DNS name",
        NameKind::Identity => "identity name",
    }
}

/// A claim value as it goes into a name, or `None` when refused.
fn fill(value: &str, kind: NameKind) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    match kind {
        NameKind::Dns => {
            let lower = value.to_ascii_lowercase();
            lower
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '/')
                .then(|| lower.replace('/', "."))
        }
        NameKind::Identity => value.chars().all(identity_char).then(|| value.to_owned()),
    }
}

fn identity_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._/@:+=-".contains(c)
}

fn valid_name(name: &str, kind: NameKind) -> bool {
    match kind {
        NameKind::Identity => {
            !name.is_empty() && name.len() <= 256 && name.chars().all(identity_char)
        }
        NameKind::Dns => {
            let body = name.strip_prefix("*.").unwrap_or(name);
            !body.is_empty()
                && name.len() <= 253
                && body.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                        && label
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims() -> Map<String, Value> {
        match json!({
            "repository": "acme/api", "owner": "Acme", "run_id": 42, "flag": true,
            "nested": {"a": 1}, "dotted": "acme/x.api", "evil": "a\nb", "blank": "",
            "star": "*", "hostile": "api.evil.com", "slashy": "a//b"
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn parse_errors_are_explained() {
        for (t, want) in [
            ("", "empty"),
            ("{repository", "unclosed"),
            ("a}b", "unmatched"),
            ("{}", "not a claim name"),
            ("{repo-name}", "not a claim name"),
            ("{a.b}", "not a claim name"),
            ("Bad_Host.{repository}", "cannot produce a valid DNS name"),
            ("x..y", "cannot produce"),
        ] {
            let e = Template::parse(t, NameKind::Dns).unwrap_err();
            assert!(e.contains(want), "{t:?}: {e}");
        }
        assert!(Template::parse("repo:{repository} x", NameKind::Identity).is_err());
    }

    #[test]
    fn dns_rendering_table() {
        let c = claims();
        let table: &[(&str, Result<&str, &str>)] = &[
            (
                "{repository}.deploy.internal",
                Ok("acme.api.deploy.internal"),
            ),
            ("{owner}.example", Ok("acme.example")),
            ("r{run_id}.x", Ok("r42.x")),
            ("{flag}.x", Ok("true.x")),
            ("*.{repository}.x", Ok("*.acme.api.x")),
            // Refused, never rewritten:
            ("{dotted}.x", Err("characters not allowed")),
            ("{evil}.x", Err("characters not allowed")),
            ("{blank}.x", Err("characters not allowed")),
            ("{star}.x", Err("characters not allowed")),
            ("{hostile}.x", Err("characters not allowed")),
            ("{slashy}.x", Err("not a valid DNS name")),
            ("{nested}.x", Err("not a string")),
            ("{missing}.x", Err("has no `missing` claim")),
        ];
        for (t, want) in table {
            let got = Template::parse(t, NameKind::Dns)
                .unwrap()
                .render(&c)
                .map_err(|e| e.to_string());
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{t}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{t}: {g}"),
                _ => panic!("{t}: {got:?}"),
            }
        }
        // The mapping is one-to-one: the dotted lookalike cannot collide.
        let mut other = claims();
        other.insert("repository".into(), json!("acme.api"));
        assert!(
            Template::parse("{repository}.x", NameKind::Dns)
                .unwrap()
                .render(&other)
                .is_err()
        );
    }

    #[test]
    fn identity_rendering_table() {
        let c = claims();
        let t = Template::parse("repo:{repository}", NameKind::Identity).unwrap();
        assert_eq!(t.render(&c).unwrap(), "repo:acme/api");
        assert_eq!(t.to_string(), "repo:{repository}");
        assert_eq!(t.claims().collect::<Vec<_>>(), ["repository"]);
        for bad in ["{evil}", "{star}", "{blank}"] {
            let e = Template::parse(bad, NameKind::Identity)
                .unwrap()
                .render(&c)
                .unwrap_err();
            assert!(matches!(e, TemplateError::BadValue { .. }), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "no value in the message");
        }
    }
}
