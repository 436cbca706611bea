//! Errors found while loading policy files.
//!
//! Every variant names the file it comes from and, where the YAML layer gave
//! one, the line and column. `Display` prints `FILE:LINE:COLUMN: message`
//! (or `FILE: message` without a position), and the message says what to
//! fix. These errors come from untrusted input (policy files); producing
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
    #[error("{}{message}", at(file, line, column))]
    Yaml {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
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
    #[error("{}rule `{rule}`: {message}", at(file, line, column))]
    InvalidRule {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        rule: String,
        message: String,
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

fn at(file: &str, line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{file}:{l}:{c}: "),
        (Some(l), None) => format!("{file}:{l}: "),
        _ => format!("{file}: "),
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
