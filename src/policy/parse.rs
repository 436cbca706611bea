//! Raw, strictly parsed policy files: serde types that mirror the YAML and
//! nothing more. Every struct denies unknown fields; values that need a
//! source position for later errors are wrapped in [`Spanned`].
//!
//! Nothing here decides whether a policy makes sense: that is `compile.rs`.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::credential;
use super::error::PolicyError;

/// A jobkey policy file: one environment (the file name is the environment).
///
/// `jobkey policy schema` prints this schema; `schema/policy.schema.json`
/// is the shipped copy. Semantics: README "The policy format".
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "jobkey policy file")]
pub(crate) struct RawFile {
    /// Free text for humans.
    #[serde(default)]
    #[allow(dead_code)] // documentation for humans; kept so the field is accepted
    pub description: Option<String>,
    /// Whether a denial tells the job which claims failed (`failed_claims`,
    /// and which kind of denial it was). Default true. With false, every
    /// denial in this environment is `403 policy_denied` with one message,
    /// so a job cannot guess a claim it controls (`environment`, `ref`) by
    /// watching the answer change; the audit log keeps the detail.
    #[serde(default)]
    pub report_failed_claims: Option<bool>,
    /// Ceiling on the TTL of every credential handed out in this environment.
    #[serde(default)]
    #[schemars(with = "Option<Ttl>")]
    pub max_ttl: Option<Spanned<Ttl>>,
    /// Conditions every allow rule of this file inherits (AND), e.g.
    /// `{ref_protected: "true", repository_id: {present: true}}`.
    #[serde(default)]
    #[schemars(with = "Option<OrderedMap<RawMatcher>>")]
    pub require: Option<OrderedMap<Spanned<RawMatcher>>>,
    /// `true`: this environment's jobs may run on self-hosted runners, so
    /// `jobkey policy lint` does not ask its allow rules to exclude them
    /// (JK006). Decisions do not change.
    #[serde(default)]
    pub self_hosted_runners_ok: Option<bool>,
    /// What this environment can hand out, by name.
    #[serde(default)]
    #[schemars(with = "Option<OrderedMap<RawCredential>>")]
    pub credentials: Option<OrderedMap<Spanned<RawCredential>>>,
    /// Allow and deny rules; deny wins.
    #[serde(default)]
    #[schemars(with = "Option<Vec<RawRule>>")]
    pub rules: Option<Vec<Spanned<RawRule>>>,
}

/// A credential the environment offers. Exactly one kind field must be
/// present (the kinds are in `credential.rs`); `compile.rs` checks that.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCredential {
    #[serde(default)]
    #[allow(dead_code)]
    pub description: Option<String>,
    #[serde(default)]
    pub kv: Option<RawKv>,
    #[serde(default)]
    pub database: Option<credential::RawDatabase>,
    #[serde(default)]
    pub certificate: Option<credential::RawCertificate>,
    #[serde(default)]
    pub kubeconfig: Option<credential::RawKubeconfig>,
    #[serde(default)]
    pub vault_token: Option<credential::RawVaultToken>,
    #[serde(default)]
    pub ssh_certificate: Option<credential::RawSsh>,
    #[serde(default)]
    pub rabbitmq: Option<credential::RawRabbitmq>,
    /// Deliver response-wrapped (single-use token), default wrap TTL.
    #[serde(default)]
    pub wrap: Option<bool>,
    /// Deliver response-wrapped with this wrap TTL.
    #[serde(default)]
    #[schemars(with = "Option<Ttl>")]
    pub wrap_ttl: Option<Spanned<Ttl>>,
    #[schemars(with = "Ttl")]
    pub ttl: Spanned<Ttl>,
}

/// A KV v2 secret.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKv {
    pub mount: String,
    pub path: String,
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

/// `allow` (the default) or `deny`; a deny rule that applies refuses the
/// whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// One rule: when the token comes from `issuer` and every claim condition
/// (plus the file's `require`, for allow rules) holds, it applies.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    /// Unique within the file; reported in decisions and the audit log.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub effect: Option<Effect>,
    /// A configured issuer NAME (server config), never a URL.
    #[schemars(with = "String")]
    pub issuer: Spanned<String>,
    /// Claim name (or JSON pointer starting with `/`) to condition; all must hold.
    #[serde(default)]
    #[schemars(with = "Option<OrderedMap<RawMatcher>>")]
    pub claims: Option<OrderedMap<Spanned<RawMatcher>>>,
    /// Allow rules: the credentials (names from `credentials:`) granted.
    #[serde(default)]
    #[schemars(with = "Option<Vec<String>>")]
    pub grant: Option<Vec<Spanned<String>>>,
    /// Allow rules: narrows the TTL of what this rule grants.
    #[serde(default)]
    #[schemars(with = "Option<Ttl>")]
    pub ttl: Option<Spanned<Ttl>>,
}

/// A duration written the humantime way (`10m`, `1h 30m`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(transparent)]
pub(crate) struct Ttl(#[serde(with = "humantime_serde")] pub Duration);

impl JsonSchema for Ttl {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: 30s, 10m, 1h, 1h 30m (humantime).",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$"
        })
    }
}

impl<V: JsonSchema> JsonSchema for OrderedMap<V> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Map_of_{}", V::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": generator.subschema_for::<V>(),
        })
    }
}

impl JsonSchema for RawMatcher {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Matcher".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let me = generator.subschema_for::<RawMatcher>();
        json_schema!({
            "description": "A claim condition. Scalars compare the claim's text (so true, \"true\" match each other, 1 and \"1\" likewise); a list is any-of; a claim missing from the token never matches (except {present: false} and, in deny rules, {missing_or: ...}).",
            "anyOf": [
                {"type": ["string", "integer", "boolean"], "description": "exact: the claim's text equals this"},
                {"type": "object", "properties": {"glob": {"type": "string", "minLength": 1, "description": "whole-value glob; `*` is any run of characters including `/`"}}, "required": ["glob"], "additionalProperties": false},
                {"type": "object", "properties": {"regex": {"type": "string", "minLength": 1, "description": "regular expression (Rust regex syntax), anchored: must match the whole value"}}, "required": ["regex"], "additionalProperties": false},
                {"type": "object", "properties": {"not": me.clone()}, "required": ["not"], "additionalProperties": false},
                {"type": "object", "properties": {"present": {"type": "boolean"}}, "required": ["present"], "additionalProperties": false},
                {"type": "object", "properties": {"missing_or": me.clone()}, "required": ["missing_or"], "additionalProperties": false, "description": "deny rules only: holds when the claim is missing (or null, or not a scalar) or its value matches the inner condition, so the deny rule also refuses tokens without the claim"},
                {"type": "array", "minItems": 1, "items": me, "description": "any of these"}
            ]
        })
    }
}

/// The JSON Schema of a policy file, pretty-printed with a final newline.
pub(crate) fn json_schema_text() -> String {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<RawFile>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

/// A YAML mapping kept in file order (so "the first condition that failed"
/// and "the first credential" mean what the author sees). Duplicate keys are
/// rejected by the YAML layer.
#[derive(Debug)]
pub(crate) struct OrderedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = OrderedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of names to values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    let value = map.next_value::<V>()?;
                    entries.push((key, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

/// The right-hand side of a claim condition, as written. See the `policy`
/// module docs for the semantics; `compile.rs` checks the shapes (no lists
/// in lists, `present` only at the top, patterns non-empty and valid).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RawMatcher {
    /// A string, integer or boolean, kept as its text.
    Text(String),
    /// `{glob: "..."}`
    Glob(String),
    /// `{regex: "..."}`
    Regex(String),
    /// `[m1, m2, ...]`: any of them.
    AnyOf(Vec<RawMatcher>),
    /// `{not: m}`
    Not(Box<RawMatcher>),
    /// `{present: true|false}`
    Present(bool),
    /// `{missing_or: m}` (deny rules): the claim is missing, or `m` holds.
    MissingOr(Box<RawMatcher>),
}

const MATCHER_KEYS: &[&str] = &["glob", "regex", "not", "present", "missing_or"];

/// Scalars accepted as claim values: strings, integers and booleans, kept
/// as their text. Floats and null are refused: their text is ambiguous.
struct MatcherVisitor;

impl<'de> Visitor<'de> for MatcherVisitor {
    type Value = RawMatcher;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a string, integer or boolean (quote other values), {glob: ...}, {regex: ...}, {not: ...}, {present: true|false}, {missing_or: ...}, or a list of those",
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v.to_string()))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Self::Value, E> {
        Ok(RawMatcher::Text(v.to_string()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<RawMatcher>()? {
            items.push(item);
        }
        Ok(RawMatcher::AnyOf(items))
    }
    /// Exactly one of `glob`, `regex`, `not`, `present`, `missing_or`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found: Option<RawMatcher> = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_some() {
                return Err(de::Error::custom(format!(
                    "`{key}`: a condition map holds exactly one of glob, regex, not, present, missing_or; write a list for any-of"
                )));
            }
            found = Some(match key.as_str() {
                "glob" => RawMatcher::Glob(map.next_value::<String>()?),
                "regex" => RawMatcher::Regex(map.next_value::<String>()?),
                "not" => RawMatcher::Not(Box::new(map.next_value::<RawMatcher>()?)),
                "present" => RawMatcher::Present(map.next_value::<bool>()?),
                "missing_or" => RawMatcher::MissingOr(Box::new(map.next_value::<RawMatcher>()?)),
                other => return Err(de::Error::unknown_field(other, MATCHER_KEYS)),
            });
        }
        found.ok_or_else(|| {
            de::Error::custom(
                "an empty condition map; write one of glob, regex, not, present, missing_or",
            )
        })
    }
}

impl<'de> Deserialize<'de> for RawMatcher {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MatcherVisitor)
    }
}

/// A 1-based (line, column) from a serde-saphyr location; `None` when unknown.
pub(crate) fn position(location: Location) -> (Option<usize>, Option<usize>) {
    let line = usize::try_from(location.line()).ok().filter(|l| *l > 0);
    let column = usize::try_from(location.column()).ok().filter(|c| *c > 0);
    match line {
        Some(_) => (line, column),
        None => (None, None),
    }
}

/// Parses one file's text. Syntax errors, unknown fields and type mismatches
/// become [`PolicyError::Yaml`] naming `file`, line and column (of the real
/// cause, see [`diagnose`]).
pub(crate) fn parse_file(file: &str, text: &str) -> Result<RawFile, PolicyError> {
    serde_saphyr::from_str::<RawFile>(text).map_err(|err| {
        let d = diagnose(text, &err);
        PolicyError::Yaml {
            file: file.to_owned(),
            line: d.line,
            column: d.column,
            message: d.message,
            hint: d.hint.map(Into::into),
        }
    })
}

/// A YAML error as jobkey reports it: where its cause is, what is wrong,
/// and how to fix a layout mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Diagnosis {
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: Option<String>,
}

/// Reads a serde-saphyr error against the text it came from. The parser
/// notices some mistakes late, so the usual layout mistakes are pointed at
/// their cause with a hint:
///
/// - a tab: reported where the parser stopped (often the end of the line
///   before it); the position becomes the tab's own;
/// - a list item indented less than the `key:` above it, which makes it an
///   item of the enclosing list ("expected mapping start");
/// - an unknown field at the indentation of a `key:` with a nested block
///   above it: most likely meant inside that block.
pub(crate) fn diagnose(text: &str, err: &serde_saphyr::Error) -> Diagnosis {
    let (line, column) = err.location().map(position).unwrap_or((None, None));
    let message = yaml_message(err);
    let lines: Vec<&str> = text.lines().collect();
    let plain = Diagnosis {
        line,
        column,
        message: message.clone(),
        hint: None,
    };
    let Some(at) = line else {
        return plain;
    };
    let about_tabs = message
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| word.eq_ignore_ascii_case("tab") || word.eq_ignore_ascii_case("tabs"));
    if about_tabs {
        return tab(&lines, at).unwrap_or(plain);
    }
    dedented_item(&lines, at, &message)
        .or_else(|| field_outside_block(&lines, at, &message))
        .unwrap_or(plain)
}

/// Spaces before a line's content.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// A line without its comment and trailing blanks (a `#` after a blank
/// starts a comment; quoted `#` are rare enough in keys not to matter).
fn content(line: &str) -> &str {
    let cut = line
        .find(" #")
        .or_else(|| line.trim_start().starts_with('#').then_some(0))
        .unwrap_or(line.len());
    line[..cut].trim_end()
}

/// The line (1-based) before `at` that has content, with its text.
fn previous_content<'t>(lines: &[&'t str], at: usize) -> Option<(usize, &'t str)> {
    (1..at)
        .rev()
        .filter_map(|n| lines.get(n - 1).map(|l| (n, *l)))
        .find(|(_, l)| !content(l).trim().is_empty())
}

/// The first tab from the start of line `at` on.
fn tab(lines: &[&str], at: usize) -> Option<Diagnosis> {
    let (n, col) = lines
        .iter()
        .enumerate()
        .skip(at.saturating_sub(1))
        .find_map(|(i, l)| l.find('\t').map(|c| (i + 1, l[..c].chars().count() + 1)))?;
    Some(Diagnosis {
        line: Some(n),
        column: Some(col),
        message: "a tab character; YAML indents with spaces only".to_owned(),
        hint: Some("replace the tab with spaces (each nested level by two)".to_owned()),
    })
}

/// `key:` with nothing after it, the key's text.
fn empty_key(line: &str) -> Option<&str> {
    let c = content(line).trim_start().trim_start_matches("- ");
    let key = c.strip_suffix(':')?;
    (!key.is_empty() && !key.contains(": ")).then_some(key)
}

/// A list item at line `at` less indented than the empty `key:` above it.
fn dedented_item(lines: &[&str], at: usize, message: &str) -> Option<Diagnosis> {
    let item = lines.get(at.checked_sub(1)?)?;
    let trimmed = item.trim_start();
    if !(trimmed.starts_with("- ") || trimmed == "-") {
        return None;
    }
    let (n, above) = previous_content(lines, at)?;
    let key = empty_key(above)?;
    let key_column = indent(above) + 1 + above.trim_start().find(key).unwrap_or(0);
    if indent(item) + 1 >= key_column {
        return None;
    }
    Some(Diagnosis {
        line: Some(at),
        column: Some(indent(item) + 1),
        message: format!(
            "{message}: the list item on line {at} is indented less than `{key}:` on line {n}, so it is not `{key}`'s value but an item of the list around it"
        ),
        hint: Some(format!(
            "indent the item to at least column {key_column} (under `{key}:`), or write `{key}: [{}]`",
            trimmed.trim_start_matches('-').trim()
        )),
    })
}

/// `unknown field `x`` at the indentation of an earlier `key:` whose block
/// it follows: most likely meant inside that block.
fn field_outside_block(lines: &[&str], at: usize, message: &str) -> Option<Diagnosis> {
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    let line = lines.get(at.checked_sub(1)?)?;
    let own = indent(line);
    let (n, key) = (1..at).rev().find_map(|n| {
        let l = lines.get(n - 1)?;
        if content(l).trim().is_empty() {
            return None;
        }
        if indent(l) < own {
            // Left the enclosing block: no sibling `key:` found.
            return Some((0, ""));
        }
        if indent(l) == own {
            return Some((n, empty_key(l).unwrap_or("")));
        }
        None
    })?;
    if key.is_empty() || n == 0 {
        return None;
    }
    Some(Diagnosis {
        line: Some(at),
        column: Some(own + 1),
        message: message.to_owned(),
        hint: Some(format!(
            "`{field}` is level with `{key}:` (line {n}), so it is not inside it; if it belongs to `{key}`, indent it further"
        )),
    })
}

/// serde-saphyr's message without its own location suffix, snippet and
/// advice about library options (we print the location ourselves, in the
/// `FILE:LINE:COLUMN:` form, and policy authors cannot change options).
fn yaml_message(err: &serde_saphyr::Error) -> String {
    let text = err.without_snippet().to_string();
    let mut message = text.lines().next().unwrap_or("invalid YAML").trim();
    if let Some(location) = err.location() {
        let suffix = format!(" at line {}, column {}", location.line(), location.column());
        message = message.strip_suffix(suffix.as_str()).unwrap_or(message);
        let prefix = format!("line {} column {}: ", location.line(), location.column());
        message = message.strip_prefix(prefix.as_str()).unwrap_or(message);
    }
    message = message.strip_prefix("error: ").unwrap_or(message);
    message
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml_err(src: &str) -> (Option<usize>, Option<usize>, String) {
        match parse_file("f.yaml", src) {
            Err(PolicyError::Yaml {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected a YAML error for {src:?}, got {other:?}"),
        }
    }

    const RULE: &str = "rules:\n  - name: a\n    issuer: github\n";

    #[test]
    fn strict_parse_errors_name_line_and_column() {
        // (source, line, column, fragment of the message)
        let table: Vec<(String, usize, usize, &str)> = vec![
            (
                format!("{RULE}    bogus: 1\n"),
                4,
                5,
                "unknown field `bogus`",
            ),
            ("colour: red\n".into(), 1, 1, "unknown field `colour`"),
            (
                "credentials:\n  x:\n    kv: {mount: s, path: p, feilds: [a]}\n    ttl: 1m\n"
                    .into(),
                3,
                29,
                "unknown field `feilds`",
            ),
            (
                format!("{RULE}    claims:\n      ref: {{glib: x}}\n"),
                5,
                13,
                "unknown field `glib`",
            ),
            (
                format!("{RULE}    claims:\n      ref: 1.5\n"),
                5,
                7,
                "floating point",
            ),
            (
                format!("{RULE}    claims:\n      ref: ~\n"),
                5,
                7,
                "expected a string",
            ),
            (
                format!("{RULE}    claims:\n      a: x\n      a: y\n"),
                6,
                7,
                "duplicate",
            ),
            (format!("{RULE}    effect: maybe\n"), 4, 13, "maybe"),
            (format!("{RULE}    grant: deploy-db\n"), 4, 12, "sequence"),
            (
                "credentials:\n  x:\n    kv: {mount: s, path: p}\n    ttl: 10q\n".into(),
                4,
                5,
                "expected a duration",
            ),
            ("max_ttl: [1]\n".into(), 1, 10, "expected string"),
            ("rules: {\n".into(), 1, 8, ""),
            ("[\n".into(), 1, 1, "unclosed bracket"),
            ("- a\n".into(), 1, 1, "mapping"),
            (
                "rules:\n  - issuer: github\n".into(),
                2,
                5,
                "missing field `name`",
            ),
        ];
        for (src, line, column, fragment) in &table {
            let (l, c, message) = yaml_err(src);
            assert_eq!((l, c), (Some(*line), Some(*column)), "{src:?}: {message}");
            assert!(message.contains(fragment), "{src:?}: {message}");
            // Our Display prints the position; the message must not repeat it.
            assert!(!message.contains(" at line "), "{message}");
            assert!(!message.contains("DuplicateKeyPolicy"), "{message}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let garbage = [
            "\u{0}",
            "\t\t:",
            "&a [*a]",
            "a: &x\n  b: *x\n",
            "rules: *nope",
            "!!binary AAAA",
            "---\n---\n",
            "rules:\n  - !!map {name: [}\n",
            "{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{{",
            "rules:\n  - name: a\n    claims: {x: [[[[[]]]]]}\n",
            "credentials:\n  x: {kv: 5, ttl: -1m}\n",
            "\u{feff}rules: []",
            "rules:\n- name: \"\\uD800\"\n",
            "max_ttl: 99999999999999999999999999h\n",
        ];
        for src in garbage {
            // Any outcome is fine as long as it is not a panic; errors name the file.
            if let Err(err) = parse_file("g.yaml", src) {
                assert!(err.to_string().starts_with("g.yaml"), "{err}");
            }
        }
        // Deep nesting is bounded by the parser's budget, not the stack.
        let deep = format!("rules: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_file("deep.yaml", &deep).is_err());
    }

    #[test]
    fn claim_values_keep_file_order_and_textual_form() {
        let src = format!(
            "{RULE}    claims:\n      z: 892347\n      a: true\n      m: [push, {{glob: \"v*\"}}]\n      g: {{glob: \"*\"}}\n"
        );
        let raw = parse_file("f.yaml", &src).expect("parses");
        let rules = raw.rules.expect("rules");
        let rule = rules.first().expect("one rule");
        let claims = &rule.value.claims.as_ref().expect("claims").0;
        let got: Vec<(&str, &RawMatcher)> = claims
            .iter()
            .map(|(k, v)| (k.value.as_str(), &v.value))
            .collect();
        let push = RawMatcher::Text("push".into());
        let v = RawMatcher::Glob("v*".into());
        assert_eq!(
            got,
            vec![
                ("z", &RawMatcher::Text("892347".into())),
                ("a", &RawMatcher::Text("true".into())),
                ("m", &RawMatcher::AnyOf(vec![push, v])),
                ("g", &RawMatcher::Glob("*".into())),
            ]
        );
    }
}
