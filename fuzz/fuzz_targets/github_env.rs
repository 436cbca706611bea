//! The `$GITHUB_ENV` writer of the job client, read back the way GitHub's
//! runner reads the file.
//!
//! Input: one mode byte, then NUL-separated pieces (lossy UTF-8):
//! - even mode: `EXISTING \0 NAME1 \0 VALUE1 \0 NAME2 \0 VALUE2 ...`: a file
//!   holding EXISTING (what earlier steps wrote) gets the entries appended
//!   by the client's writer, each with its own random delimiter;
//! - odd mode: `NAME \0 VALUE \0 HEX`: one entry written with the delimiter
//!   `ghadelimiter_HEX` (the real delimiters' shape, chosen here so that a
//!   value can contain it).
//!
//! Properties, besides "never panics":
//! - what the runner reads from the file is what it read before the write,
//!   followed by exactly the entries written: no extra variable, no
//!   changed value, nothing lost; or the writer refused and the file is
//!   unchanged;
//! - the writer refuses only an unusable name or a value containing the
//!   entry's delimiter, and then quotes no value.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use jobkey::fuzz_api;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let pieces: Vec<&str> = text.split('\0').collect();
    if mode & 1 == 0 {
        append(&pieces);
    } else {
        one_entry(&pieces);
    }
});

/// The scratch file, one per process.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("jobkey-fuzz-github-env-{}", std::process::id()))
    })
}

fn append(pieces: &[&str]) {
    let existing = pieces[0];
    let vars: Vec<(String, String)> = pieces[1..]
        .chunks(2)
        .map(|c| (c[0].to_owned(), c.get(1).copied().unwrap_or("").to_owned()))
        .collect();
    let path = scratch();
    std::fs::write(path, existing).expect("write the scratch file");
    let result = fuzz_api::github_env_append(path, &vars);
    let written = std::fs::read_to_string(path).expect("read the scratch file");
    let _ = std::fs::remove_file(path);

    let names_ok = vars.iter().all(|(n, _)| usable_name(n));
    match result {
        Err(e) => {
            assert_eq!(written, existing, "a refused write changed the file");
            assert!(
                !names_ok,
                "refused with usable names and random delimiters: {e}"
            );
        }
        Ok(()) => {
            assert!(names_ok, "accepted an unusable name: {vars:?}");
            // Only a file the runner can read says what came before; one it
            // cannot read is the earlier steps' problem.
            let Ok(before) = read_github_file(existing) else {
                return;
            };
            let after = read_github_file(&written)
                .unwrap_or_else(|e| panic!("the runner cannot read the file any more: {e}"));
            let mut expected = before;
            expected.extend(vars.iter().cloned());
            assert_eq!(
                after, expected,
                "the runner reads other variables than written"
            );
        }
    }
}

fn one_entry(pieces: &[&str]) {
    let name = pieces[0];
    let value = pieces.get(1).copied().unwrap_or("");
    let hex: String = pieces
        .get(2)
        .copied()
        .unwrap_or("")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    let delimiter = format!("ghadelimiter_{}", if hex.is_empty() { "0" } else { &hex });
    match fuzz_api::github_env_entry(name, value, &delimiter) {
        Ok(entry) => {
            assert!(usable_name(name), "accepted the name {name:?}");
            assert_eq!(
                read_github_file(&entry),
                Ok(vec![(name.to_owned(), value.to_owned())]),
                "the runner reads the entry differently"
            );
        }
        Err(e) => {
            assert!(
                !usable_name(name) || value.contains(&delimiter),
                "refused {name:?}: {e}"
            );
            if usable_name(name) && value.contains(|c: char| !c.is_ascii_graphic() && c != ' ') {
                assert!(!e.contains(value), "the refusal quotes the value");
            }
        }
    }
}

/// A name the writer accepts: ASCII letters, digits, `_` and `-`, not
/// starting with a digit.
fn usable_name(n: &str) -> bool {
    !n.is_empty()
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !n.starts_with(|c: char| c.is_ascii_digit())
}

/// Reads `$GITHUB_ENV` as GitHub's runner does (its `SetEnvFileCommand` on
/// Linux): lines end at `\n`; an empty line is skipped; a line is
/// `NAME=VALUE` when its first `=` comes before any `<<`, otherwise
/// `NAME<<DELIMITER` (both non-empty), whose value is every following line
/// up to one equal to DELIMITER, joined by the newlines between them.
/// Anything else, or a missing delimiter line, makes the runner fail the
/// step: `Err`.
fn read_github_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut index = 0;
    while let Some((line, _)) = read_line(text, &mut index) {
        if line.is_empty() {
            continue;
        }
        let equals = line.find('=');
        let heredoc = line.find("<<");
        match (equals, heredoc) {
            (Some(e), h) if h.is_none_or(|h| e < h) => {
                out.push((line[..e].to_owned(), line[e + 1..].to_owned()));
            }
            (_, Some(h)) => {
                let (name, delimiter) = (&line[..h], &line[h + 2..]);
                if name.is_empty() || delimiter.is_empty() {
                    return Err(format!("invalid format {line:?}"));
                }
                let start = index;
                let mut end = index;
                loop {
                    match read_line(text, &mut index) {
                        None => return Err(format!("no delimiter line {delimiter:?}")),
                        Some((l, _)) if l == delimiter => break,
                        Some((_, newline)) => end = index - newline,
                    }
                }
                let value = if end > start { &text[start..end] } else { "" };
                out.push((name.to_owned(), value.to_owned()));
            }
            _ => return Err(format!("invalid format {line:?}")),
        }
    }
    Ok(out)
}

/// The line at `index` and the length of its newline (0 at the end of the
/// text); `index` moves past the newline.
fn read_line<'t>(text: &'t str, index: &mut usize) -> Option<(&'t str, usize)> {
    if *index >= text.len() {
        return None;
    }
    let start = *index;
    match text[start..].find('\n') {
        None => {
            *index = text.len();
            Some((&text[start..], 0))
        }
        Some(i) => {
            *index = start + i + 1;
            Some((&text[start..start + i], 1))
        }
    }
}
