//! The secrets inside a composite value: what a job prints with everyday
//! tools (`kubectl config view --raw -o jsonpath=…`, `jq -r`, `yq`,
//! `base64 -d`, a database client's error) when it prints a piece of a
//! credential rather than the whole of it.
//!
//! - A JSON or YAML document (a kubeconfig, a service-account key, any
//!   object kept in one field): every string, number or boolean under a
//!   field whose name says it is secret ([`is_secret_name`]: `password`,
//!   `token`, `client-key-data`, `client_secret`, `private_key`, … but not
//!   `token_uri`, `private_key_id` or `public_key`), the `value` of a
//!   `{name, value}` pair whose name says so (a kubeconfig's `exec.env`),
//!   and, for such a string that is base64 text (`client-key-data`), the
//!   decoded text, whose lines are then masked like any value's. Other
//!   strings are searched like text.
//! - Text: the password of a URL or DSN (`scheme://user:password@host`)
//!   and its percent-decoded form; a query parameter or a `key=value` /
//!   `key: value` pair whose key says it is secret (`?password=…`,
//!   libpq's `password='…'`, `.env` lines such as `DB_PASSWORD=…`), with
//!   its quotes and escapes removed, and percent-decoded in a URL.
//!
//! Each part has a label (a path such as `users[0].user.client-key-data`,
//! or `URL password`) for the mask warnings; a label never holds a value.

use std::borrow::Cow;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use percent_encoding::percent_decode_str;
use regex::Regex;
use serde_json::Value;
use zeroize::{Zeroize, Zeroizing};

/// Documents larger than this are not parsed (their lines are still
/// masked).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// One secret found inside a value.
pub(super) struct Part {
    /// Where it was found; never secret.
    pub label: String,
    pub value: Zeroizing<String>,
}

/// The secrets inside `value` (see the module docs), not including `value`
/// itself. At most `budget` parts.
pub(super) fn parts(value: &str, budget: usize) -> Vec<Part> {
    let mut out = Parts {
        list: Vec::new(),
        budget,
    };
    match document(value) {
        Some(mut doc) => {
            walk(&doc, "", false, &mut out);
            wipe(&mut doc);
        }
        None => in_text(value, &mut out),
    }
    out.list
}

struct Parts {
    list: Vec<Part>,
    budget: usize,
}

impl Parts {
    fn push(&mut self, label: String, value: Cow<'_, str>) {
        if self.budget == 0 || value.trim().is_empty() {
            return;
        }
        self.budget -= 1;
        self.list.push(Part {
            label,
            value: Zeroizing::new(value.into_owned()),
        });
    }
}

/// `value` as a JSON or YAML object or array, if it is one.
fn document(value: &str) -> Option<Value> {
    if value.len() > MAX_DOCUMENT_BYTES {
        return None;
    }
    let t = value.trim_start();
    let doc = if t.starts_with('{') || t.starts_with('[') {
        serde_json::from_str::<Value>(value).ok()
    } else if value.contains('\n') && (value.contains(": ") || value.contains(":\n")) {
        serde_saphyr::from_str::<Value>(value).ok()
    } else {
        None
    };
    doc.filter(|d| d.is_object() || d.is_array())
}

/// Zeroizes every string of a parsed document (the document held secrets).
fn wipe(v: &mut Value) {
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(a) => a.iter_mut().for_each(wipe),
        Value::Object(m) => m.values_mut().for_each(wipe),
        _ => {}
    }
}

fn walk(v: &Value, path: &str, secret: bool, out: &mut Parts) {
    match v {
        Value::Object(m) => {
            // `{name: DB_PASSWORD, value: …}` (a kubeconfig's exec.env).
            let named_secret = m
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(is_secret_name);
            for (k, child) in m {
                let child_secret =
                    secret || is_secret_name(k) || (named_secret && k.as_str() == "value");
                walk(child, &join(path, k), child_secret, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), secret, out);
            }
        }
        Value::String(s) if secret => {
            out.push(path.to_owned(), Cow::Borrowed(s));
            if let Some(text) = base64_text(s) {
                out.push(format!("{path}, base64-decoded"), Cow::Owned(text));
            }
        }
        Value::String(s) => {
            // Not secret by its name, but it may hold a secret (a DSN).
            for p in parts(s, out.budget) {
                out.push(format!("{path} {}", p.label), Cow::Borrowed(&p.value));
            }
        }
        Value::Number(n) if secret => out.push(path.to_owned(), Cow::Owned(n.to_string())),
        Value::Bool(b) if secret => out.push(path.to_owned(), Cow::Owned(b.to_string())),
        _ => {}
    }
}

/// `path.key` (or `path[?]` for a key that is not a plain name: keys are
/// shown in warnings, so only plain names are).
fn join(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match (path.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[?]"),
    }
}

/// Standard base64 (padding optional, surrounding whitespace ignored) that
/// decodes to printable UTF-8 text: a PEM key in `client-key-data`.
fn base64_text(s: &str) -> Option<String> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let s = s.trim();
    if s.len() < 12 {
        return None;
    }
    let bytes = LENIENT.decode(s).ok()?;
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            e.into_bytes().zeroize();
            return None;
        }
    };
    let printable = text
        .chars()
        .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'));
    if printable && !text.trim().is_empty() {
        Some(text)
    } else {
        let mut text = text;
        text.zeroize();
        None
    }
}

/// `scheme://` and the authority after it, up to the path.
static URL_AUTHORITY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b[a-z][a-z0-9+.\-]*://([^\s/?#"'<>\\`]+)"#).expect("a valid regex")
});

/// `?name=value` and `&name=value`.
static QUERY_PARAM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"[?&;]([A-Za-z][A-Za-z0-9_.\-]*)=([^&#\s"'<>`]+)"#).expect("a valid regex")
});

/// `name=value`, `name = 'value'`, `name: "value"`, at the start of a line
/// or after a separator.
static KEY_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?m)(?:^|[\s;,{(])([A-Za-z_][A-Za-z0-9_.\-]*)[ \t]*[=:][ \t]*("(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'|[^\s;&"']+)"#,
    )
    .expect("a valid regex")
});

/// The secrets in text: URL passwords, secret query parameters, secret
/// `key=value` pairs.
fn in_text(text: &str, out: &mut Parts) {
    for c in URL_AUTHORITY.captures_iter(text) {
        // The user information ends at the last `@` (a password may hold
        // an unescaped `@`); the password after the first `:`.
        let Some((userinfo, _host)) = c[1].rsplit_once('@') else {
            continue;
        };
        if let Some((_user, password)) = userinfo.split_once(':') {
            push_url_encoded(out, "URL password".into(), password, false);
        }
    }
    for c in QUERY_PARAM.captures_iter(text) {
        if is_secret_name(&c[1]) {
            let what = format!("query parameter {}", join("", &c[1]));
            push_url_encoded(out, what, &c[2], true);
        }
    }
    for c in KEY_VALUE.captures_iter(text) {
        if is_secret_name(&c[1]) {
            let what = format!("{} value", join("", &c[1]));
            out.push(what, unquote(&c[2]));
        }
    }
}

/// The value as written and, when different, percent-decoded (and with
/// `+` as a space, for a query string).
fn push_url_encoded(out: &mut Parts, label: String, raw: &str, form: bool) {
    out.push(label.clone(), Cow::Borrowed(raw));
    let decoded = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|d| Zeroizing::new(d.into_owned()))
    };
    let d = decoded(raw);
    if let Some(d) = &d
        && d.as_str() != raw
    {
        out.push(
            format!("{label}, percent-decoded"),
            Cow::Borrowed(d.as_str()),
        );
    }
    if form && raw.contains('+') {
        let spaced = Zeroizing::new(raw.replace('+', " "));
        if let Some(f) = decoded(&spaced)
            && d.as_ref().is_none_or(|d| d.as_str() != f.as_str())
        {
            out.push(format!("{label}, form-decoded"), Cow::Borrowed(f.as_str()));
        }
    }
}

/// A quoted value without its quotes and backslash escapes.
fn unquote(v: &str) -> Cow<'_, str> {
    let inner = v
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')));
    match inner {
        None => Cow::Borrowed(v),
        Some(inner) if !inner.contains('\\') => Cow::Borrowed(inner),
        Some(inner) => {
            let mut s = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        s.push(n);
                    }
                } else {
                    s.push(c);
                }
            }
            Cow::Owned(s)
        }
    }
}

/// Words that make a field secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "passcode",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "keys",
    "apikey",
    "privkey",
    "privatekey",
    "credential",
    "credentials",
    "creds",
    "cookie",
    "session",
    "signature",
    "dsn",
    "authorization",
    "bearer",
    "jwt",
    "pin",
];

/// Run-together names that make a field secret (`connectionString`,
/// `client_secretKey`, `DBPASSWORD`).
const SECRET_INFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "apikey",
    "privatekey",
    "accesskey",
    "connectionstring",
];

/// A last word that makes a field describe a secret rather than hold one
/// (`token_uri`, `private_key_id`, `key_type`, `password_file`).
const NOT_SECRET_LAST: &[&str] = &[
    "id",
    "ids",
    "type",
    "name",
    "names",
    "uri",
    "url",
    "urls",
    "file",
    "path",
    "alg",
    "algorithm",
    "kind",
    "format",
    "expiry",
    "expires",
    "expiration",
    "at",
    "in",
    "ttl",
    "length",
    "len",
    "count",
    "version",
    "hint",
    "header",
    "endpoint",
    "method",
    "mode",
    "prefix",
    "host",
    "port",
    "user",
    "username",
    "email",
];

/// Whether a field named `name` holds a secret (see the lists above; a
/// name with the word `public` never does).
pub(super) fn is_secret_name(name: &str) -> bool {
    let words = words(name);
    let Some(last) = words.last() else {
        return false;
    };
    if NOT_SECRET_LAST.contains(&last.as_str()) || words.iter().any(|w| w == "public") {
        return false;
    }
    let joined: String = words.concat();
    words.iter().any(|w| SECRET_WORDS.contains(&w.as_str()))
        || SECRET_INFIXES.iter().any(|i| joined.contains(i))
}

/// Lower-case words of a name: split at anything but letters and digits,
/// and at camel-case humps (`clientSecret`, `APIKey`).
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    for chunk in name.split(|c: char| !c.is_ascii_alphanumeric()) {
        let chars: Vec<char> = chunk.chars().collect();
        let mut word = String::new();
        for (i, &c) in chars.iter().enumerate() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let hump = c.is_ascii_uppercase()
                && prev.is_some_and(|p| {
                    p.is_ascii_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_ascii_uppercase() && next.is_some_and(|n| n.is_ascii_lowercase()))
                });
            if hump && !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            word.push(c.to_ascii_lowercase());
        }
        if !word.is_empty() {
            words.push(word);
        }
    }
    words
}
