//! The broker's `mask` list against what a job really prints of a
//! composite credential: the bare `client-key-data` of a kubeconfig jobkey
//! composed (`kubectl config view --raw -o jsonpath=…`), the key it holds
//! (`| base64 -d`), a JSON key file's `private_key` (`jq -r`), and the
//! password of a database URL. A runner that registered the list shows
//! none of them; what is left is PEM armor that `mask_warnings` names.

use std::path::Path;
use std::process::Command;

use crate::support::{Options, Stack, engines, random};
use jobkey::Shape;
use serde_json::{Map, Value, json};

/// A masker that derives nothing itself: every registered value, longest
/// first, becomes `***` (what GitLab or Buildkite do with the list).
fn shown(masks: &[String], line: &str) -> String {
    let mut sorted: Vec<&String> = masks.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let mut out = line.to_owned();
    for m in sorted {
        out = out.replace(m.as_str(), "***");
    }
    out
}

/// `script` run by `sh -c` with `$F` set to `file`: the lines it prints.
fn printed(script: &str, file: &Path) -> Vec<String> {
    let out = Command::new("sh")
        .args(["-c", script])
        .env("F", file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.trim().is_empty(), "{script} printed nothing");
    text.lines().map(str::to_owned).collect()
}

fn str_of<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{ptr} missing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_jobs_print_of_composite_credentials_is_masked() {
    let db_password = format!("p@ss/{}!", random(16));
    let dsn = format!(
        "postgres://deploy:{}@db.internal:5432/app",
        db_password.replace('@', "%40").replace('/', "%2F")
    );
    let key_file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keys/issuer-b.pem"
    ))
    .unwrap();
    let key_json = json!({
        "type": "service_account",
        "private_key": key_file,
        "client_email": "deployer@acme.iam.example",
        "token_uri": "https://oauth2.example/token",
    })
    .to_string();
    let (dsn_seed, json_seed) = (dsn.clone(), key_json.clone());
    let stack = Stack::start_with(Options {
        setup: Some(Box::new(move |bao| {
            let ca = engines::pki(bao);
            let json_path = bao.write_file("key.json", &json_seed);
            bao.bao(&[
                "kv",
                "put",
                "-mount=secret",
                "production/app",
                &format!("dsn={dsn_seed}"),
                &format!("key_json=@{}", json_path.display()),
            ]);
            let creds = format!(
                "  kube:\n    kubeconfig:\n      server: https://127.0.0.1:1\n      certificate_authority: |\n{}      client_certificate: {{role: k8s-client, common_name: \"repo:{{repository}}\"}}\n    ttl: 10m\n  app:\n    kv: {{mount: secret, path: production/app}}\n    ttl: 10m\n",
                engines::yaml_block(&ca, 8)
            );
            engines::policy_dir(bao.dir(), &creds)
        })),
        ..Default::default()
    })
    .await;
    let jwt = stack
        .github
        .mint(Shape::Github, "jobkey", &Map::<String, Value>::new());
    let (status, resp) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["kube", "app"]}),
        )
        .await;
    assert_eq!(status, 200, "{resp}");
    let masks: Vec<String> = resp["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    let warnings: Vec<String> = resp["mask_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(str_of(&resp, "/credentials/app/values/dsn"), dsn);

    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(&kc, str_of(&resp, "/credentials/kube/values/kubeconfig")).unwrap();
    let kj = dir.path().join("key.json");
    std::fs::write(&kj, str_of(&resp, "/credentials/app/values/key_json")).unwrap();
    let dsn_file = dir.path().join("dsn");
    std::fs::write(&dsn_file, format!("{dsn}\n")).unwrap();
    let key_path = "{.users[0].user.client-key-data}";
    let decoded = "kube.kubeconfig users[0].user.client-key-data, base64-decoded";
    // (what the job runs, its file, the label whose warning lists the armor)
    let cases: Vec<(String, &Path, &str)> = vec![
        (
            format!(r#"kubectl config view --kubeconfig "$F" --raw -o jsonpath='{key_path}'"#),
            &kc,
            "",
        ),
        (
            format!(
                r#"kubectl config view --kubeconfig "$F" --raw -o jsonpath='{key_path}' | base64 -d"#
            ),
            &kc,
            decoded,
        ),
        (
            r#"jq -r .private_key "$F""#.into(),
            &kj,
            "app.key_json private_key",
        ),
        (
            r#"sed -E 's|^.*://[^:]*:([^@]*)@.*$|\1|' "$F""#.into(),
            &dsn_file,
            "",
        ),
    ];
    for (script, file, armor) in &cases {
        let lines = printed(script, file);
        for line in &lines {
            let s = shown(&masks, line);
            if s.split("***").all(|rest| rest.trim().is_empty()) {
                continue;
            }
            assert!(
                line.starts_with("-----")
                    && warnings
                        .iter()
                        .any(|w| w.starts_with(&format!("{armor}: ")) && w.contains("PEM armor")),
                "{script}: a printed line is not masked; warnings: {warnings:?}"
            );
        }
    }
    // The decoded password, as a database error would print it.
    assert_eq!(
        shown(&masks, &format!("FATAL: password {db_password} refused")),
        "FATAL: password *** refused"
    );
    // Public parts stay readable.
    for public in ["https://oauth2.example/token", "db.internal:5432"] {
        assert_eq!(shown(&masks, public), public);
    }
}

/// The mask list of one `deploy-db` exchange (a KV read, whose hints the
/// server keeps for `[masks] cache_ttl`).
async fn deploy_db_masks(stack: &Stack) -> (Value, Vec<String>) {
    let gh = stack.github_token(json!({}));
    let body = json!({"environment": "production", "credentials": ["deploy-db"]});
    let (status, resp) = stack.exchange(&gh, body).await;
    assert_eq!(status, 200, "{resp}");
    assert!(resp.get("revocation").is_none(), "a KV read: {resp}");
    let mask = resp["mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (resp["credentials"]["deploy-db"]["values"].clone(), mask)
}

/// Kept hints are keyed by the value: a password rotated in Vault is masked
/// in the very next answer, and the old one is no longer listed; with the
/// cache off (`cache_ttl = "0s"`) the list for the same values is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_mask_hints_follow_a_rotated_value_and_match_fresh_ones() {
    let stack = Stack::start().await;
    let (_, first) = deploy_db_masks(&stack).await;
    let (_, again) = deploy_db_masks(&stack).await;
    assert!(first.contains(&stack.db_password), "{first:?}");
    assert_eq!(first, again, "the kept hints are the computed ones");

    let rotated = format!("rotated/{}+pw", random(20));
    stack.bao.put_deploy_db(&rotated);
    let (values, after) = deploy_db_masks(&stack).await;
    assert_eq!(values["password"], rotated.as_str());
    assert!(
        after.contains(&rotated),
        "the new value is masked: {after:?}"
    );
    assert!(
        after.iter().any(|m| m.contains("%2F")),
        "with its encoded forms: {after:?}"
    );
    assert!(
        !after.iter().any(|m| m.contains(&stack.db_password)),
        "no hint of the old value is served for the new one"
    );

    let off = Stack::start_with(Options {
        extra_config: Some("[masks]\ncache_ttl = \"0s\"".into()),
        ..Options::default()
    })
    .await;
    off.bao.put_deploy_db(&rotated);
    let (_, fresh) = deploy_db_masks(&off).await;
    assert_eq!(fresh, after, "the same list with the cache off");
}
