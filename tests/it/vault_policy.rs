//! jobkey's Vault identity at least privilege, against a real OpenBao:
//! a policy file cannot make jobkey mint a token with a policy outside the
//! config's allow-list (refused at every load, and at issue time); the
//! token role in Vault refuses it even when jobkey asks; the documented
//! policy (`examples/vault/jobkey-policy.hcl`) has no sudo and is enough
//! for every credential kind the test stack seeds.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::openbao::{JOBKEY_ROLE, vault_example};
use crate::support::{OpenBao, Options, Stack, engines, random};
use jobkey::Shape;
use jobkey::{TokenRole, Vault, VaultAuth, VaultConfig, VaultError};
use serde_json::{Map, Value, json};

/// A Vault policy that can do anything: what a policy writer must not be
/// able to hand a job.
const ADMIN: &str = "path \"*\" { capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\", \"sudo\"] }\n";

const RULE: &str = "rules:\n  - name: deploy\n    issuer: github\n    claims:\n      repository: acme/api\n      ref: refs/heads/main\n    grant: [";

/// `production.yaml` in `dir` with one `vault_token` credential `name`
/// carrying `policies`, granted to the acme/api deploy.
fn token_policy(dir: &Path, name: &str, policies: &str) -> PathBuf {
    let file = dir.join("production.yaml");
    std::fs::write(
        &file,
        format!(
            "credentials:\n  {name}:\n    vault_token: {{policies: [{policies}]}}\n    ttl: 5m\n{RULE}{name}]\n"
        ),
    )
    .unwrap();
    file
}

/// How many live tokens carry `policy`, asked as root.
async fn tokens_with_policy(bao: &OpenBao, policy: &str) -> usize {
    let http = reqwest::Client::new();
    let list: Value = http
        .request(
            reqwest::Method::from_bytes(b"LIST").unwrap(),
            format!("{}/v1/auth/token/accessors", bao.addr()),
        )
        .header("X-Vault-Token", bao.root_token())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut n = 0;
    for acc in list["data"]["keys"].as_array().unwrap() {
        let info: Value = http
            .post(format!("{}/v1/auth/token/lookup-accessor", bao.addr()))
            .header("X-Vault-Token", bao.root_token())
            .json(&json!({ "accessor": acc }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let policies = info["data"]["policies"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if policies.iter().any(|p| p == policy) {
            n += 1;
        }
    }
    n
}

/// A Vault handle logged in with the documented policy, whose config
/// allows `allowed` (the Vault role may allow less).
async fn jobkey_vault(bao: &OpenBao, allowed: &[&str]) -> Vault {
    jobkey::install_rustls_ring_provider();
    let file = bao.write_file(
        &format!("jobkey-token-{}", random(6)),
        &bao.jobkey_token("1h"),
    );
    Vault::connect(VaultConfig {
        address: bao.url(),
        ca_file: None,
        auth: VaultAuth::TokenFile(file),
        request_timeout: Duration::from_secs(3),
        token_role: Some(TokenRole {
            name: JOBKEY_ROLE.into(),
            allowed_policies: allowed.iter().map(|s| s.to_string()).collect(),
        }),
    })
    .await
    .expect("connect with the documented policy")
}

/// The message every refused load must carry: the file, the credential,
/// the policy and the allowed list.
fn assert_names_everything(e: &str, file: &Path) {
    for part in [
        &format!("{}:", file.display()),
        "credential `admin-token`",
        "`admin`",
        "job-read",
        "allowed_token_policies",
    ] {
        assert!(e.contains(part), "missing {part:?} in: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_file_cannot_mint_admin_token() {
    let policies = tempfile::tempdir().unwrap();
    token_policy(policies.path(), "deploy-token", "job-read");
    let stack = Stack::start_with(Options {
        policy_dir: Some(policies.path().to_path_buf()),
        vault_auth: Some(Box::new(|bao, dir| {
            bao.bao_stdin(&["policy", "write", "admin", "-"], Some(ADMIN));
            bao.jobkey_token_auth(dir, "1h")
        })),
        token_policies: Some(vec!["job-read"]),
        ..Default::default()
    })
    .await;
    let jwt = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let admins_before = tokens_with_policy(&stack.bao, "admin").await;

    // The same policy set with an `admin` token, as its own directory.
    let bad = tempfile::tempdir().unwrap();
    let bad_file = token_policy(bad.path(), "admin-token", "job-read, admin");
    let config_text = std::fs::read_to_string(&stack.config_path)
        .unwrap()
        .replace(
            &format!("policy_dir = \"{}\"", policies.path().display()),
            &format!("policy_dir = \"{}\"", bad.path().display()),
        );
    let bad_config = stack.dir.path().join("bad.toml");
    std::fs::write(&bad_config, &config_text).unwrap();

    // `jobkey check` refuses it, and so do the policy tools given the config.
    for args in [&["check"][..], &["policy", "lint"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jobkey"))
            .args(args)
            .arg("--config")
            .arg(&bad_config)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "jobkey {args:?} accepted an admin token"
        );
        assert_names_everything(&String::from_utf8_lossy(&out.stderr), &bad_file);
    }

    // Start-up refuses it.
    let cfg = jobkey::Config::load(&bad_config).unwrap();
    match jobkey::AppState::build(&cfg).await {
        Ok(_) => panic!("a server started with an admin token in its policies"),
        Err(e) => assert_names_everything(&e.to_string(), &bad_file),
    }

    // Without any token role configured, any vault_token is refused, and
    // the message says what to configure.
    let no_role = config_text
        .lines()
        .filter(|l| !l.starts_with("token_role") && !l.starts_with("allowed_token_policies"))
        .collect::<Vec<_>>()
        .join("\n");
    let no_role_config = stack.dir.path().join("no-role.toml");
    std::fs::write(&no_role_config, no_role).unwrap();
    let cfg = jobkey::Config::load(&no_role_config).unwrap();
    assert!(cfg.vault.token_role.is_none());
    let e = jobkey::AppState::build(&cfg)
        .await
        .err()
        .expect("vault_token without a token role")
        .to_string();
    assert!(
        e.contains("credential `admin-token`")
            && e.contains("names no Vault token role")
            && e.contains("token_role = \"jobkey-job\""),
        "{e}"
    );

    // Hot reload refuses it: the previous set keeps serving, /readyz says
    // the policies are stale (why is in the log and `jobkey check`, which
    // the lines above test), and a job asking for the admin token gets
    // nothing.
    let serving = policies.path().join("production.yaml");
    std::fs::copy(&bad_file, &serving).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ready) = stack.get_json("/readyz").await;
        if ready["policies"]["status"] == "stale" {
            assert!(ready["policies"]["refused_at"].is_string(), "{ready}");
            assert!(ready["policies"].get("error").is_none(), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "reload not refused: {ready}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["admin-token"]}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("unknown_credential")),
        "{body}"
    );
    let (status, body) = stack
        .exchange(
            &jwt,
            json!({"environment": "production", "credentials": ["deploy-token"]}),
        )
        .await;
    assert_eq!(status, 200, "the previous set still serves: {body}");

    // At issue time too: the vault layer refuses before any request.
    let vault = jobkey_vault(&stack.bao, &["job-read"]).await;
    let e = vault
        .create_token(&["admin".to_owned()], Duration::from_secs(60), None, "t")
        .await
        .unwrap_err();
    match &e {
        VaultError::NotAllowed { reason } => {
            assert!(
                reason.contains("`admin`") && reason.contains("job-read"),
                "{reason}"
            )
        }
        other => panic!("expected NotAllowed, got {other:?}"),
    }
    assert!(!e.is_retryable());

    // Nothing of this reached Vault: no token carries `admin`.
    assert_eq!(tokens_with_policy(&stack.bao, "admin").await, admins_before);
    assert_eq!(admins_before, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_caps_token_policies_even_if_jobkey_asks() {
    let bao = OpenBao::start();
    bao.bao_stdin(&["policy", "write", "admin", "-"], Some(ADMIN));
    engines::job_policy(&bao);
    // Vault's role allows job-read only; this jobkey's config (mistaken, or
    // a compromised jobkey) would allow admin as well.
    bao.write_jobkey_token_role(&["job-read"]);
    let vault = jobkey_vault(&bao, &["job-read", "admin"]).await;

    for policies in [vec!["admin"], vec!["job-read", "admin"]] {
        let policies: Vec<String> = policies.into_iter().map(String::from).collect();
        let e = vault
            .create_token(&policies, Duration::from_secs(60), None, "t")
            .await
            .unwrap_err();
        assert!(
            matches!(
                &e,
                VaultError::Rejected { what, status: 400, errors }
                    if what == "auth/token/create/jobkey-job"
                        && errors.iter().any(|m| m.contains("allowed policies"))
            ) || matches!(&e, VaultError::PermissionDenied { .. }),
            "{policies:?}: {e:?}"
        );
    }
    assert_eq!(
        tokens_with_policy(&bao, "admin").await,
        0,
        "an admin token exists"
    );
    // jobkey itself is fine: refused requests do not make it unready.
    assert!(vault.is_ready());

    // Control: what the role allows is created, as an orphan capped by the
    // role's max TTL.
    let t = vault
        .create_token(
            &["job-read".to_owned()],
            Duration::from_secs(7200),
            Some(2),
            "t",
        )
        .await
        .expect("a job-read token");
    assert!(t.ttl <= Duration::from_secs(3600), "{:?}", t.ttl);
    let info = bao.bao(&["token", "lookup", "-format=json", "-accessor", &t.accessor]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["data"]["orphan"], true, "{info}");
    assert_eq!(
        info["data"]["policies"],
        json!(["default", "job-read"]),
        "{info}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobkey_policy_has_no_sudo() {
    // As written: no capability line grants sudo, and the only token
    // creation path is the role's.
    let hcl = std::fs::read_to_string(vault_example("jobkey-policy.hcl")).unwrap();
    let rules: Vec<&str> = hcl
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(!rules.iter().any(|l| l.contains("sudo")), "{hcl}");
    let paths: Vec<&str> = rules
        .iter()
        .filter_map(|l| l.strip_prefix("path \""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(paths.contains(&"auth/token/create/jobkey-job"), "{paths:?}");
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("auth/token/create") && *p != "auth/token/create/jobkey-job"),
        "{paths:?}"
    );

    // As Vault enforces it.
    let bao = OpenBao::start();
    bao.bao_stdin(&["policy", "write", "admin", "-"], Some(ADMIN));
    bao.write_jobkey_token_role(&["job-read"]);
    let token = bao.jobkey_token("1h");
    let http = reqwest::Client::new();
    let call = |method: &str, path: &str, body: Value| {
        http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}/v1/{path}", bao.addr()),
        )
        .header("X-Vault-Token", &token)
        .json(&body)
        .send()
    };
    let refused = [
        (
            "POST",
            "auth/token/create-orphan",
            json!({"policies": ["admin"]}),
        ),
        (
            "POST",
            "auth/token/create-orphan",
            json!({"policies": ["default"]}),
        ),
        ("POST", "auth/token/create", json!({"policies": ["admin"]})),
        ("POST", "auth/token/create", json!({})),
        ("POST", "auth/token/create/other-role", json!({})),
        ("PUT", "sys/policies/acl/mine", json!({"policy": ADMIN})),
        ("LIST", "sys/leases/lookup/", json!({})),
        (
            "POST",
            "auth/token/roles/jobkey-job",
            json!({"allowed_policies": ["admin"]}),
        ),
        ("GET", "sys/mounts", json!({})),
    ];
    for (method, path, body) in refused {
        let status = call(method, path, body).await.unwrap().status().as_u16();
        assert_eq!(status, 403, "{method} {path} with jobkey's policy");
    }
    let caps = bao.bao(&["token", "capabilities", &token, "auth/token/create-orphan"]);
    assert_eq!(caps, "deny");
    assert_eq!(tokens_with_policy(&bao, "admin").await, 0);
    // Control: the same client can use what the policy grants.
    let status = call(
        "POST",
        "auth/token/create/jobkey-job",
        json!({"policies": ["job-read"], "ttl": "1m"}),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_policy_is_enough_for_every_credential_kind() {
    let ssh_dir = tempfile::tempdir().unwrap();
    let key = ssh_dir.path().join("id");
    assert!(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let public = std::fs::read_to_string(ssh_dir.path().join("id.pub")).unwrap();
    let names = [
        "kv-db",
        "db",
        "db-wrapped",
        "cert",
        "kube",
        "vt",
        "ssh",
        "mq",
    ];
    let stack = Stack::start_with(Options {
        setup: Some(Box::new(move |bao| {
            engines::database(bao);
            let ca = engines::pki(bao);
            engines::ssh(bao);
            engines::rabbitmq(bao);
            engines::job_policy(bao);
            let creds = format!(
                "  kv-db:\n    kv: {{mount: secret, path: production/deploy-db}}\n    ttl: 10m\n\
                 \x20 db:\n    database: {{role: app}}\n    ttl: 10m\n\
                 \x20 db-wrapped:\n    database: {{role: app}}\n    wrap: true\n    ttl: 10m\n\
                 \x20 cert:\n    certificate: {{role: deploy, common_name: \"api.deploy.internal\"}}\n    ttl: 10m\n\
                 \x20 kube:\n    kubeconfig:\n      server: https://127.0.0.1:6443\n      certificate_authority: |\n{}      client_certificate: {{role: k8s-client, common_name: \"repo:{{repository}}\"}}\n    ttl: 10m\n\
                 \x20 vt:\n    vault_token: {{policies: [job-read]}}\n    ttl: 10m\n\
                 \x20 ssh:\n    ssh_certificate: {{role: deploy, valid_principals: [deploy]}}\n    ttl: 10m\n\
                 \x20 mq:\n    rabbitmq: {{role: app}}\n    ttl: 10m\n",
                engines::yaml_block(&ca, 8)
            );
            engines::policy_dir(bao.dir(), &creds)
        })),
        // A short period, so that jobkey renews its own token during the test.
        vault_auth: Some(Box::new(|bao, dir| bao.jobkey_token_auth(dir, "6s"))),
        token_policies: Some(vec!["job-read"]),
        ..Default::default()
    })
    .await;
    let t0 = Instant::now();
    let jwt = stack.github.mint(Shape::Github, "jobkey", &Map::new());
    let body = json!({
        "environment": "production",
        "credentials": names,
        "ttl": "5m",
        "ssh_public_key": public.trim(),
    });
    let (status, resp) = stack.exchange(&jwt, body.clone()).await;
    assert_eq!(status, 200, "{resp}");
    let creds = &resp["credentials"];
    for name in names {
        assert!(creds.get(name).is_some(), "{name} missing: {resp}");
    }
    // Database leases were shortened to the job's TTL: sys/leases/renew.
    let ttl = creds["db"]["ttl_seconds"].as_u64().unwrap();
    assert!((290..=300).contains(&ttl), "{ttl}");
    assert_eq!(creds["db-wrapped"]["wrapped"], true);
    assert_eq!(
        creds["kv-db"]["values"]["password"],
        stack.db_password.as_str()
    );
    assert!(
        creds["vt"]["values"]["token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // Revocation of everything revocable: two leases (db, mq), the wrapped
    // lease and its wrapping token, two certificates, the token.
    let (status, r) = stack
        .revoke(
            resp["revocation"]["handle"].as_str().unwrap(),
            resp["request_id"].as_str().unwrap(),
        )
        .await;
    assert_eq!((status, r["revoked"].as_u64()), (200, Some(7)), "{r}");
    for prefix in ["database/creds/app/", "rabbitmq/creds/app/"] {
        let out = stack.bao.bao_as(
            stack.bao.root_token(),
            &[
                "list",
                "-format=json",
                &format!("sys/leases/lookup/{prefix}"),
            ],
            None,
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() || text.trim() == "[]",
            "leases left under {prefix}: {text}"
        );
    }

    // Past jobkey's own token period: renewed (auth/token/renew-self), so
    // jobkey is still ready and still serves.
    tokio::time::sleep(Duration::from_secs(9).saturating_sub(t0.elapsed())).await;
    let (status, ready) = stack.get_json("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let (status, resp) = stack.exchange(&jwt, body).await;
    assert_eq!(status, 200, "after a renewal: {resp}");
    let token = std::fs::read_to_string(stack.dir.path().join("jobkey-token")).unwrap();
    let info = stack
        .bao
        .bao(&["token", "lookup", "-format=json", token.trim()]);
    let info: Value = serde_json::from_str(&info).unwrap();
    assert!(info["data"]["last_renewal_time"].is_number(), "{info}");
    assert_eq!(info["data"]["policies"], json!(["jobkey"]), "{info}");
}
