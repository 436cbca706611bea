//! Registering masks with the CI, in the CI's own run-time command (its
//! entry in the provider table says which), before jobkey writes or prints
//! anything else:
//! - GitHub Actions and Forgejo Actions: `::add-mask::VALUE` on stdout, with `%`, `\r`, `\n`
//!   escaped as `%25`, `%0D`, `%0A`; the mask list already carries each line
//!   of a multi-line value, for runners that do not split lines themselves;
//! - Buildkite: `buildkite-agent redactor add --format json` with a JSON
//!   object of the values on stdin, never on the command line (where `ps`
//!   and the agent's own logs could see them);
//! - Azure DevOps: `##vso[task.setsecret]VALUE` on stdout, escaped as the
//!   agent unescapes command data;
//! - GitLab CI and the others cannot mask at run time: nothing is
//!   registered, jobkey prints no secret and says so.

use std::io::Write;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::ClientError;
use super::ci::Ci;
use crate::provider::MaskCommand;
use crate::secret::SecretString;

/// The GitHub command that masks `v`.
pub(super) fn github_command(v: &str) -> String {
    format!(
        "::add-mask::{}",
        v.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    )
}

/// The Azure DevOps command that masks `v`.
pub(super) fn azure_command(v: &str) -> String {
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
pub(super) fn buildkite_stdin(masks: &[SecretString]) -> SecretString {
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
pub(super) fn notice(ci: Ci) -> Option<String> {
    match ci.client().mask {
        MaskCommand::None => Some(format!(
            "jobkey: {} cannot mask values at run time: jobkey prints no secret; never print the credentials yourself (no `cat`, `env`, `set -x` or `echo` of them)",
            ci.title()
        )),
        _ => None,
    }
}

/// Registers `masks` with `ci`, writing commands to `out` (stdout) and
/// flushing it before returning.
pub(super) async fn register(
    ci: Ci,
    masks: &[SecretString],
    out: &mut dyn Write,
) -> Result<(), ClientError> {
    let io = |e: std::io::Error| ClientError::Mask(format!("writing to stdout: {e}"));
    let line: fn(&str) -> String = match ci.client().mask {
        MaskCommand::AddMaskLine => github_command,
        MaskCommand::SetSecretLine => azure_command,
        MaskCommand::BuildkiteRedactor if masks.is_empty() => return Ok(()),
        MaskCommand::BuildkiteRedactor => return buildkite(masks).await,
        MaskCommand::None => return Ok(()),
    };
    for m in masks {
        let command = SecretString::new(line(m.expose_secret()));
        out.write_all(command.expose_secret().as_bytes())
            .map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)
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
    async fn each_ci_gets_its_mask_lines_or_a_notice() {
        let m = [SecretString::new("line-one\nline-two".into())];
        // (CI, what it gets on stdout, whether jobkey says it cannot mask)
        let table: &[(Ci, &str, bool)] = &[
            (Ci::Github, "::add-mask::line-one%0Aline-two\n", false),
            (Ci::Forgejo, "::add-mask::line-one%0Aline-two\n", false),
            (
                Ci::AzureDevops,
                "##vso[task.setsecret]line-one%0Aline-two\n",
                false,
            ),
            (Ci::Gitlab, "", true),
            (Ci::Circleci, "", true),
            (Ci::Bitbucket, "", true),
            (Ci::Generic, "", true),
        ];
        for (ci, want, silent) in table {
            let mut out = Vec::new();
            register(*ci, &m, &mut out).await.unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), *want, "{ci:?}");
            assert_eq!(notice(*ci).is_some(), *silent, "{ci:?}");
        }
        assert!(
            notice(Ci::Gitlab)
                .unwrap()
                .contains("GitLab CI cannot mask values at run time")
        );
        assert!(notice(Ci::Buildkite).is_none());
    }
}
