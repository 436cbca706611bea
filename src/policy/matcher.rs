//! Claim addresses and compiled claim conditions: what a condition is, how
//! it is checked against a token's claims, and how it is described to a
//! human. The semantics are documented in the `policy` module docs.

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Value};

use super::glob::{Glob, GlobError};
use super::parse::RawMatcher;

/// Largest compiled program of one `{regex: ...}` (bytes); larger patterns
/// are refused at compile time.
pub(crate) const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// Deepest nesting of groups/repetitions in a regex.
const REGEX_NEST_LIMIT: u32 = 32;
/// Deepest nesting of `not` / lists in one condition.
const MAX_DEPTH: usize = 4;

/// Where a claim lives: a top-level key (any string, dots and slashes
/// included), or a JSON pointer (RFC 6901) when the written name starts
/// with `/`. A one-segment pointer (`/ref`) is the same address as `ref`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClaimPath {
    /// As written in the policy; used in reports.
    pub written: String,
    /// Unescaped segments; never empty.
    pub segments: Vec<String>,
}

impl ClaimPath {
    pub(crate) fn parse(written: &str) -> Result<ClaimPath, String> {
        if written.is_empty() {
            return Err("a claim name is empty".into());
        }
        let segments = match written.strip_prefix('/') {
            None => vec![written.to_owned()],
            Some(pointer) => {
                let mut segments = Vec::new();
                for raw in pointer.split('/') {
                    segments.push(unescape_pointer(raw).ok_or_else(|| {
                        format!(
                            "claim `{written}`: a JSON pointer escapes `~` as `~0` and `/` as `~1`; `~` followed by anything else is invalid"
                        )
                    })?);
                }
                segments
            }
        };
        Ok(ClaimPath {
            written: written.to_owned(),
            segments,
        })
    }

    /// The top-level claim name when the address is one segment.
    pub(crate) fn top_level(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The value at this address; `None` when any step is missing. Array
    /// steps take a decimal index.
    pub(crate) fn lookup<'v>(&self, claims: &'v Map<String, Value>) -> Option<&'v Value> {
        let (first, rest) = self.segments.split_first()?;
        let mut value = claims.get(first)?;
        for segment in rest {
            value = match value {
                Value::Object(map) => map.get(segment)?,
                Value::Array(items) => {
                    if segment.starts_with('+') || (segment.len() > 1 && segment.starts_with('0')) {
                        return None;
                    }
                    items.get(segment.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
        Some(value)
    }
}

fn unescape_pointer(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// A compiled condition on one claim.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// The claim's text equals this.
    Exact(String),
    Glob(Glob),
    /// Anchored: the source as written, and `^(?:source)$` compiled.
    Regex {
        source: String,
        regex: Regex,
    },
    /// Non-empty; items are value matchers (no `present`, no nested list).
    AnyOf(Vec<Matcher>),
    /// The claim is present, scalar, and the inner matcher does not match.
    Not(Box<Matcher>),
    /// `true`: the claim exists and is not null. `false`: it does not.
    Present(bool),
    /// Deny rules: the claim is missing (or null, or not a scalar), or the
    /// inner matcher matches its text.
    MissingOr(Box<Matcher>),
}

/// The textual form a value condition is compared with: strings as they
/// are, numbers and booleans as their JSON text. Objects, arrays and null
/// have none and never match a value condition.
pub(crate) fn claim_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

impl Matcher {
    /// Compiles a raw matcher; the error says what to write instead.
    pub(crate) fn compile(raw: RawMatcher) -> Result<Matcher, String> {
        Self::compile_at(raw, 0, false)
    }

    fn compile_at(raw: RawMatcher, depth: usize, nested: bool) -> Result<Matcher, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "conditions nest at most {MAX_DEPTH} deep (not / lists); simplify it"
            ));
        }
        match raw {
            RawMatcher::Text(text) => Ok(Matcher::Exact(text)),
            RawMatcher::Glob(glob) => Glob::new(&glob).map(Matcher::Glob).map_err(|e| match e {
                GlobError::Empty => "the glob pattern is empty; write `{glob: \"*\"}` to accept any value, or a scalar for an exact match".to_owned(),
            }),
            RawMatcher::Regex(source) => compile_regex(source),
            RawMatcher::Present(present) if nested => Err(format!(
                "`present: {present}` is about the claim itself and cannot be inside `not` or a list; write `{{present: {}}}` as the condition",
                !present
            )),
            RawMatcher::Present(present) => Ok(Matcher::Present(present)),
            RawMatcher::MissingOr(_) if nested => Err(
                "`missing_or` is about the claim itself and cannot be inside `not`, a list or another `missing_or`; write it as the condition".to_owned(),
            ),
            RawMatcher::MissingOr(inner) => {
                let inner = Self::compile_at(*inner, depth + 1, true)?;
                Ok(Matcher::MissingOr(Box::new(inner)))
            }
            RawMatcher::AnyOf(items) if items.is_empty() => {
                Err("the list is empty and would never match; list at least one value".to_owned())
            }
            RawMatcher::AnyOf(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if matches!(item, RawMatcher::AnyOf(_)) {
                        return Err("a list inside a list; flatten it into one list".into());
                    }
                    out.push(Self::compile_at(item, depth + 1, true)?);
                }
                Ok(Matcher::AnyOf(out))
            }
            RawMatcher::Not(inner) => {
                let inner = Self::compile_at(*inner, depth + 1, true)?;
                if inner.matches_every_text() {
                    return Err(format!(
                        "`not` {} can never match: the inner condition accepts every value (write `{{present: false}}` to require that the claim is absent)",
                        inner.describe()
                    ));
                }
                Ok(Matcher::Not(Box::new(inner)))
            }
        }
    }

    /// Whether the condition holds for the claim's value (`None` = absent).
    pub(crate) fn holds(&self, value: Option<&Value>) -> bool {
        match self {
            Matcher::Present(want) => value.is_some_and(|v| !v.is_null()) == *want,
            Matcher::MissingOr(inner) => match value.and_then(claim_text) {
                Some(text) => inner.matches_text(&text),
                None => true,
            },
            _ => match value.and_then(claim_text) {
                Some(text) => self.matches_text(&text),
                None => false,
            },
        }
    }

    /// Whether a present scalar claim with this text satisfies the
    /// condition. `Present(true)` holds for any text, `Present(false)` for none.
    pub(crate) fn matches_text(&self, text: &str) -> bool {
        match self {
            Matcher::Exact(expected) => expected == text,
            Matcher::Glob(glob) => glob.matches(text),
            Matcher::Regex { regex, .. } => regex.is_match(text),
            Matcher::AnyOf(items) => items.iter().any(|m| m.matches_text(text)),
            Matcher::Not(inner) => !inner.matches_text(text),
            Matcher::Present(want) => *want,
            Matcher::MissingOr(inner) => inner.matches_text(text),
        }
    }

    /// Decidable "accepts every value": a glob of stars only, a list with
    /// one. (Regexes are not analysed.)
    fn matches_every_text(&self) -> bool {
        match self {
            Matcher::Glob(glob) => glob.as_str().chars().all(|c| c == '*'),
            Matcher::AnyOf(items) => items.iter().any(Matcher::matches_every_text),
            _ => false,
        }
    }

    /// The finite set of texts this condition admits, when it is one: an
    /// exact value, or a list of exact values. `None` for anything else.
    pub(crate) fn exact_values(&self) -> Option<Vec<&str>> {
        match self {
            Matcher::Exact(value) => Some(vec![value.as_str()]),
            Matcher::AnyOf(items) => items
                .iter()
                .map(|m| match m {
                    Matcher::Exact(value) => Some(value.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// Whether the condition names values the claim must have (exact, glob,
    /// regex, any-of); `not`, `present` and `missing_or` do not.
    pub(crate) fn is_positive(&self) -> bool {
        matches!(
            self,
            Matcher::Exact(_) | Matcher::Glob(_) | Matcher::Regex { .. } | Matcher::AnyOf(_)
        )
    }

    /// The expected value, readably: `"main"`, `glob "acme/*"`,
    /// `regex "v[0-9]+"`, `any of [...]`, `not "x"`, `present`, `absent`,
    /// `missing or "x"`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Matcher::Exact(expected) => format!("{expected:?}"),
            Matcher::Glob(glob) => format!("glob {:?}", glob.as_str()),
            Matcher::Regex { source, .. } => format!("regex {source:?}"),
            Matcher::AnyOf(items) => {
                let items: Vec<String> = items.iter().map(Matcher::describe).collect();
                format!("any of [{}]", items.join(", "))
            }
            Matcher::Not(inner) => format!("not {}", inner.describe()),
            Matcher::Present(true) => "present".to_owned(),
            Matcher::Present(false) => "absent".to_owned(),
            Matcher::MissingOr(inner) => format!("missing or {}", inner.describe()),
        }
    }
}

fn compile_regex(source: String) -> Result<Matcher, String> {
    if source.is_empty() {
        return Err("the regex is empty; write `{present: true}` or a pattern".into());
    }
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(4 * REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
    };
    // Compile the pattern alone first: a pattern that is valid on its own
    // has balanced groups, so wrapping it cannot be escaped with `a)|(b`.
    build(&source).map_err(|e| regex_error(&source, &e))?;
    let regex = build(&format!("^(?:{source})$")).map_err(|e| regex_error(&source, &e))?;
    Ok(Matcher::Regex { source, regex })
}

fn regex_error(source: &str, e: &regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(limit) => format!(
            "regex {source:?} compiles to more than {limit} bytes; simplify it (jobkey limits regexes so every match is fast)"
        ),
        other => {
            // The regex crate's message spans lines (a caret diagram); keep it on one.
            let text = other.to_string();
            let last = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid")
                .trim()
                .trim_start_matches("error: ")
                .to_owned();
            format!("invalid regex {source:?}: {last}")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(yaml: &str) -> Result<Matcher, String> {
        let raw: RawMatcher = serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?;
        Matcher::compile(raw)
    }

    #[test]
    fn claim_paths() {
        let claims = match json!({
            "ref": "main",
            "oidc.circleci.com/project-id": "p1",
            "a": {"b/c": {"d~e": "deep"}, "list": ["x", "y"]},
            "/odd": "slash",
        }) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        // (written, segments, value found)
        let table: &[(&str, &[&str], Option<Value>)] = &[
            ("ref", &["ref"], Some(json!("main"))),
            ("/ref", &["ref"], Some(json!("main"))),
            (
                "oidc.circleci.com/project-id",
                &["oidc.circleci.com/project-id"],
                Some(json!("p1")),
            ),
            (
                "/oidc.circleci.com~1project-id",
                &["oidc.circleci.com/project-id"],
                Some(json!("p1")),
            ),
            ("/a/b~1c/d~0e", &["a", "b/c", "d~e"], Some(json!("deep"))),
            ("/a/list/1", &["a", "list", "1"], Some(json!("y"))),
            ("/a/list/01", &["a", "list", "01"], None),
            ("/a/list/2", &["a", "list", "2"], None),
            ("/a/missing", &["a", "missing"], None),
            ("/ref/x", &["ref", "x"], None),
            ("/~1odd", &["/odd"], Some(json!("slash"))),
            ("a.b", &["a.b"], None),
        ];
        for (written, segments, want) in table {
            let p = ClaimPath::parse(written).expect(written);
            assert_eq!(p.segments, *segments, "{written}");
            assert_eq!(p.lookup(&claims).cloned(), *want, "{written}");
        }
        assert_eq!(
            ClaimPath::parse("/ref")
                .ok()
                .and_then(|p| p.top_level().map(str::to_owned)),
            Some("ref".into())
        );
        assert!(ClaimPath::parse("/a~2").is_err());
        assert!(ClaimPath::parse("/a~").is_err());
        assert!(ClaimPath::parse("").is_err());
    }

    /// Every matcher at its edges: (condition, claim value or absent, holds).
    #[test]
    fn matcher_edges() {
        let absent = None::<Value>;
        let table: Vec<(&str, Option<Value>, bool)> = vec![
            // exact and type coercion (textual)
            ("main", Some(json!("main")), true),
            ("main", Some(json!("main ")), false),
            ("main", absent.clone(), false),
            ("true", Some(json!(true)), true),
            ("true", Some(json!("true")), true),
            ("\"true\"", Some(json!(true)), true),
            ("true", Some(json!("TRUE")), false),
            ("true", Some(json!(1)), false),
            ("1", Some(json!(1)), true),
            ("1", Some(json!("1")), true),
            ("\"1\"", Some(json!(1)), true),
            ("1", Some(json!(true)), false),
            ("1", Some(json!(1.0)), false),
            ("1", Some(json!("01")), false),
            ("\"null\"", Some(json!(null)), false),
            // glob (the edge cases where go-glob, behind Vault's glob claims, is wrong)
            ("{glob: \"a*b\"}", Some(json!("a")), false),
            ("{glob: \"a*b\"}", Some(json!("ab")), true),
            ("{glob: \"a*b\"}", Some(json!("axxb")), true),
            ("{glob: \"a*b\"}", Some(json!("abx")), false),
            ("{glob: \"prod-*-eu\"}", Some(json!("prod-")), false),
            ("{glob: \"prod-*-eu\"}", Some(json!("prod--eu")), true),
            ("{glob: \"prod-*-eu\"}", Some(json!("prod-eu")), false),
            ("{glob: \"a*a\"}", Some(json!("a")), false),
            ("{glob: \"*\"}", Some(json!("")), true),
            ("{glob: \"*\"}", absent.clone(), false),
            ("{glob: \"*\"}", Some(json!(null)), false),
            ("{glob: \"*\"}", Some(json!(["x"])), false),
            ("{glob: \"acme/*\"}", Some(json!("acme/api/x")), true),
            ("{glob: \"acme/*\"}", Some(json!("acmeco/api")), false),
            ("{glob: \"v?\"}", Some(json!("v1")), false),
            ("{glob: \"v?\"}", Some(json!("v?")), true),
            // regex: anchored, linear
            ("{regex: \"v[0-9]+\"}", Some(json!("v12")), true),
            ("{regex: \"v[0-9]+\"}", Some(json!("v12-rc")), false),
            ("{regex: \"v[0-9]+\"}", Some(json!("xv12")), false),
            ("{regex: \"a|b\"}", Some(json!("ab")), false),
            ("{regex: \"a|b\"}", Some(json!("b")), true),
            ("{regex: \"[0-9]+\"}", Some(json!(892347)), true),
            ("{regex: \".*\"}", absent.clone(), false),
            ("{regex: \"(?i)main\"}", Some(json!("MAIN")), true),
            // any of
            ("[push, workflow_dispatch]", Some(json!("push")), true),
            (
                "[push, workflow_dispatch]",
                Some(json!("pull_request_target")),
                false,
            ),
            (
                "[1, {glob: \"9*\"}, {regex: \"x+\"}]",
                Some(json!("xxx")),
                true,
            ),
            ("[1, {glob: \"9*\"}]", Some(json!(93)), true),
            ("[1, {glob: \"9*\"}]", absent.clone(), false),
            // not: the claim must be present and scalar
            ("{not: self-hosted}", Some(json!("github-hosted")), true),
            ("{not: self-hosted}", Some(json!("self-hosted")), false),
            ("{not: self-hosted}", absent.clone(), false),
            ("{not: self-hosted}", Some(json!(null)), false),
            ("{not: [a, b]}", Some(json!("c")), true),
            ("{not: [a, b]}", Some(json!("b")), false),
            (
                "{not: {glob: \"refs/heads/*\"}}",
                Some(json!("refs/tags/v1")),
                true,
            ),
            ("{not: {not: x}}", Some(json!("x")), true),
            // present
            ("{present: true}", Some(json!("")), true),
            ("{present: true}", Some(json!(0)), true),
            ("{present: true}", Some(json!([])), true),
            ("{present: true}", Some(json!(null)), false),
            ("{present: true}", absent.clone(), false),
            ("{present: false}", absent.clone(), true),
            ("{present: false}", Some(json!(null)), true),
            ("{present: false}", Some(json!("x")), false),
            // missing_or: a missing (or unusable) claim, or a match
            ("{missing_or: self-hosted}", absent.clone(), true),
            ("{missing_or: self-hosted}", Some(json!(null)), true),
            ("{missing_or: self-hosted}", Some(json!({"a": 1})), true),
            ("{missing_or: self-hosted}", Some(json!(["x"])), true),
            (
                "{missing_or: self-hosted}",
                Some(json!("self-hosted")),
                true,
            ),
            (
                "{missing_or: self-hosted}",
                Some(json!("github-hosted")),
                false,
            ),
            ("{missing_or: [a, {glob: \"b*\"}]}", Some(json!("bc")), true),
            ("{missing_or: {not: a}}", Some(json!("a")), false),
            ("{missing_or: {not: a}}", Some(json!("b")), true),
        ];
        for (yaml, value, want) in &table {
            let matcher = m(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(
                matcher.holds(value.as_ref()),
                *want,
                "{yaml} against {value:?}"
            );
        }
    }

    #[test]
    fn invalid_conditions_are_refused() {
        let table: &[(&str, &str)] = &[
            ("{glob: \"\"}", "glob pattern is empty"),
            ("{regex: \"\"}", "regex is empty"),
            ("{regex: \"a(\"}", "invalid regex"),
            // Escaping the anchors through the wrapper is refused.
            ("{regex: \"a)|(b\"}", "invalid regex"),
            ("{regex: \"a{1000}{1000}\"}", "more than"),
            ("[]", "list is empty"),
            ("[a, [b]]", "list inside a list"),
            ("{not: {present: true}}", "cannot be inside"),
            ("[{present: false}]", "cannot be inside"),
            ("{not: {glob: \"*\"}}", "can never match"),
            ("{not: {missing_or: x}}", "cannot be inside"),
            ("[a, {missing_or: x}]", "cannot be inside"),
            ("{missing_or: {missing_or: x}}", "cannot be inside"),
            ("{missing_or: {present: true}}", "cannot be inside"),
            ("{not: [a, {glob: \"**\"}]}", "can never match"),
            (
                "{not: {not: {not: {not: {not: {not: x}}}}}}",
                "nest at most",
            ),
        ];
        for (yaml, fragment) in table {
            match m(yaml) {
                Err(e) => assert!(e.contains(fragment), "{yaml}: {e}"),
                Ok(m) => panic!("{yaml}: accepted as {m:?}"),
            }
        }
        for bad in [
            "{glob: a, regex: b}",
            "{}",
            "{glib: x}",
            "{present: [true]}",
        ] {
            assert!(m(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn descriptions() {
        let table: &[(&str, &str)] = &[
            ("main", "\"main\""),
            ("[push, {glob: \"v*\"}]", "any of [\"push\", glob \"v*\"]"),
            ("{regex: \"v[0-9]+\"}", "regex \"v[0-9]+\""),
            ("{not: self-hosted}", "not \"self-hosted\""),
            ("{present: true}", "present"),
            ("{present: false}", "absent"),
            ("{missing_or: self-hosted}", "missing or \"self-hosted\""),
        ];
        for (yaml, want) in table {
            assert_eq!(m(yaml).map(|m| m.describe()).as_deref(), Ok(*want));
        }
    }
}
