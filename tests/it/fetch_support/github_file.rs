//! How GitHub's runner reads `$GITHUB_ENV` / `$GITHUB_OUTPUT`: per line,
//! whichever of `=` and `<<` comes first decides; `NAME=VALUE`, or
//! `NAME<<DELIM` and the lines up to one equal to DELIM. Test equipment,
//! written from the runner's format (not from jobkey's writer), so the tests
//! read what `fetch` wrote the way the runner does. The library's unit tests
//! include this same file (`src/client/deliver.rs`): one reader.

/// The `(name, value)` entries of a `$GITHUB_ENV`-style file, in order.
pub(crate) fn parse_github_file(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = s.split('\n');
    while let Some(line) = lines.next() {
        if line.is_empty() {
            continue;
        }
        let heredoc = line.find("<<");
        let assign = line.find('=');
        match (heredoc, assign) {
            (Some(h), a) if a.is_none_or(|a| h < a) => {
                let (name, delim) = (&line[..h], &line[h + 2..]);
                let mut v = Vec::new();
                for l in lines.by_ref() {
                    if l == delim {
                        break;
                    }
                    v.push(l);
                }
                out.push((name.to_owned(), v.join("\n")));
            }
            (_, Some(a)) => out.push((line[..a].to_owned(), line[a + 1..].to_owned())),
            _ => {}
        }
    }
    out
}
