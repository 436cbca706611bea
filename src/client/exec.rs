//! `--exec -- COMMAND…`: runs the command with the credentials in its
//! environment (and without the variables that mint ID tokens, unless
//! asked to keep them), forwards the signals a CI sends on cancel (SIGINT, SIGTERM,
//! SIGHUP, SIGQUIT) to it, and returns the exit code to pass on (128 + the
//! signal number when the command was killed by a signal, as shells do).

use std::os::unix::process::ExitStatusExt;

use tokio::signal::unix::{SignalKind, signal};

use super::ClientError;
use crate::secret::SecretString;

/// Runs `command` with jobkey's own environment less the variables in
/// `remove`, plus `env`.
pub(super) async fn run(
    command: &[String],
    env: &[(String, SecretString)],
    remove: &[String],
) -> Result<u8, ClientError> {
    let Some((program, args)) = command.split_first() else {
        return Err(ClientError::Usage(
            "--exec needs a command after `--`".into(),
        ));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    for k in remove {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v.expose_secret());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| ClientError::Exec(format!("{program}: {e}")))?;
    let pid = child.id();
    let mut signals = Vec::new();
    for (kind, name) in [
        (SignalKind::interrupt(), "INT"),
        (SignalKind::terminate(), "TERM"),
        (SignalKind::hangup(), "HUP"),
        (SignalKind::quit(), "QUIT"),
    ] {
        let s =
            signal(kind).map_err(|e| ClientError::Exec(format!("cannot watch signals: {e}")))?;
        signals.push((s, name));
    }
    let status = loop {
        let [(int, _), (term, _), (hup, _), (quit, _)] = &mut signals[..] else {
            unreachable!("four signals are registered above");
        };
        let forwarded = tokio::select! {
            status = child.wait() => break status.map_err(|e| ClientError::Exec(format!("{program}: {e}")))?,
            _ = int.recv() => "INT",
            _ = term.recv() => "TERM",
            _ = hup.recv() => "HUP",
            _ = quit.recv() => "QUIT",
        };
        if let Some(pid) = pid {
            forward(forwarded, pid);
        }
    };
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        (None, None) => 1,
    })
}

/// Sends `sig` to `pid` through the shell's `kill` (jobkey has no unsafe
/// code, so no direct `kill(2)`).
fn forward(sig: &str, pid: u32) {
    let _ = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            "kill -s \"$0\" \"$1\" 2>/dev/null",
            sig,
            &pid.to_string(),
        ])
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn exit_codes_and_environment_pass_through() {
        let cmd = |s: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), s.to_owned()];
        // (script, env, expected code)
        let cases = [
            ("exit 0", 0u8),
            ("exit 3", 3),
            ("test \"$JOBKEY_A_B\" = 'v a l'", 0),
            ("kill -s TERM $$", 128 + 15),
        ];
        for (script, want) in cases {
            let env = [("JOBKEY_A_B".to_owned(), SecretString::new("v a l".into()))];
            assert_eq!(
                run(&cmd(script), &env, &[]).await.unwrap(),
                want,
                "{script}"
            );
        }
        // A variable of jobkey's own environment, removed, is gone from
        // the command's (the shell sets PATH itself, so not that one).
        let inherited = std::env::vars()
            .map(|(k, _)| k)
            .find(|k| k != "PATH" && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .expect("the test runs with some environment");
        let script = format!("test -z \"${{{inherited}+set}}\"");
        assert_eq!(
            run(&cmd(&script), &[], &[]).await.unwrap(),
            1,
            "{inherited} is inherited"
        );
        assert_eq!(
            run(&cmd(&script), &[], std::slice::from_ref(&inherited))
                .await
                .unwrap(),
            0,
            "{inherited} is removed"
        );
        assert!(
            run(&["/nonexistent/cmd".to_owned()], &[], &[])
                .await
                .is_err()
        );
        assert!(run(&[], &[], &[]).await.is_err());
    }
}
