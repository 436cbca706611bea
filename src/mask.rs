//! Log-masking hints: every string a job's log must hide.
//!
//! For each secret value: the value itself and each of its lines (without
//! `\r`), because CI runners mask line by line and a multi-line value masked
//! as one string leaks line by line (CVE-2021-32074). Empty and
//! whitespace-only lines are left out: masking them would blank the log.

use std::collections::BTreeSet;

use crate::secret::SecretString;

/// The masks for a set of secret values, deduplicated, longest first (so a
/// CI that applies masks in order hides the longest match).
pub fn masks<'a>(values: impl IntoIterator<Item = &'a SecretString>) -> Vec<SecretString> {
    let mut set = BTreeSet::new();
    for v in values {
        let v = v.expose_secret();
        if v.trim().is_empty() {
            continue;
        }
        set.insert(v.to_owned());
        if v.contains('\n') || v.contains('\r') {
            for line in v.split('\n') {
                let line = line.trim_end_matches('\r');
                if !line.trim().is_empty() {
                    set.insert(line.to_owned());
                }
            }
        }
    }
    let mut out: Vec<String> = set.into_iter().collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out.into_iter().map(SecretString::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[&str]) -> Vec<String> {
        let v: Vec<SecretString> = values
            .iter()
            .map(|s| SecretString::new((*s).to_owned()))
            .collect();
        masks(v.iter())
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .collect()
    }

    #[test]
    fn every_line_of_a_multiline_value_is_masked() {
        let pem = "-----BEGIN KEY-----\r\nAAAABBBBCCCC\r\nDDDDEEEE\r\n-----END KEY-----\r\n";
        let m = run(&[pem, "hunter2hunter2"]);
        assert!(m.contains(&pem.to_owned()));
        for line in [
            "-----BEGIN KEY-----",
            "AAAABBBBCCCC",
            "DDDDEEEE",
            "-----END KEY-----",
            "hunter2hunter2",
        ] {
            assert!(m.contains(&line.to_owned()), "{line} missing from {m:?}");
        }
        assert!(m.iter().all(|s| !s.contains('\r') || s == pem));
        assert!(!m.iter().any(|s| s.trim().is_empty()));
    }

    #[test]
    fn duplicates_and_blank_values_are_dropped_longest_first() {
        let m = run(&["abc", "abc", "  ", "", "abcdef"]);
        assert_eq!(m, vec!["abcdef".to_owned(), "abc".to_owned()]);
    }
}
