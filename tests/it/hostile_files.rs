//! Files that are not what they seem: a FIFO, a symlink to `/dev/zero` and
//! an oversized file, as the config, in the policy directory, as a policy
//! fixture, as a fixture's token and as the other files `jobkey policy`
//! reads. Each is refused at once with a message naming the file and what
//! it is; none may hang or read until memory runs out (every run has a
//! deadline, and is killed when it passes it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one refusal may take (the binary starts, reads, refuses).
const DEADLINE: Duration = Duration::from_secs(10);

/// Runs the binary with `args`, killing it at the deadline. Returns its exit
/// code and stderr, or `Err` with what it had printed when it hung.
fn jobkey(args: &[&str]) -> Result<(i32, String), String> {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobkey"))
        .args(args)
        .env_remove("JOBKEY_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            return Ok((status.code().unwrap_or(-1), stderr));
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "jobkey {args:?} still running after {DEADLINE:?}: {}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success());
}

/// The three impostors, each made at `path`.
#[derive(Debug, Clone, Copy)]
enum Impostor {
    Fifo,
    DevZero,
    /// A regular file of this many bytes.
    Oversized(usize),
}

impl Impostor {
    fn make(self, path: &Path) {
        match self {
            Impostor::Fifo => mkfifo(path),
            Impostor::DevZero => std::os::unix::fs::symlink("/dev/zero", path).unwrap(),
            Impostor::Oversized(n) => {
                // Valid-looking content, so only the size can refuse it.
                let mut text = String::from("# padding\n");
                while text.len() < n {
                    text.push_str(
                        "# xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n",
                    );
                }
                std::fs::write(path, text).unwrap();
            }
        }
    }

    /// What the message says about it (`limit` for the oversized one).
    fn says(self, oversized: &str) -> String {
        match self {
            Impostor::Fifo => "is a FIFO, not a regular file".into(),
            Impostor::DevZero => "is a character device, not a regular file".into(),
            Impostor::Oversized(_) => oversized.into(),
        }
    }
}

const GITHUB: &str = "github=https://token.actions.githubusercontent.com";

fn shipped(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A policy directory with the shipped production policy.
fn policy_dir(root: &Path) -> PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        shipped("policies/production.yaml"),
        dir.join("production.yaml"),
    )
    .unwrap();
    dir
}

/// A config naming `policies`, written at `path`.
fn config(path: &Path, policies: &Path) {
    std::fs::write(
        path,
        format!(
            "listen = \"127.0.0.1:0\"\naudiences = [\"jobkey\"]\npolicy_dir = \"{}\"\n[audit]\npath = \"audit.jsonl\"\n[vault]\naddress = \"http://127.0.0.1:8200\"\n[vault.auth]\nmethod = \"token\"\ntoken_env = \"VAULT_TOKEN\"\n[issuers.github]\npreset = \"github\"\n",
            policies.display()
        ),
    )
    .unwrap();
}

fn check(what: &str, run: Result<(i32, String), String>, file: &Path, says: &str) {
    check_exit(what, run, file, says, 1);
}

/// [`check`] for a command with its own exit statuses (`policy explain`:
/// 2 when it cannot decide).
fn check_exit(what: &str, run: Result<(i32, String), String>, file: &Path, says: &str, exit: i32) {
    let (code, stderr) = run.unwrap_or_else(|hung| panic!("{what}: {hung}"));
    assert_eq!(code, exit, "{what}: {stderr}");
    let file = file.display().to_string();
    assert!(
        stderr.contains(&file) && stderr.contains(says),
        "{what}: expected {file:?} and {says:?} in: {stderr}"
    );
}

#[test]
fn impostor_files_are_refused_promptly_by_name() {
    let impostors = [
        Impostor::Fifo,
        Impostor::DevZero,
        Impostor::Oversized(2 * 1024 * 1024),
    ];
    for imp in impostors {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let what = |place: &str| format!("{imp:?} as {place}");

        // The config file itself (`check`, and `serve` reads it the same way).
        let cfg = root.join("impostor.toml");
        imp.make(&cfg);
        let started = Instant::now();
        check(
            &what("the config"),
            jobkey(&["check", "--config", cfg.to_str().unwrap()]),
            &cfg,
            &imp.says("is larger than 1 MiB"),
        );
        assert!(started.elapsed() < DEADLINE);

        // A file in the policy directory: `check` (start-up loads the same
        // way), `policy lint`.
        let dir = policy_dir(root);
        let bad = dir.join("staging.yaml");
        imp.make(&bad);
        let good_cfg = root.join("jobkey.toml");
        config(&good_cfg, &dir);
        let policy_says = imp.says("bytes; policy files are limited to 1048576 bytes");
        check(
            &what("a policy file (check)"),
            jobkey(&["check", "--config", good_cfg.to_str().unwrap()]),
            &bad,
            &policy_says,
        );
        check(
            &what("a policy file (lint)"),
            jobkey(&[
                "policy",
                "lint",
                "--issuer",
                GITHUB,
                "--policies",
                dir.to_str().unwrap(),
            ]),
            &bad,
            &policy_says,
        );
        std::fs::remove_file(&bad).unwrap();

        // A fixture file, and a fixture's `token:` file.
        let fixtures = root.join("fixtures");
        std::fs::create_dir_all(&fixtures).unwrap();
        let fixture = fixtures.join("impostor.yaml");
        imp.make(&fixture);
        let test = |fixtures: &Path| {
            jobkey(&[
                "policy",
                "test",
                "--issuer",
                GITHUB,
                "--policies",
                dir.to_str().unwrap(),
                fixtures.to_str().unwrap(),
            ])
        };
        check(
            &what("a fixture file"),
            test(&fixtures),
            &fixture,
            &imp.says("is larger than 1 MiB"),
        );
        std::fs::remove_file(&fixture).unwrap();
        std::fs::write(
            &fixture,
            "cases:\n  - name: from a token file\n    environment: production\n    issuer: github\n    token: token.jwt\n    expect: deny\n",
        )
        .unwrap();
        let token = fixtures.join("token.jwt");
        imp.make(&token);
        check(
            &what("a fixture's token file"),
            test(&fixtures),
            &token,
            &imp.says("is larger than 64 KiB"),
        );

        // `policy explain --claims FILE`.
        let claims = root.join("claims.json");
        imp.make(&claims);
        check_exit(
            &what("a --claims file"),
            jobkey(&[
                "policy",
                "explain",
                "--issuer",
                GITHUB,
                "--policies",
                dir.to_str().unwrap(),
                "--env",
                "production",
                "--as-issuer",
                "github",
                "--claims",
                claims.to_str().unwrap(),
            ]),
            &claims,
            &imp.says("is larger than 1 MiB"),
            2,
        );
    }
}

/// The library entry points the server uses at start-up and on every hot
/// reload, and for pinned JWKS files, refuse the same files.
#[test]
fn the_library_loaders_refuse_impostors_too() {
    use jobkey::{FetchError, FetchSettings, IssuerSettings, KeySource, Verifier};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = 2 * 1024 * 1024;
    for imp in [Impostor::Fifo, Impostor::DevZero, Impostor::Oversized(big)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = policy_dir(tmp.path());
        let bad = dir.join("staging.yml");
        imp.make(&bad);
        let (tx, rx) = std::sync::mpsc::channel();
        let d = dir.clone();
        std::thread::spawn(move || {
            let r = jobkey::PolicySet::load_dir(&d, &["github".into()]).map(drop);
            let _ = tx.send(r.map_err(|e| e.to_string()));
        });
        let got = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("{imp:?}: load_dir hung"));
        let bad_text = bad.display().to_string();
        let size = std::fs::symlink_metadata(&bad).unwrap().len();
        let want = match imp {
            Impostor::Oversized(_) => {
                format!("{bad_text}: is {size} bytes; policy files are limited to 1048576 bytes")
            }
            _ => format!("{bad_text}: cannot read: it {}", imp.says("")),
        };
        assert_eq!(got, Err(want), "{imp:?}");
    }
    for imp in [
        Impostor::Fifo,
        Impostor::DevZero,
        Impostor::Oversized(300 * 1024),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        // A pinned JWKS file: refused above the fetch size cap (256 KiB).
        let jwks = tmp.path().join("jwks.json");
        imp.make(&jwks);
        let v = Verifier::new(
            vec![IssuerSettings {
                name: "pinned".into(),
                issuer: "https://ci.example.com".into(),
                keys: KeySource::JwksFile(jwks.clone()),
                algorithms: vec![jsonwebtoken::Algorithm::RS256],
                leeway: Duration::from_secs(30),
                max_lifetime: Duration::from_secs(900),
                ca_file: None,
                provider: jobkey::Provider::Generic,
            }],
            vec!["jobkey".into()],
            FetchSettings::default(),
            jobkey::DEFAULT_MAX_TOKEN_BYTES,
        )
        .unwrap();
        let failures = rt.block_on(async {
            tokio::time::timeout(DEADLINE, v.warm_up())
                .await
                .unwrap_or_else(|_| panic!("{imp:?}: reading the JWKS file hung"))
        });
        match failures.as_slice() {
            [(name, FetchError::File { path, reason })] => {
                assert_eq!(name, "pinned");
                assert_eq!(path, &jwks.display().to_string());
                assert_eq!(
                    reason,
                    &format!("it {}", imp.says("is larger than 256 KiB"))
                );
            }
            other => panic!("{imp:?}: {other:?}"),
        }

        // The audit fingerprint key (at most 4 KiB), an issuer's CA file
        // (at most 1 MiB), and the audit log `audit verify` reads.
        let big = Impostor::Oversized(2 * 1024 * 1024);
        let imp = if matches!(imp, Impostor::Oversized(_)) {
            big
        } else {
            imp
        };
        let key = tmp.path().join("fingerprint.key");
        imp.make(&key);
        let ca = tmp.path().join("ca.pem");
        imp.make(&ca);
        let log = tmp.path().join("audit.jsonl");
        imp.make(&log);
        let (tx, rx) = std::sync::mpsc::channel();
        let (k, c, l) = (key.clone(), ca.clone(), log.clone());
        std::thread::spawn(move || {
            let key = jobkey::Fingerprinter::load(&k).map(drop);
            // An issuer's CA file is read when its key fetcher is built.
            let ca = Verifier::new(
                vec![IssuerSettings {
                    name: "internal".into(),
                    issuer: "https://gitlab.internal.example".into(),
                    keys: KeySource::Discovery,
                    algorithms: vec![jsonwebtoken::Algorithm::RS256],
                    leeway: Duration::from_secs(30),
                    max_lifetime: Duration::from_secs(900),
                    ca_file: Some(c),
                    provider: jobkey::Provider::Gitlab,
                }],
                vec!["jobkey".into()],
                FetchSettings::default(),
                jobkey::DEFAULT_MAX_TOKEN_BYTES,
            )
            .map(drop);
            let log = jobkey::verify_file(&l).map(drop);
            let _ = tx.send((
                key.map_err(|e| e.to_string()),
                ca.map_err(|e| e.to_string()),
                log.map_err(|e| e.to_string()),
            ));
        });
        let (key_err, ca_err, log_err) = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("{imp:?}: a loader hung"));
        assert_eq!(
            key_err,
            Err(format!(
                "audit log {}: it {}",
                key.display(),
                imp.says("is larger than 4 KiB")
            )),
            "{imp:?}"
        );
        assert_eq!(
            ca_err,
            Err(format!(
                "CA file {}: it {}",
                ca.display(),
                imp.says("is larger than 1 MiB")
            )),
            "{imp:?}"
        );
        match imp {
            // The log is read line by line, with no cap: a large log is
            // fine (this one is not a chain, so it is refused as such).
            Impostor::Oversized(_) => assert!(
                log_err.as_ref().is_err_and(|e| e.contains("line 1")),
                "{log_err:?}"
            ),
            _ => assert_eq!(
                log_err,
                Err(format!("audit log {}: it {}", log.display(), imp.says(""))),
                "{imp:?}"
            ),
        }
    }
}

/// The job's `--token-file` and `--ssh-public-key`, and jobkey's own Vault
/// token file: each impostor is refused promptly, naming the file.
#[test]
fn token_and_key_files_of_the_job_and_of_jobkey_refuse_impostors() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    jobkey::install_rustls_ring_provider();
    // jobkey reads its token file when it logs in, after Vault answered.
    let bao = crate::support::OpenBao::start();
    for imp in [
        Impostor::Fifo,
        Impostor::DevZero,
        Impostor::Oversized(1024 * 1024),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("token");
        imp.make(&bad);
        let b = bad.display().to_string();

        // The job's token file.
        let run = jobkey(&[
            "fetch",
            "-e",
            "production",
            "--ci",
            "none",
            "--url",
            "http://127.0.0.1:9",
            "--token-file",
            &b,
            "--retry-for",
            "0",
        ]);
        check(
            "--token-file",
            run,
            &bad,
            &imp.says("is larger than 64 KiB"),
        );

        // jobkey's own Vault token file: refused before any connection.
        let started = Instant::now();
        let e = rt
            .block_on(jobkey::Vault::connect(jobkey::VaultConfig {
                address: bao.addr().parse().unwrap(),
                auth: jobkey::VaultAuth::TokenFile(bad.clone()),
                request_timeout: Duration::from_secs(1),
                ca_file: None,
                token_role: None,
            }))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            started.elapsed() < DEADLINE,
            "{imp:?}: took {:?}",
            started.elapsed()
        );
        assert!(e.contains(&b), "{imp:?}: {e}");
        let why = match imp {
            Impostor::Oversized(_) => "larger than 64 KiB".to_owned(),
            other => other.says(""),
        };
        assert!(e.contains(why.trim_start_matches("is ")), "{imp:?}: {e}");
    }
}
