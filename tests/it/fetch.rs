//! `jobkey fetch` as a process, in each CI's clothes, against a running
//! broker and OpenBao: masks come first, files are private, `$GITHUB_ENV`
//! cannot be injected into, `--exec` passes credentials and exit codes, and
//! no secret reaches stdout or stderr outside `::add-mask::` lines.
//!
//! Revocation after `--exec` and `jobkey revoke` are in `fetch_revoke.rs`.

use crate::fetch_support::{
    REQUEST_TOKEN, assert_no_secret_outside_masks, buildkite_stub, fetch, github_env, mode,
    parse_github_file,
};
use crate::support::Stack;
use jobkey::Shape;
use serde_json::{Map, Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_masks_come_first_and_files_are_private() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let out = tmp.path().join("creds");
    let out_s = out.display().to_string();
    let run = fetch("production", &["-c", "deploy-db", "--out", &out_s], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // stdout is the mask commands and nothing else, flushed before any
    // other output; the password is among them.
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(!lines.is_empty());
    assert!(
        lines.iter().all(|l| l.starts_with("::add-mask::")),
        "{lines:?}"
    );
    assert!(lines.contains(&format!("::add-mask::{}", stack.db_password).as_str()));
    assert!(
        run.stderr.contains("production: deploy-db (kv"),
        "{}",
        run.stderr
    );

    // Files: 0600 in directories of 0700, with the values.
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&out.join("deploy-db")), 0o700);
    let pw = out.join("deploy-db/password");
    assert_eq!(mode(&pw), 0o600);
    assert_eq!(std::fs::read_to_string(&pw).unwrap(), stack.db_password);
    assert_eq!(
        std::fs::read_to_string(out.join("deploy-db/username")).unwrap(),
        "deploy"
    );
    // Nothing went into the job's environment.
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("github_env")).unwrap(),
        ""
    );

    assert_no_secret_outside_masks(&run, &[&stack.db_password, REQUEST_TOKEN]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_env_cannot_be_injected_into_by_a_hostile_value() {
    let stack = Stack::start().await;
    // A value that tries to end the heredoc with a guessed delimiter and
    // set variables of its own.
    let hostile = "line1\nghadelimiter_00000000-0000-0000-0000-000000000000\nEVIL=1\nLD_PRELOAD<<X\n/tmp/e.so\nX";
    stack.bao.put_deploy_db(hostile);
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let run = fetch("production", &["--github-env", "--github-output"], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let written = std::fs::read_to_string(tmp.path().join("github_env")).unwrap();
    let vars = parse_github_file(&written);
    assert_eq!(
        vars,
        vec![
            ("JOBKEY_DEPLOY_DB_PASSWORD".to_owned(), hostile.to_owned()),
            ("JOBKEY_DEPLOY_DB_USERNAME".to_owned(), "deploy".to_owned()),
        ],
        "exactly the two variables, the hostile value intact: {written}"
    );
    let outputs =
        parse_github_file(&std::fs::read_to_string(tmp.path().join("github_output")).unwrap());
    let names: Vec<&str> = outputs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["deploy_db_password", "deploy_db_username"]);
    // Each line of the hostile value was masked (it has lines of 8+ chars).
    assert!(
        run.stdout.contains("::add-mask::ghadelimiter_00000000"),
        "{}",
        run.stdout
    );
    assert_no_secret_outside_masks(&run, &["ghadelimiter_0000", "LD_PRELOAD"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitlab_gets_files_only_and_a_notice_that_it_cannot_mask() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let token = stack.gitlab_token();
    let out = tmp.path().join("secrets");
    let env = vec![
        ("GITLAB_CI", "true".to_owned()),
        ("JOBKEY_ID_TOKEN", token.clone()),
        ("JOBKEY_URL", stack.url.clone()),
        ("TMPDIR", tmp.path().display().to_string()),
    ];
    let run = fetch("staging", &["--out", &out.display().to_string()], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        run.stdout, "",
        "GitLab cannot mask: nothing is printed on stdout"
    );
    assert!(
        run.stderr
            .contains("GitLab CI cannot mask values at run time"),
        "{}",
        run.stderr
    );
    // `region` (9 chars) is masked; nothing short is in the output anyway.
    let key = out.join("app-config/api_key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(std::fs::read_to_string(key).unwrap(), stack.app_key);
    assert_no_secret_outside_masks(&run, &[&stack.app_key, &token]);

    // Without the `id_tokens:` variable: a message that says how to add it.
    let run = fetch(
        "staging",
        &[],
        &[
            ("GITLAB_CI", "true".into()),
            ("JOBKEY_URL", stack.url.clone()),
        ],
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("id_tokens: JOBKEY_ID_TOKEN: aud: jobkey"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buildkite_redactor_gets_the_values_on_stdin_never_in_argv() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let token = stack.github_token(json!({}));
    let bin = buildkite_stub(tmp.path(), &token);
    let out = tmp.path().join("creds");
    let env = vec![
        ("BUILDKITE", "true".to_owned()),
        ("PATH", bin.display().to_string()),
        ("JOBKEY_URL", stack.url.clone()),
    ];
    let run = fetch("production", &["--out", &out.display().to_string()], &env).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let argv = std::fs::read_to_string(tmp.path().join("argv.log")).unwrap();
    let calls: Vec<&str> = argv.lines().collect();
    assert_eq!(
        calls,
        [
            "oidc request-token --audience jobkey",
            "redactor add --format json"
        ],
        "the token first, then one redactor call"
    );
    assert!(!argv.contains(&stack.db_password) && !argv.contains(&token));
    let stdin: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("stdin-2")).unwrap())
            .unwrap();
    let values: Vec<&str> = stdin
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(values.contains(&stack.db_password.as_str()), "{values:?}");
    assert!(
        values.contains(&token.as_str()),
        "the ID token is redacted too"
    );
    assert_eq!(run.stdout, "");
    assert_eq!(
        std::fs::read_to_string(out.join("deploy-db/password")).unwrap(),
        stack.db_password
    );
    assert_no_secret_outside_masks(&run, &[&stack.db_password, &token]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_the_credentials_and_the_exit_code_and_writes_nothing_to_the_job() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let seen = tmp.path().join("seen");
    let script = format!(
        "printf %s \"$JOBKEY_DEPLOY_DB_PASSWORD\" > '{s}'; cat \"$JOBKEY_CREDENTIALS_DIR/deploy-db/username\" >> '{s}'; echo \"$JOBKEY_CREDENTIALS_DIR\" > '{s}.dir'; exit 7",
        s = seen.display()
    );
    let run = fetch(
        "production",
        &["--exec", "--", "/bin/sh", "-c", &script],
        &env,
    )
    .await;
    assert_eq!(run.code, Some(7), "the command's exit code: {}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("{}deploy", stack.db_password)
    );
    assert!(!run.stdout.is_empty(), "the masks come first");
    assert!(
        run.stdout.lines().all(|l| l.starts_with("::add-mask::")),
        "{}",
        run.stdout
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("github_env")).unwrap(),
        ""
    );
    let dir = std::fs::read_to_string(format!("{}.dir", seen.display())).unwrap();
    assert!(
        !std::path::Path::new(dir.trim()).exists(),
        "the files are removed afterwards"
    );
    assert_no_secret_outside_masks(&run, &[&stack.db_password]);

    // `--exec` does not combine with other deliveries, and a trailing
    // command needs `--exec`: refused before any token is asked for, so
    // nothing is exchanged and nothing written.
    let exchanges = stack.audit_lines().len();
    let cases: [(&[&str], i32, &str); 2] = [
        (
            &["--exec", "--github-env", "--", "true"],
            1,
            "--exec runs the command with the credentials and revokes them when it exits; it does not combine with --out, --github-env or --github-output",
        ),
        (&["--", "true"], 2, "a command after `--` needs --exec"),
    ];
    for (extra, code, message) in cases {
        let run = fetch("production", extra, &env).await;
        assert_eq!(run.code, Some(code), "{extra:?}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{extra:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{extra:?}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("github_env")).unwrap(),
            "",
            "{extra:?}"
        );
        assert_eq!(stack.audit_lines().len(), exchanges, "{extra:?}: exchanged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_show_the_broker_code_and_request_id_only() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({"ref": "refs/heads/feature/x"})).await;
    let run = fetch("production", &[], &env).await;
    assert_eq!(run.code, Some(1));
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("403 no_rule_matched"), "{}", run.stderr);
    assert!(run.stderr.contains("[request_id "), "{}", run.stderr);
    assert!(!run.stderr.contains("refs/heads/main"), "no expected value");
    assert!(
        !tmp.path().join("runner_temp/jobkey").exists(),
        "nothing written"
    );

    // No `id-token: write`: the error names the permission.
    let run = fetch(
        "production",
        &[],
        &[
            ("GITHUB_ACTIONS", "true".into()),
            ("JOBKEY_URL", stack.url.clone()),
        ],
    )
    .await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr.contains("permissions: id-token: write"),
        "{}",
        run.stderr
    );

    // A plain-http broker that is not on loopback is refused before any token is sent.
    let run = fetch("production", &["--url", "http://jobkey.example.com"], &env).await;
    assert_eq!(run.code, Some(1));
    assert!(run.stderr.contains("must be https"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_children_cannot_mint_new_id_tokens() {
    let stack = Stack::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let github = github_env(&stack, tmp.path(), json!({})).await;
    let gitlab_token = stack.gitlab.mint(Shape::Gitlab, "jobkey", &Map::new());
    let buildkite_token = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let bin = buildkite_stub(&tmp.path().join("bk"), &buildkite_token);
    let with = |base: &[(&'static str, String)], more: &[(&'static str, &str)]| {
        let mut env = base.to_vec();
        env.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let url = ("JOBKEY_URL", stack.url.clone());
    // (case, environment, fetch arguments before --exec, the variables
    // that must not reach the command)
    type Case<'a> = (
        &'a str,
        Vec<(&'static str, String)>,
        Vec<&'a str>,
        Vec<&'a str>,
    );
    let cases: [Case; 4] = [
        (
            "github",
            // Another CI's agent token in the environment goes too.
            with(
                &github,
                &[("BUILDKITE_AGENT_ACCESS_TOKEN", "bk-agent-token")],
            ),
            vec!["-e", "production"],
            vec![
                "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                "BUILDKITE_AGENT_ACCESS_TOKEN",
            ],
        ),
        (
            "gitlab",
            with(
                std::slice::from_ref(&url),
                &[("GITLAB_CI", "true"), ("JOBKEY_ID_TOKEN", &gitlab_token)],
            ),
            vec!["-e", "staging"],
            vec!["JOBKEY_ID_TOKEN"],
        ),
        (
            "gitlab, another id_tokens variable",
            with(
                std::slice::from_ref(&url),
                &[("GITLAB_CI", "true"), ("VAULT_ID_TOKEN", &gitlab_token)],
            ),
            vec!["-e", "staging", "--token-env", "VAULT_ID_TOKEN"],
            vec!["VAULT_ID_TOKEN"],
        ),
        (
            "buildkite",
            with(
                &[url.clone(), ("PATH", bin.display().to_string())],
                &[
                    ("BUILDKITE", "true"),
                    ("BUILDKITE_AGENT_ACCESS_TOKEN", "bk-agent-token"),
                ],
            ),
            vec!["-e", "production"],
            vec!["BUILDKITE_AGENT_ACCESS_TOKEN"],
        ),
    ];
    let seen = tmp.path().join("seen");
    for (case, env, args, stripped) in cases {
        // The command writes NAME=<value or unset> for each variable, and
        // shows it had the credentials.
        let script = stripped
            .iter()
            .map(|v| format!("echo \"{v}=${{{v}-unset}}\";"))
            .chain(["ls \"$JOBKEY_CREDENTIALS_DIR\"".to_owned()])
            .collect::<String>();
        let script = format!("{{ {script}; }} > '{}'", seen.display());
        for keep in [false, true] {
            let mut argv = vec!["fetch"];
            argv.extend(&args);
            if keep {
                argv.push("--exec-keep-token-env");
            }
            argv.extend(["--exec", "--", "/bin/sh", "-c", &script]);
            let run = crate::fetch_support::jobkey(&argv, &env).await;
            assert_eq!(run.code, Some(0), "{case}: {}", run.stderr);
            let out = std::fs::read_to_string(&seen).unwrap();
            for v in &stripped {
                let value = &env.iter().find(|(k, _)| k == v).unwrap().1;
                let want = if keep {
                    format!("{v}={value}")
                } else {
                    format!("{v}=unset")
                };
                assert!(out.contains(&want), "{case}, keep={keep}: {out}");
            }
            assert_eq!(
                run.stderr.contains("the command runs without"),
                !keep,
                "{case}: {}",
                run.stderr
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_directories_of_another_user_or_behind_a_symlink_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let stack = Stack::start_revocable().await;
    let tmp = tempfile::tempdir().unwrap();
    let env = github_env(&stack, tmp.path(), json!({})).await;
    let private = |p: &std::path::Path| {
        std::fs::create_dir(p).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700)).unwrap();
    };
    let real = tmp.path().join("real");
    private(&real);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    // (directory, what stderr says)
    let mut cases = Vec::new();
    if jobkey_runs_as_root() {
        let theirs = tmp.path().join("theirs");
        private(&theirs);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        cases.push((theirs, "belongs to uid 65534".to_owned()));
    }
    cases.push((link.clone(), format!("{} is a symlink", link.display())));
    for (dir, says) in cases {
        let run = crate::fetch_support::jobkey(
            &[
                "fetch",
                "-e",
                "production",
                "--out",
                &dir.display().to_string(),
            ],
            &env,
        )
        .await;
        assert_eq!(run.code, Some(1), "{}", run.stderr);
        assert!(run.stderr.contains(&says), "{}", run.stderr);
        assert!(
            run.stderr.contains("nothing was delivered; revoked"),
            "the exchange is revoked: {}",
            run.stderr
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written in {}",
            dir.display()
        );
        assert!(!tmp.path().join("runner_temp/jobkey").exists(), "no state");
    }
}

/// Whether this test (and the `jobkey` it starts) runs as root, which can
/// give a directory to another user.
fn jobkey_runs_as_root() -> bool {
    rustix::process::geteuid().is_root()
}
