//! Name templates filled from the job's verified claims: certificate common
//! names and SANs, Kubernetes user names, SSH principals.
//!
//! Syntax: literal text with `{claim}` placeholders (claim names are
//! `[A-Za-z0-9_]+`); `{` and `}` have no other use. Templates are filled
//! only from verified token claims, never from the request body.
//!
//! A claim that the token lacks, or whose value is not a scalar, is an error
//! (the credential is refused), never an empty string.
//!
//! **One job identity, one name.** Two different claim values never fill
//! a template to the same name, so one job cannot be handed a name that
//! stands for another. Claim values are therefore never rewritten
//! (lowercasing would make `refs/heads/MAIN` and `refs/heads/main` one
//! name; replacing characters would make `acme-x/api` and `acme/x-api`
//! one): a value the context cannot hold as it is refuses the credential.
//! For the same reason a template uses at most one claim (it may repeat
//! it): with two, `{a}.{b}` is `x.y.z` both for `a = x/y, b = z` and for
//! `a = x, b = y/z`, whatever the separator, since every character a name
//! may hold may also come from a value.
//!
//! - [`NameKind::Dns`] (certificate names): the value may hold `[a-z0-9-]`
//!   and `/`, and each `/` becomes `.` (so `acme/api` becomes the labels
//!   `acme.api`). Upper-case letters are refused, not lowercased (DNS
//!   names compare without case, so `Acme` and `acme` would be one name),
//!   and so is a `.` in a claim value: that is what keeps the `/` to `.`
//!   mapping one-to-one. The rendered name must then be a valid DNS name
//!   (labels of 1 to 63 characters, no leading or trailing `-`, at most
//!   253 characters); a leading `*.` in the literal text is allowed for
//!   wildcard names.
//! - [`NameKind::Identity`] (Kubernetes user, SSH principal): the value is
//!   kept as is, case included, and may hold `[A-Za-z0-9._/@:+=-]`; the
//!   rendered name is at most 256 characters.

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
        let claims: Vec<&str> = t.claims().collect();
        if let Some(first) = claims.first()
            && let Some(other) = claims.iter().find(|c| *c != first)
        {
            return Err(format!(
                "template {text:?} uses two claims (`{first}` and `{other}`); a template may use one claim, so that two jobs never get the same name (with two, the values can be split differently and fill the template alike)"
            ));
        }
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
        NameKind::Dns => value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '/')
            .then(|| value.replace('/', ".")),
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
        // Two claims cannot fill one name one-to-one; one claim twice can.
        for kind in [NameKind::Dns, NameKind::Identity] {
            for t in ["{owner}.{repository}", "{owner}-{repository}", "{a}{b}"] {
                let e = Template::parse(t, kind).unwrap_err();
                assert!(e.contains("uses two claims"), "{t}: {e}");
            }
            assert!(Template::parse("{owner}.{owner}", kind).is_ok());
        }
    }

    /// Regression: values were lowercased for DNS names, so `MAIN`, `Main`
    /// and `main` got one certificate name. For each context, distinct
    /// values (case, `/` against `.`, separators) either render to
    /// distinct names or are refused; none is rewritten onto another.
    #[test]
    fn names_are_one_to_one_per_context() {
        let values = [
            "refs/heads/main",
            "refs/heads/MAIN",
            "refs/heads/Main",
            "refs.heads.main",
            "refs/heads.main",
            "acme-x/api",
            "acme/x-api",
            "acme/x_api",
            "Acme/api",
            "acme/api",
        ];
        // (context, template, what every accepted value must render to)
        // (value, the name it renders)
        type Renders<'a> = &'a [(&'a str, &'a str)];
        let table: &[(NameKind, &str, Renders)] = &[
            (
                NameKind::Dns,
                "{v}.deploy.internal",
                &[
                    ("refs/heads/main", "refs.heads.main.deploy.internal"),
                    ("acme-x/api", "acme-x.api.deploy.internal"),
                    ("acme/x-api", "acme.x-api.deploy.internal"),
                    ("acme/api", "acme.api.deploy.internal"),
                ],
            ),
            (
                NameKind::Identity,
                "repo:{v}",
                &[
                    ("refs/heads/main", "repo:refs/heads/main"),
                    ("refs/heads/MAIN", "repo:refs/heads/MAIN"),
                    ("refs/heads/Main", "repo:refs/heads/Main"),
                    ("refs.heads.main", "repo:refs.heads.main"),
                    ("refs/heads.main", "repo:refs/heads.main"),
                    ("acme-x/api", "repo:acme-x/api"),
                    ("acme/x-api", "repo:acme/x-api"),
                    ("acme/x_api", "repo:acme/x_api"),
                    ("Acme/api", "repo:Acme/api"),
                    ("acme/api", "repo:acme/api"),
                ],
            ),
        ];
        for (kind, text, accepted) in table {
            let t = Template::parse(text, *kind).unwrap();
            let mut seen: Vec<(String, &str)> = Vec::new();
            for v in values {
                let mut c = Map::new();
                c.insert("v".into(), json!(v));
                let got = t.render(&c);
                let want = accepted.iter().find(|(value, _)| *value == v);
                match (want, got) {
                    (Some((_, name)), Ok(got)) => {
                        assert_eq!(got, *name, "{kind:?} {v}");
                        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == got) {
                            panic!("{kind:?}: {v} and {other} both render {got}");
                        }
                        seen.push((got, v));
                    }
                    (None, Err(TemplateError::BadValue { claim, .. })) => assert_eq!(claim, "v"),
                    (want, got) => panic!("{kind:?} {v}: want {want:?}, got {got:?}"),
                }
            }
            assert_eq!(seen.len(), accepted.len(), "{kind:?}");
        }
    }

    #[test]
    fn dns_rendering_table() {
        let c = claims();
        let table: &[(&str, Result<&str, &str>)] = &[
            (
                "{repository}.deploy.internal",
                Ok("acme.api.deploy.internal"),
            ),
            ("{owner}.example", Err("characters not allowed")),
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
