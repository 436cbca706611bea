//! Mask generation: `mask::hints` on arbitrary values.
//!
//! Input: up to eight values separated by NUL bytes (lossy UTF-8), labelled
//! `value1`, `value2`, ...
//!
//! Properties, besides "never panics":
//! - every mask has at least `MIN_MASK_CHARS` characters; the list is
//!   longest first and has no duplicate;
//! - a value of at least `MIN_MASK_CHARS` characters is a mask itself; a
//!   shorter one is reported as such;
//! - every non-blank line of a value is a mask, or is reported in the
//!   value's warning (short, or PEM armor) by its line number. Lines are
//!   what a CI runner's log reader makes of the value: GitHub's runner
//!   reads a step's output with .NET's `ReadLine`, which ends a line at
//!   `\r\n`, `\n` or a lone `\r`;
//! - a warning says only what the format allows (the label, line numbers,
//!   fixed text), so it cannot carry a value.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use jobkey::fuzz_api::{self, MIN_MASK_CHARS};
use libfuzzer_sys::fuzz_target;

const MAX_VALUES: usize = 8;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let values: Vec<(String, String)> = text
        .split('\0')
        .take(MAX_VALUES)
        .enumerate()
        .map(|(i, v)| (format!("value{}", i + 1), v.to_owned()))
        .collect();
    let hints = fuzz_api::mask_hints(&values);

    let chars = |s: &str| s.chars().count();
    for m in &hints.masks {
        assert!(
            chars(m) >= MIN_MASK_CHARS,
            "a mask under the minimum: {m:?}"
        );
    }
    for pair in hints.masks.windows(2) {
        assert!(
            (pair[0].len(), &pair[1]) > (pair[1].len(), &pair[0]),
            "not longest first, or a duplicate: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let masks: BTreeSet<&str> = hints.masks.iter().map(String::as_str).collect();

    let mut warnings: BTreeMap<String, Warning> = BTreeMap::new();
    for w in &hints.warnings {
        let parsed = parse_warning(w);
        assert!(
            warnings.insert(parsed.label.clone(), parsed).is_none(),
            "two warnings for one value: {w:?}"
        );
    }

    for (label, v) in &values {
        let w = warnings.remove(label);
        if v.trim().is_empty() {
            assert!(w.is_none(), "a warning for a blank value");
            continue;
        }
        let w = w.unwrap_or_default();
        if chars(v) >= MIN_MASK_CHARS {
            assert!(masks.contains(v.as_str()), "{label} is not a mask");
            assert!(!w.short_value, "{label} reported short");
        } else {
            assert!(w.short_value, "{label} is short and not reported");
        }
        if !v.contains(['\n', '\r']) {
            assert!(w.armor.is_empty() && w.short_lines.is_empty());
            continue;
        }
        let lines = log_lines(v);
        for (i, line) in lines.iter().enumerate() {
            let n = i + 1;
            let reported_armor = w.armor.contains(&n);
            let reported_short = w.short_lines.contains(&n);
            if line.trim().is_empty() {
                assert!(
                    !reported_armor && !reported_short,
                    "{label}: blank line {n} reported"
                );
                continue;
            }
            assert!(
                masks.contains(line) || reported_armor || reported_short,
                "{label}: line {n} of {} is neither masked nor reported",
                lines.len()
            );
            if reported_short {
                assert!(
                    chars(line) < MIN_MASK_CHARS,
                    "{label}: line {n} is not short"
                );
            }
            if reported_armor {
                let t = line.trim();
                assert!(
                    t.starts_with("-----BEGIN ") || t.starts_with("-----END "),
                    "{label}: line {n} is not PEM armor"
                );
            }
        }
        for n in w.armor.iter().chain(&w.short_lines) {
            assert!(
                (1..=lines.len()).contains(n),
                "{label}: reported line {n} of {}",
                lines.len()
            );
        }
    }
    assert!(
        warnings.is_empty(),
        "warnings for unknown labels: {warnings:?}"
    );
});

/// The lines of `v` as .NET's `ReadLine` reads them: a line ends at
/// `\r\n`, `\n` or `\r`.
fn log_lines(v: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = v;
    while let Some(i) = rest.find(['\r', '\n']) {
        out.push(&rest[..i]);
        let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    out.push(rest);
    out
}

#[derive(Debug, Default)]
struct Warning {
    label: String,
    short_value: bool,
    armor: Vec<usize>,
    short_lines: Vec<usize>,
}

/// Reads a warning strictly: `LABEL: not masked: ` and then, joined by
/// `; `, the short-value sentence and the line lists. Anything else fails.
fn parse_warning(w: &str) -> Warning {
    let (label, mut rest) = w
        .split_once(": not masked: ")
        .unwrap_or_else(|| panic!("unexpected warning: {w:?}"));
    let mut out = Warning {
        label: label.to_owned(),
        ..Warning::default()
    };
    let short_value = format!(
        "the value is shorter than {MIN_MASK_CHARS} characters (masking it would blank unrelated log text); do not print it"
    );
    if let Some(r) = rest.strip_prefix(short_value.as_str()) {
        out.short_value = true;
        rest = r.strip_prefix("; ").unwrap_or(r);
    }
    let armor_tail = " PEM armor (public, the same in every key)";
    let short_tail = format!(" shorter than {MIN_MASK_CHARS} characters");
    for part in rest.split("; ").filter(|p| !p.is_empty()) {
        let (body, list) = if let Some(b) = part.strip_suffix(armor_tail) {
            (b, &mut out.armor)
        } else if let Some(b) = part.strip_suffix(short_tail.as_str()) {
            (b, &mut out.short_lines)
        } else {
            panic!("unexpected part {part:?} in {w:?}");
        };
        let (numbers, plural) = if let Some(n) = body
            .strip_prefix("lines ")
            .and_then(|b| b.strip_suffix(" are"))
        {
            (n, true)
        } else if let Some(n) = body
            .strip_prefix("line ")
            .and_then(|b| b.strip_suffix(" is"))
        {
            (n, false)
        } else {
            panic!("unexpected part {part:?} in {w:?}");
        };
        assert!(list.is_empty(), "a list given twice in {w:?}");
        for n in numbers.split(", ") {
            list.push(
                n.parse()
                    .unwrap_or_else(|_| panic!("not a line number: {n:?} in {w:?}")),
            );
        }
        assert_eq!(plural, list.len() > 1, "grammar of {w:?}");
    }
    out
}
