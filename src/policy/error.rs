//! Errors found while loading policy files.
//!
//! Every variant names the file it comes from and, where the YAML layer gave
//! one, the line and column. `Display` prints `FILE:LINE:COLUMN: message`
//! (or `FILE: message` without a position), and the message says what to
//! fix; where the cause is a layout mistake (a tab, a line indented under
//! the wrong key), a second line `  hint: ...` says how to fix it. The
//! position is the real cause's (the tab, the misplaced key), not where
//! the parser noticed. `jobkey policy test`'s fixture errors use the same
//! form. These errors come from untrusted input (policy files); producing
//! them never panics.

/// Anything wrong with the policy directory or a policy file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The directory or a file in it could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },

    /// A file is larger than [`MAX_FILE_BYTES`](super::MAX_FILE_BYTES).
    #[error("{file}: is {size} bytes; policy files are limited to {limit} bytes")]
    TooLarge { file: String, size: u64, limit: u64 },

    /// The policy directory holds no `*.yaml` / `*.yml` file: every request
    /// would be denied, which is almost certainly a wrong path.
    #[error("{file}: no policy files (*.yaml, *.yml) in this directory")]
    NoPolicies { file: String },

    /// Malformed YAML, an unknown field, a missing field or a value of the
    /// wrong type.
    #[error("{}{message}{}", at(file, line, column), hint_line(hint))]
    Yaml {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
        /// How to fix a layout mistake, when the cause is one.
        hint: Option<Box<str>>,
    },

    /// The file stem is not a valid environment name.
    #[error(
        "{file}: environment name `{environment}` (the file name without .yaml) must match ^[a-z0-9][a-z0-9_-]*$"
    )]
    InvalidEnvironmentName { file: String, environment: String },

    /// Two files define one environment (`x.yaml` and `x.yml`).
    #[error("{file}: environment `{environment}` is already defined by {other}; keep one file")]
    DuplicateEnvironment {
        file: String,
        environment: String,
        other: String,
    },

    /// The environment as a whole is not usable: no credentials, no rules,
    /// a zero `max_ttl`.
    #[error("{}{message}", at(file, line, column))]
    InvalidEnvironment {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    /// A credential is not usable as written (no kind, several kinds, empty
    /// mount or path, zero TTL).
    #[error("{}credential `{credential}`: {message}", at(file, line, column))]
    InvalidCredential {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        credential: String,
        message: String,
    },

    /// A rule is not usable as written (empty name, empty claims, allow
    /// without grant, deny with grant, invalid glob, zero TTL, ...).
    #[error(
        "{}rule `{rule}`: {message}{}",
        at(file, line, column),
        hint_line(hint)
    )]
    InvalidRule {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        rule: String,
        message: String,
        /// How to fix a layout mistake, when the cause is one.
        hint: Option<Box<str>>,
    },

    /// Two rules of one file share a name.
    #[error(
        "{}rule name `{rule}` is already used at line {first_line}; rule names must be unique within a file",
        at(file, line, column)
    )]
    DuplicateRule {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        rule: String,
        first_line: usize,
    },

    /// A rule names an issuer that jobkey's configuration does not define.
    #[error(
        "{}rule `{rule}` names issuer `{issuer}`, which is not configured (configured: {})",
        at(file, line, column),
        list(configured)
    )]
    UnknownIssuer {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        rule: String,
        issuer: String,
        configured: Box<[String]>,
    },

    /// A rule grants a credential its file does not define.
    #[error(
        "{}rule `{rule}` grants `{credential}`, which is not among this file's credentials ({})",
        at(file, line, column),
        list(available)
    )]
    UnknownCredential {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        rule: String,
        credential: String,
        available: Box<[String]>,
    },
}

impl PolicyError {
    /// The file (or directory) the error is about.
    pub fn file(&self) -> &str {
        match self {
            PolicyError::Io { file, .. }
            | PolicyError::TooLarge { file, .. }
            | PolicyError::NoPolicies { file }
            | PolicyError::Yaml { file, .. }
            | PolicyError::InvalidEnvironmentName { file, .. }
            | PolicyError::DuplicateEnvironment { file, .. }
            | PolicyError::InvalidEnvironment { file, .. }
            | PolicyError::InvalidCredential { file, .. }
            | PolicyError::InvalidRule { file, .. }
            | PolicyError::DuplicateRule { file, .. }
            | PolicyError::UnknownIssuer { file, .. }
            | PolicyError::UnknownCredential { file, .. } => file,
        }
    }

    /// 1-based line of the offending node, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Yaml { line, .. }
            | PolicyError::InvalidEnvironment { line, .. }
            | PolicyError::InvalidCredential { line, .. }
            | PolicyError::InvalidRule { line, .. }
            | PolicyError::DuplicateRule { line, .. }
            | PolicyError::UnknownIssuer { line, .. }
            | PolicyError::UnknownCredential { line, .. } => *line,
            _ => None,
        }
    }
}

/// `FILE:LINE:COLUMN: `, `FILE:LINE: ` or `FILE: `.
pub(crate) fn at(file: &str, line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: "),
        (Some(l), None) => format!("{file}:{l}: "),
        _ => format!("{file}: "),
    }
}

/// The second line of an error with a hint: `\n  hint: ...`.
pub(crate) fn hint_line(hint: &Option<Box<str>>) -> String {
    hint.as_ref()
        .map(|h| format!("\n  hint: {h}"))
        .unwrap_or_default()
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{PolicyIssuer, PolicySet};

    /// Regression: a `grant:` indented into `claims:` was reported as "an
    /// allow rule needs `grant:`" at the rule's name; a list item indented
    /// less than its key gave the parser's bare "expected mapping start";
    /// a tab was reported on the line before it. Each malformed file and
    /// the whole report: `file:line:column: message`, then the hint.
    #[test]
    fn malformed_files_are_reported_at_their_cause() {
        const HEAD: &str = "credentials:\n  db:\n    kv: {mount: s, path: p}\n    ttl: 10m\nrules:\n  - name: r\n    issuer: gh\n";
        // Lines: credentials 1..=4, `rules:` 5, `- name: r` 6, `issuer:` 7, then 8...
        let table: &[(&str, &str)] = &[
            (
                "    claims:\n      repository_id: \"1\"\n      grant: [db]\n",
                "e.yaml:10:7: rule `r`: `grant` on line 10 is indented under `claims:`, so it is read as a condition on a claim named `grant`, and the rule itself has no `grant:`\n  hint: indent `grant:` like the rule's other fields (`name:`, `claims:`), at column 5",
            ),
            (
                "    claims: {repository_id: \"1\", ttl: 5m}\n    grant: [db]\n",
                "e.yaml:8:34: rule `r`: `ttl` on line 8 is indented under `claims:`, so it is read as a condition on a claim named `ttl`, and the rule itself has no `ttl:`\n  hint: indent `ttl:` like the rule's other fields (`name:`, `claims:`), at column 5",
            ),
            (
                "    claims:\n      repository_id: \"1\"\n    grant:\n  - db\n",
                "e.yaml:11:3: expected mapping start: the list item on line 11 is indented less than `grant:` on line 10, so it is not `grant`'s value but an item of the list around it\n  hint: indent the item to at least column 5 (under `grant:`), or write `grant: [db]`",
            ),
            (
                "    claims:\n      repository_id: \"1\"\n\tgrant: [db]\n",
                "e.yaml:10:1: a tab character; YAML indents with spaces only\n  hint: replace the tab with spaces (each nested level by two)",
            ),
            (
                "    claims:\n      repository_id: \"1\"\n    \tgrant: [db]\n",
                "e.yaml:10:5: a tab character; YAML indents with spaces only\n  hint: replace the tab with spaces (each nested level by two)",
            ),
            (
                "    claims:\n\t  repository_id: \"1\"\n    grant: [db]\n",
                "e.yaml:9:1: a tab character; YAML indents with spaces only\n  hint: replace the tab with spaces (each nested level by two)",
            ),
            (
                "    claims:\n      repository_id: \"1\"\n    ref: main\n    grant: [db]\n",
                "e.yaml:10:5: unknown field `ref`, expected one of name, description, effect, issuer, claims, grant, ttl\n  hint: `ref` is level with `claims:` (line 8), so it is not inside it; if it belongs to `claims`, indent it further",
            ),
            (
                "    bogus: 1\n",
                "e.yaml:8:5: unknown field `bogus`, expected one of name, description, effect, issuer, claims, grant, ttl",
            ),
        ];
        let issuers = [PolicyIssuer::new(
            "gh",
            crate::provider::Provider::Github,
            Some("http://127.0.0.1:8401".into()),
        )];
        for (rest, want) in table {
            let src = format!("{HEAD}{rest}");
            let got = PolicySet::from_sources(&[("e.yaml".to_owned(), src.clone())], &issuers)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert_eq!(got, *want, "\n{src}");
        }
        // A message that merely lists `database` is not about a tab, even
        // with a tab in a quoted value further on.
        let src = "credentials:\n  db:\n    kv: {mount: s, path: p}\n    databse: x\n    ttl: 10m\nrules:\n  - name: r\n    issuer: gh\n    claims: {repository_id: \"\t\"}\n    grant: [db]\n";
        let got = PolicySet::from_sources(&[("e.yaml".to_owned(), src.to_owned())], &issuers)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            got.starts_with("e.yaml:4:5: unknown field `databse`, expected one of"),
            "{got}"
        );
    }
}
