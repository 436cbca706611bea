//! Log-masking hints: every string a job's log must hide, and what was
//! deliberately left out.
//!
//! For every secret value the hints carry (what the CIs' own maskers miss):
//! - the value itself;
//! - each line of a multi-line value, a line ending at `\r\n`, `\n` or a lone
//!   `\r` (where GitHub's runner, reading a step's output with .NET's
//!   `ReadLine`, ends it): runners mask line by line, and a multi-line value
//!   masked as one string leaks line by line (CVE-2021-32074);
//! - its JSON-string-escaped form (what `{"key": "<value>"}` prints);
//! - its standard and URL-safe base64 forms at the three byte offsets, the
//!   way GitHub's runner derives them (`ValueEncoders.Base64StringEscape`,
//!   `…Shift1`, `…Shift2`, and ADR 0297 for the trailing edge): a value
//!   encoded after a prefix of `p` bytes starts on a 3-byte boundary after
//!   dropping its first `(3 - p) % 3` bytes, so `base64(value[s..])` for
//!   `s = 0, 1, 2` covers every prefix length. Each is listed padded (the
//!   value encoded on its own), unpadded, and with its last character also
//!   removed when padding was needed: that character mixes in the bits of
//!   whatever follows the value (`base64(value + "\n")`), so only the part
//!   before it is stable;
//! - the JSON string forms of Python's `json.dumps` (`\u00e9`), Go's
//!   `encoding/json` (`\u003c`) and PHP's `json_encode` (`\/`), where they
//!   differ;
//! - its URL-encoded forms (percent-encoding of everything but RFC 3986's
//!   unreserved characters, as `Uri.EscapeDataString` and Python's
//!   `quote(v, safe="")` write it; the same leaving `!'()*` as JavaScript's
//!   `encodeURIComponent` does; and each with `+` for space).
//!
//! Then the secrets inside a composite value (`src/mask/composite.rs`),
//! each hinted like a value of its own (its lines, its encodings, and the
//! secrets inside it in turn): a kubeconfig's `client-key-data` (the base64
//! value `kubectl … -o jsonpath=` prints, and the PEM key `base64 -d`
//! prints), its `token:`, every secret field of a JSON or YAML document,
//! and the password of a URL or DSN with its percent-decoded form. A whole
//! line of a composite value is no help when a job prints one field of it.
//!
//! CIs that derive no encodings themselves (GitLab, Buildkite, Forgejo) are
//! covered by these hints; GitHub derives most of them itself as well.
//!
//! Left out, and reported in `warnings` (which name the credential, the
//! field, the path inside a composite value and the line number, never the
//! value): pieces under [`MIN_MASK_CHARS`] characters, whose masking would
//! blank unrelated text all over a log, and PEM armor lines
//! (`-----BEGIN … KEY-----`), which are public and identical in every key.
//! Blank lines are left out silently.

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};

use crate::secret::SecretString;

mod cache;
mod composite;
mod form;

pub(crate) use cache::{MaskCache, MaskCacheSettings};
pub(crate) use form::Form;

/// Pieces shorter than this (in characters) are not masked.
pub(crate) const MIN_MASK_CHARS: usize = 8;

/// RFC 3986 unreserved characters stay; every other byte is escaped (as
/// .NET's `Uri.EscapeDataString` and Python's `quote(v, safe="")` do).
const URI_COMPONENT: [bool; 256] = kept(b"-_.~");

/// JavaScript's `encodeURIComponent` also leaves `!'()*` as they are.
const JS_URI_COMPONENT: [bool; 256] = kept(b"-_.~!'()*");

/// The bytes left as they are: ASCII letters and digits, and `extra`.
const fn kept(extra: &[u8]) -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    t
}

/// Percent-encodes every byte of `v` outside `keep` (`%2F`, uppercase
/// hex), appending to `out`. One table lookup a byte: the percent-encoding
/// crate's iterator did a set test and a piece per run, and was the masks'
/// largest cost.
fn percent_encode_into(out: &mut String, v: &str, keep: &[bool; 256]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in v.as_bytes() {
        if keep[b as usize] {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The masks for a set of labelled secret values, and the warnings for what
/// was left out.
#[derive(Debug, Default)]
pub(crate) struct MaskHints {
    /// Deduplicated, longest first (so a CI that applies masks in order hides
    /// the longest match).
    pub mask: Vec<SecretString>,
    /// What was left out and why; never contains a secret.
    pub warnings: Vec<String>,
}

/// The hints for `values`, each labelled for the warnings (for instance
/// `deploy-db.password`; a label must not be secret).
pub(crate) fn hints<'a, L: AsRef<str>>(
    values: impl IntoIterator<Item = (L, &'a SecretString)>,
) -> MaskHints {
    let mut set = Masks::default();
    for (label, v) in values {
        set.push(Arc::new(ValueHints::compute(label.as_ref(), v)));
    }
    MaskHints {
        mask: set
            .mask()
            .into_iter()
            .map(|m| SecretString::new(m.value().expose_secret().to_owned()))
            .collect(),
        warnings: set.warnings().map(str::to_owned).collect(),
    }
}

/// The hints of one labelled value: its masks (deduplicated) and the
/// warnings for what was left out. What [`MaskCache`] keeps.
pub(crate) struct ValueHints {
    forms: Vec<Form>,
    warnings: Vec<String>,
    /// The bytes of `forms`, for the cache's bound.
    bytes: usize,
}

impl ValueHints {
    /// Computes the hints of `value`, labelled `label` in the warnings.
    pub(crate) fn compute(label: &str, value: &SecretString) -> ValueHints {
        let mut acc = Collected::default();
        acc.add(label, value.expose_secret(), 0);
        let forms: Vec<Form> = acc.set.into_iter().map(Form::new).collect();
        let bytes = forms.iter().map(Form::bytes).sum();
        ValueHints {
            forms,
            warnings: acc.warnings,
            bytes,
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl std::fmt::Debug for ValueHints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueHints")
            .field("forms", &self.forms.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// The hints of several values together (a response's): the union of their
/// masks, longest first, and their warnings in order.
#[derive(Debug, Default)]
pub(crate) struct Masks {
    parts: Vec<Arc<ValueHints>>,
}

impl Masks {
    pub(crate) fn push(&mut self, hints: Arc<ValueHints>) {
        self.parts.push(hints);
    }

    /// Every mask once, longest first (then in byte order).
    pub(crate) fn mask(&self) -> Vec<&Form> {
        let mut all: Vec<&Form> = self.parts.iter().flat_map(|p| &p.forms).collect();
        fn text(f: &Form) -> &str {
            f.value().expose_secret()
        }
        all.sort_by(|a, b| {
            let (a, b) = (text(a), text(b));
            b.len().cmp(&a.len()).then_with(|| a.cmp(b))
        });
        all.dedup_by(|a, b| text(a) == text(b));
        all
    }

    /// What was left out, value by value; never contains a secret.
    pub(crate) fn warnings(&self) -> impl Iterator<Item = &str> {
        self.parts
            .iter()
            .flat_map(|p| p.warnings.iter().map(String::as_str))
    }
}

/// How deep secrets inside secrets are followed (a DSN in a JSON field in a
/// base64-decoded document is depth 3).
const MAX_DEPTH: usize = 4;

/// At most this many parts are taken from one value, all depths together.
const MAX_PARTS_PER_VALUE: usize = 512;

#[derive(Default)]
struct Collected {
    set: BTreeSet<String>,
    warnings: Vec<String>,
    /// What is left of the value's parts budget.
    budget: usize,
}

impl Collected {
    /// `v` with its lines and encodings, then the secrets inside it (see
    /// `composite`), each as a value of its own under a longer label.
    fn add(&mut self, label: &str, v: &str, depth: usize) {
        if depth == 0 {
            self.budget = MAX_PARTS_PER_VALUE;
        }
        if v.trim().is_empty() {
            return;
        }
        let mut left_out = LeftOut::default();
        if long_enough(v) {
            self.set.insert(v.to_owned());
            for form in encodings(v) {
                if long_enough(&form) {
                    self.set.insert(form);
                }
            }
        } else {
            left_out.short_value = true;
        }
        if v.contains('\n') || v.contains('\r') {
            for (i, line) in lines(v).enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                if is_pem_armor(line) {
                    left_out.armor.push(i + 1);
                } else if !long_enough(line) {
                    left_out.short_lines.push(i + 1);
                } else {
                    self.set.insert(line.to_owned());
                }
            }
        }
        if let Some(w) = left_out.warning(label) {
            self.warnings.push(w);
        }
        if depth >= MAX_DEPTH || self.budget == 0 {
            return;
        }
        let parts = composite::parts(v, self.budget);
        self.budget -= parts.len();
        for p in parts {
            if p.value.as_str() != v {
                self.add(&format!("{label} {}", p.label), &p.value, depth + 1);
            }
        }
    }
}

/// The lines of `v` as a CI runner's log reader ends them: at `\r\n`, `\n`
/// or a lone `\r` (.NET's `ReadLine`, which GitHub's runner reads a step's
/// output with). A value split at `\n` only would keep `a\rb` as one line,
/// which the log shows as two, neither masked.
fn lines(v: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(v);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let end = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + end..]);
                Some(&s[..i])
            }
        }
    })
}

fn long_enough(s: &str) -> bool {
    // A char is 1 to 4 bytes: only lengths in between need counting.
    match s.len() {
        n if n < MIN_MASK_CHARS => false,
        n if n >= 4 * MIN_MASK_CHARS => true,
        _ => s.chars().count() >= MIN_MASK_CHARS,
    }
}

/// `-----BEGIN RSA PRIVATE KEY-----`, `-----END CERTIFICATE-----`, …
fn is_pem_armor(line: &str) -> bool {
    let t = line.trim();
    let Some(inner) = t
        .strip_prefix("-----")
        .and_then(|r| r.strip_suffix("-----"))
    else {
        return false;
    };
    (inner.starts_with("BEGIN ") || inner.starts_with("END "))
        && inner
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == ' ')
}

/// The encoded forms of `v` (see the module docs). May contain `v` itself.
fn encodings(v: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(32);
    let plain = json_escaped(v);
    out.extend(json_dialects(&plain));
    out.push(plain);
    let bytes = v.as_bytes();
    for shift in 0..3 {
        if bytes.len() <= shift {
            break;
        }
        for engine in [&STANDARD, &URL_SAFE] {
            let padded = engine.encode(&bytes[shift..]);
            let unpadded = padded.trim_end_matches('=');
            if unpadded.len() != padded.len() {
                // The last character before the padding depends on the bytes
                // that follow the value; only what precedes it is stable.
                out.push(unpadded[..unpadded.len() - 1].to_owned());
                out.push(unpadded.to_owned());
            }
            out.push(padded);
        }
    }
    for set in [&URI_COMPONENT, &JS_URI_COMPONENT] {
        let mut encoded = String::with_capacity(v.len() * 3);
        percent_encode_into(&mut encoded, v, set);
        if v.contains(' ') {
            out.push(encoded.replace("%20", "+"));
        }
        out.push(encoded);
    }
    out
}

/// The JSON string forms other common encoders write, where they differ
/// from serde_json's: Python's `json.dumps` (non-ASCII as `\uXXXX`, UTF-16
/// surrogate pairs beyond the BMP), Go's `encoding/json` (`<`, `>`, `&`,
/// U+2028 and U+2029 as `\u003c`, `\u003e`, `\u0026`, `\u2028`,
/// `\u2029`) and PHP's `json_encode` (`/` as `\/`, non-ASCII as Python's
/// unless `JSON_UNESCAPED_UNICODE`). `plain` is serde_json's form; only
/// the forms that differ from it are returned.
fn json_dialects(plain: &str) -> Vec<String> {
    let mut out = Vec::new();
    if !plain.is_ascii() {
        let python = python_json(plain);
        out.push(python.replace('/', "\\/"));
        out.push(python);
    }
    if plain.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        out.push(
            plain
                .replace('<', "\\u003c")
                .replace('>', "\\u003e")
                .replace('&', "\\u0026")
                .replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029"),
        );
    }
    if plain.contains('/') {
        out.push(plain.replace('/', "\\/"));
    }
    out
}

/// Python's `json.dumps` form of serde_json's `plain`: non-ASCII as
/// `\uXXXX` (surrogate pairs beyond the BMP).
fn python_json(plain: &str) -> String {
    let mut python = String::with_capacity(plain.len());
    for c in plain.chars() {
        if c.is_ascii() {
            python.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                python.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    python
}

/// The JSON string form without its quotes (`"` → `\"`, newline → `\n`, …).
fn json_escaped(v: &str) -> String {
    let mut quoted = serde_json::to_string(v).unwrap_or_default();
    // `"…"`: drop the quotes (a str always serializes, as one string).
    quoted.pop();
    if !quoted.is_empty() {
        quoted.remove(0);
    }
    quoted
}

#[derive(Default)]
struct LeftOut {
    short_value: bool,
    armor: Vec<usize>,
    short_lines: Vec<usize>,
}

impl LeftOut {
    fn warning(&self, label: &str) -> Option<String> {
        let mut parts = Vec::new();
        if self.short_value {
            parts.push(format!(
                "the value is shorter than {MIN_MASK_CHARS} characters (masking it would blank unrelated log text); do not print it"
            ));
        }
        if !self.armor.is_empty() {
            parts.push(format!(
                "{} {} PEM armor (public, the same in every key)",
                lines_word(&self.armor),
                list(&self.armor)
            ));
        }
        if !self.short_lines.is_empty() {
            parts.push(format!(
                "{} {} shorter than {MIN_MASK_CHARS} characters",
                lines_word(&self.short_lines),
                list(&self.short_lines)
            ));
        }
        if parts.is_empty() {
            None
        } else {
            Some(format!("{label}: not masked: {}", parts.join("; ")))
        }
    }
}

fn lines_word(v: &[usize]) -> &'static str {
    if v.len() == 1 { "line" } else { "lines" }
}

fn list(v: &[usize]) -> String {
    let s: Vec<String> = v.iter().map(|n| n.to_string()).collect();
    let verb = if v.len() == 1 { "is" } else { "are" };
    format!("{} {verb}", s.join(", "))
}

#[cfg(test)]
mod tests;
