//! Whole-string glob matching with `*` as the only metacharacter.
//!
//! - `*` matches any run of characters, including `/` and the empty run;
//!   `**` is the same as `*`.
//! - Every other character, `?` and `[` included, matches itself. There is no
//!   escape: a literal `*` cannot be matched (claim values do not need it).
//! - The whole value must match: `a*b` does not match `a` (the defect of
//!   go-glob behind Vault's `bound_claims_type=glob`), and `prod-*-eu`
//!   against `prod-` is simply false.
//!
//! The pattern is split at `*` once, when the policy is compiled. Matching
//! then checks the first piece as a prefix, the last as a suffix of what is
//! left, and finds each middle piece leftmost-first in between. Taking the
//! leftmost occurrence is never worse than a later one (it leaves the most
//! room for the pieces after it), so no backtracking is needed and the cost
//! is linear in the value per piece. No indexing, no recursion.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: String,
    /// The pattern split at `*`. `pieces.len() == 1` means no star: exact.
    pieces: Vec<String>,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GlobError {
    Empty,
}

impl Glob {
    /// Compiles `pattern`. The empty pattern is refused: it can only match
    /// an empty claim and is almost certainly a mistake.
    pub(crate) fn new(pattern: &str) -> Result<Glob, GlobError> {
        if pattern.is_empty() {
            return Err(GlobError::Empty);
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            pieces: pattern.split('*').map(str::to_owned).collect(),
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the whole of `value` matches.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let (first, rest) = match self.pieces.split_first() {
            Some(split) => split,
            None => return false,
        };
        let (last, middle) = match rest.split_last() {
            Some(split) => split,
            // No star at all: exact comparison.
            None => return value == first,
        };
        let Some(value) = value.strip_prefix(first.as_str()) else {
            return false;
        };
        // The suffix is taken from what the prefix left, so the two can
        // never overlap (`a*a` does not match `a`).
        let Some(mut value) = value.strip_suffix(last.as_str()) else {
            return false;
        };
        for piece in middle {
            if piece.is_empty() {
                continue; // `**`
            }
            match value.find(piece.as_str()) {
                Some(at) => match value.get(at + piece.len()..) {
                    Some(tail) => value = tail,
                    None => return false,
                },
                None => return false,
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, value: &str) -> bool {
        Glob::new(pattern)
            .map(|g| g.matches(value))
            .unwrap_or(false)
    }

    #[test]
    fn glob_table() {
        let table: &[(&str, &str, bool)] = &[
            // go-glob's defects
            ("a*b", "a", false),
            ("a*b", "b", false),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("prod-*-eu", "prod-", false),
            ("prod-*-eu", "prod-eu", false),
            ("prod-*-eu", "prod--eu", true),
            ("prod-*-eu", "prod-west-eu", true),
            ("prod-*-eu", "prod-west-us", false),
            // prefix and suffix must not overlap
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
            // star alone, empty value
            ("*", "", true),
            ("*", "anything/at/all", true),
            ("**", "", true),
            ("**", "x/y", true),
            ("a**b", "ab", true),
            ("a**b", "a/x/b", true),
            ("***", "", true),
            // no star: exact
            ("main", "main", true),
            ("main", "mainline", false),
            ("main", "xmain", false),
            ("main", "", false),
            ("refs/heads/main", "refs/heads/main", true),
            // whole string
            ("acme/*", "acme/api", true),
            ("acme/*", "acme/", true),
            ("acme/*", "acme", false),
            ("acme/*", "evil/acme/api", false),
            ("*/api", "acme/api", true),
            ("*/api", "acme/api2", false),
            ("*acme*", "xacmey", true),
            ("*acme*", "acm", false),
            // star crosses `/`
            ("refs/tags/v*", "refs/tags/v1.2.3", true),
            ("refs/tags/v*", "refs/tags/v", true),
            ("refs/tags/v*", "refs/heads/v1", false),
            (
                "acme/deploy/.github/workflows/deploy.yml@refs/tags/v*",
                "acme/deploy/.github/workflows/deploy.yml@refs/tags/v2.0",
                true,
            ),
            (
                "acme/deploy/.github/workflows/deploy.yml@refs/tags/v*",
                "acme/deploy/.github/workflows/deploy.yml@refs/heads/main",
                false,
            ),
            // multiple stars, leftmost choice must not strand later pieces
            ("*a*b*c*", "abc", true),
            ("*a*b*c*", "cba", false),
            ("a*b*c", "abbbc", true),
            ("a*b*c", "acbc", true),
            ("a*b*c", "acb", false),
            ("*ab*ab", "abab", true),
            ("*ab*ab", "aab", false),
            ("x*aab*y", "xaaabaaby", true),
            // other characters are literal
            ("a?c", "abc", false),
            ("a?c", "a?c", true),
            ("[ab]", "a", false),
            ("[ab]", "[ab]", true),
            ("a.c", "abc", false),
            // unicode
            ("ü*", "über", true),
            ("*ß", "straß", true),
            ("*é*", "café au lait", true),
            ("日本*", "日本語", true),
            ("日*語", "日本語", true),
            ("日*語", "日", false),
            ("*🔑*", "a🔑b", true),
            ("🔑*🔑", "🔑", false),
            ("é", "e\u{301}", false), // no normalization: bytes compare
        ];
        for (pattern, value, want) in table {
            assert_eq!(m(pattern, value), *want, "glob {pattern:?} vs {value:?}");
        }
    }

    #[test]
    fn empty_pattern_is_refused() {
        assert_eq!(Glob::new(""), Err(GlobError::Empty));
    }

    /// Reference matcher: the textbook recursive definition, fine for the
    /// tiny inputs below.
    fn reference(p: &[char], v: &[char]) -> bool {
        match p.split_first() {
            None => v.is_empty(),
            Some(('*', rest)) => (0..=v.len()).any(|i| reference(rest, &v[i..])),
            Some((c, rest)) => v.first() == Some(c) && reference(rest, &v[1..]),
        }
    }

    /// Every pattern and value up to length 5 over {a, b, *} / {a, b}
    /// agrees with the reference definition.
    #[test]
    fn agrees_with_reference_exhaustively() {
        fn all(alphabet: &[char], max: usize) -> Vec<String> {
            let mut out = vec![String::new()];
            let mut frontier = vec![String::new()];
            for _ in 0..max {
                let mut next = Vec::new();
                for s in &frontier {
                    for c in alphabet {
                        let mut t = s.clone();
                        t.push(*c);
                        next.push(t);
                    }
                }
                out.extend(next.iter().cloned());
                frontier = next;
            }
            out
        }
        let patterns = all(&['a', 'b', '*'], 5);
        let values = all(&['a', 'b'], 5);
        let mut checked = 0;
        for p in patterns.iter().filter(|p| !p.is_empty()) {
            let glob = Glob::new(p).expect("non-empty pattern compiles");
            let pc: Vec<char> = p.chars().collect();
            for v in &values {
                let vc: Vec<char> = v.chars().collect();
                assert_eq!(glob.matches(v), reference(&pc, &vc), "{p:?} vs {v:?}");
                checked += 1;
            }
        }
        assert!(checked > 10_000);
    }

    /// Many stars against a long value that almost matches: must finish
    /// quickly (no exponential backtracking).
    #[test]
    fn pathological_input_is_fast() {
        let pattern = format!("{}b", "a*".repeat(50));
        let value = "a".repeat(10_000);
        let glob = Glob::new(&pattern).expect("compiles");
        let start = std::time::Instant::now();
        assert!(!glob.matches(&value));
        assert!(glob.matches(&format!("{value}b")));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
    }
}
