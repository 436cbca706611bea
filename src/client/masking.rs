//! Registering masks with the CI, in the CI's own run-time command,
//! before jobkey writes or prints anything else:
//! - GitHub Actions: `::add-mask::VALUE` on stdout, with `%`, `\r`, `\n`
//!   escaped as `%25`, `%0D`, `%0A`; the mask list already carries each line
//!   of a multi-line value, for runners that do not split lines themselves;
//! - Buildkite: `buildkite-agent redactor add --format json` with a JSON
//!   object of the values on stdin, never on the command line (where `ps`
//!   and the agent's own logs could see them);
//! - Azure DevOps: `##vso[task.setsecret]VALUE` on stdout, escaped as the
//!   agent unescapes command data;
//! - GitLab CI and others cannot mask at run time: nothing is registered,
//!   jobkey prints no secret and says so.

use std::io::Write;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::ClientError;
use super::ci::Ci;
use crate::secret::SecretString;

/// The GitHub command that masks `v`.
pub fn github_command(v: &str) -> String {
    format!(
        "::add-mask::{}",
        v.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    )
}

/// The Azure DevOps command that masks `v`.
pub fn azure_command(v: &str) -> String {
    format!(
        "##vso[task.setsecret]{}",
        v.replace('%', "%AZP25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
            .replace(']', "%5D")
            .replace(';', "%3B")
    )
}

/// The stdin of `buildkite-agent redactor add --format json`: a JSON object
/// whose string values are the masks.
pub fn buildkite_stdin(masks: &[SecretString]) -> SecretString {
    let mut m = serde_json::Map::new();
    for (i, v) in masks.iter().enumerate() {
        m.insert(
            format!("jobkey_{i}"),
            serde_json::Value::String(v.expose_secret().to_owned()),
        );
    }
    let s = serde_json::Value::Object(m).to_string();
    SecretString::new(s)
}

/// What jobkey says on a CI that cannot mask at run time.
pub fn notice(ci: Ci) -> Option<String> {
    match ci {
        Ci::Gitlab | Ci::None => Some(format!(
            "jobkey: {} cannot mask values at run time: jobkey prints no secret; never print the credentials yourself (no `cat`, `env`, `set -x` or `echo` of them)",
            ci.name()
        )),
        _ => None,
    }
}

/// Registers `masks` with `ci`, writing commands to `out` (stdout) and
/// flushing it before returning.
pub async fn register(
    ci: Ci,
    masks: &[SecretString],
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Mask(format!("writing to stdout: {e}"));
    match ci {
        Ci::Github | Ci::Azure => {
            for m in masks {
                let v = m.expose_secret();
                let line = SecretString::new(if ci == Ci::Github {
                    github_command(v)
                } else {
                    azure_command(v)
                });
                out.write_all(line.expose_secret().as_bytes()).map_err(io)?;
                out.write_all(b"\n").map_err(io)?;
            }
            out.flush().map_err(io)
        }
        Ci::Buildkite => {
            if masks.is_empty() {
                return Ok(());
            }
            buildkite(masks).await
        }
        Ci::Gitlab | Ci::None => Ok(()),
    }
}

async fn buildkite(masks: &[SecretString]) -> Result<(), ClientError> {
    let mut child = tokio::process::Command::new("buildkite-agent")
        .args(["redactor", "add", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            ClientError::Mask(format!(
                "cannot run `buildkite-agent redactor add` (needs buildkite-agent 3.66 or later on PATH): {e}"
            ))
        })?;
    let input = buildkite_stdin(masks);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.expose_secret().as_bytes())
            .await
            .map_err(|e| ClientError::Mask(format!("writing to buildkite-agent: {e}")))?;
        stdin
            .shutdown()
            .await
            .map_err(|e| ClientError::Mask(format!("writing to buildkite-agent: {e}")))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .map_err(|_| {
            ClientError::Mask("`buildkite-agent redactor add` did not finish in 60s".into())
        })?
        .map_err(|e| ClientError::Mask(format!("`buildkite-agent redactor add`: {e}")))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(ClientError::Mask(format!(
            "`buildkite-agent redactor add` failed ({}): {} (needs buildkite-agent 3.66 or later)",
            out.status,
            why.lines().next().unwrap_or("").trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_escape_what_the_runners_unescape() {
        // (value, github, azure)
        let cases = [
            (
                "plain-value",
                "::add-mask::plain-value",
                "##vso[task.setsecret]plain-value",
            ),
            (
                "a%0Ab",
                "::add-mask::a%250Ab",
                "##vso[task.setsecret]a%AZP250Ab",
            ),
            (
                "l1\r\nl2\n",
                "::add-mask::l1%0D%0Al2%0A",
                "##vso[task.setsecret]l1%0D%0Al2%0A",
            ),
            ("x];y", "::add-mask::x];y", "##vso[task.setsecret]x%5D%3By"),
        ];
        for (v, gh, az) in cases {
            assert_eq!(github_command(v), gh, "{v:?}");
            assert_eq!(azure_command(v), az, "{v:?}");
            assert!(!github_command(v).contains('\n'), "one line per command");
        }
    }

    #[test]
    fn buildkite_gets_a_json_object_of_strings() {
        let m = [
            SecretString::new("a\"b\nc".into()),
            SecretString::new("second-val".into()),
        ];
        let v: serde_json::Value =
            serde_json::from_str(buildkite_stdin(&m).expose_secret()).unwrap();
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 2);
        assert!(o.values().any(|x| x == "a\"b\nc"));
    }

    #[tokio::test]
    async fn github_registration_is_flushed_lines_only() {
        let m = [SecretString::new("line-one\nline-two".into())];
        let mut out = Vec::new();
        register(Ci::Github, &m, &mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "::add-mask::line-one%0Aline-two\n"
        );
        let mut out = Vec::new();
        register(Ci::Gitlab, &m, &mut out).await.unwrap();
        assert!(out.is_empty(), "GitLab gets nothing on stdout");
        assert!(notice(Ci::Gitlab).unwrap().contains("cannot mask"));
        assert!(notice(Ci::Github).is_none());
    }
}
