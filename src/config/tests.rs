use std::path::Path;

use super::*;
use crate::token::KeySource;

const BASE: &str = r#"
listen = "127.0.0.1:8400"
audiences = ["jobkey"]
policy_dir = "policies"
[audit]
path = "audit.jsonl"
[vault]
address = "http://127.0.0.1:8200"
[vault.auth]
method = "token"
token_env = "VAULT_TOKEN"
"#;

fn parse(extra: &str) -> Result<Config, String> {
    Config::parse(
        Path::new("/etc/jobkey/jobkey.toml"),
        &format!("{BASE}{extra}"),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn presets_fill_in_issuer_urls() {
    let c = parse(
        r#"
[issuers.github]
preset = "github"
[issuers.ghe]
preset = "github-enterprise"
enterprise = "acme"
[issuers.ghes]
preset = "github-server"
host = "github.acme.internal"
[issuers.gitlab]
preset = "gitlab"
[issuers.selfgl]
preset = "gitlab"
url = "https://gitlab.acme.internal/"
ca_file = "internal-ca.pem"
[issuers.local]
issuer = "http://127.0.0.1:9000"
jwks_file = "jwks.json"
"#,
    )
    .unwrap();
    let by = |n: &str| c.issuers.iter().find(|i| i.name == n).unwrap().clone();
    assert_eq!(
        by("github").issuer,
        "https://token.actions.githubusercontent.com"
    );
    assert_eq!(
        by("ghe").issuer,
        "https://token.actions.githubusercontent.com/acme"
    );
    assert_eq!(
        by("ghes").issuer,
        "https://github.acme.internal/_services/token"
    );
    assert_eq!(by("gitlab").issuer, "https://gitlab.com");
    assert_eq!(by("selfgl").issuer, "https://gitlab.acme.internal");
    assert_eq!(
        by("selfgl").ca_file.unwrap(),
        Path::new("/etc/jobkey/internal-ca.pem")
    );
    assert_eq!(
        by("local").keys,
        KeySource::JwksFile("/etc/jobkey/jwks.json".into())
    );
    assert_eq!(
        by("github").algorithms,
        vec![jsonwebtoken::Algorithm::RS256]
    );
    assert_eq!(c.policy_dir, Path::new("/etc/jobkey/policies"));
}

#[test]
fn errors_name_the_key_and_the_fix() {
    let cases = [
        (
            "[issuers.github]\npreset = \"github\"\nbogus = 1\n",
            "unknown field `bogus`",
        ),
        (
            "[issuers.github]\npreset = \"gihub\"\n",
            "unknown variant `gihub`",
        ),
        (
            "[issuers.x]\nissuer = \"http://gitlab.example.com\"\n",
            "plain http is refused",
        ),
        (
            "[issuers.x]\nissuer = \"https://a.example\"\nalgorithms = [\"HS256\"]\n",
            "HMAC algorithms are never accepted",
        ),
        (
            "[issuers.x]\nissuer = \"https://a.example\"\nalgorithms = [\"none\"]\n",
            "unknown algorithm",
        ),
        (
            "[issuers.x]\nissuer = \"https://a.example\"\njwks_url = \"http://10.0.0.1/jwks\"\n",
            "issuers.x.jwks_url",
        ),
        (
            "[issuers.x]\npreset = \"github-enterprise\"\n",
            "needs `enterprise`",
        ),
        (
            "[issuers.x]\npreset = \"github\"\nissuer = \"https://evil.example\"\n",
            "does not apply to preset",
        ),
        ("[issuers.x]\n", "set a preset"),
        (
            "[issuers.a]\npreset = \"github\"\n[issuers.b]\npreset = \"github\"\n",
            "already configured",
        ),
        ("[issuers.Bad]\npreset = \"github\"\n", "lowercase"),
        (
            "[issuers.x]\nissuer = \"https://a.example\"\nleeway = \"1h\"\n",
            "issuers.x.leeway",
        ),
    ];
    for (extra, want) in cases {
        let e = parse(extra).unwrap_err();
        assert!(e.contains(want), "for {extra:?}: {e}");
        assert!(
            e.starts_with("/etc/jobkey/jobkey.toml"),
            "names the file: {e}"
        );
    }
}

#[test]
fn vault_auth_and_address_are_checked() {
    let base = format!("{BASE}\n[issuers.github]\npreset = \"github\"\n");
    let e = Config::parse(
        Path::new("j.toml"),
        &base.replace("http://127.0.0.1:8200", "http://vault.internal:8200"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("vault.address"), "{e}");
    let e = Config::parse(
        Path::new("j.toml"),
        &base.replace("token_env = \"VAULT_TOKEN\"", ""),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("exactly one of token_file"), "{e}");
    let e = Config::parse(Path::new("j.toml"), "listen = 1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("j.toml"), "{e}");
}

#[test]
fn the_shipped_example_config_loads() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobkey.toml");
    let c = Config::load(&p).unwrap();
    assert!(c.issuers.iter().any(|i| i.name == "github"));
    assert!(c.issuers.iter().any(|i| i.name == "gitlab"));
}

#[test]
fn token_role_and_allowed_policies_go_together() {
    let with = |keys: &str| {
        Config::parse(
            Path::new("/etc/jobkey/jobkey.toml"),
            &format!("{BASE}\n[issuers.github]\npreset = \"github\"\n")
                .replace("[vault.auth]", &format!("{keys}\n[vault.auth]")),
        )
        .map_err(|e| e.to_string())
    };
    let c =
        with("token_role = \"jobkey-job\"\nallowed_token_policies = [\"deploy\", \"job-read\"]")
            .unwrap();
    let role = c.vault.token_role.unwrap();
    assert_eq!(role.name, "jobkey-job");
    assert_eq!(role.allowed_list(), "deploy, job-read");
    assert!(with("").unwrap().vault.token_role.is_none());

    let refused = [
        (
            "token_role = \"jobkey-job\"",
            "vault.allowed_token_policies",
        ),
        ("allowed_token_policies = [\"deploy\"]", "vault.token_role"),
        (
            "token_role = \"jobkey-job\"\nallowed_token_policies = []",
            "at least one",
        ),
        (
            "token_role = \"jobkey-job\"\nallowed_token_policies = [\"deploy\", \"root\"]",
            "`root` can never",
        ),
        (
            "token_role = \"jobkey-job\"\nallowed_token_policies = [\"Admin\"]",
            "lowercase",
        ),
        (
            "token_role = \"../sys\"\nallowed_token_policies = [\"deploy\"]",
            "vault.token_role",
        ),
        (
            "token_role = \"jobkey-job\"\nallowed_token_policies = [\"deploy\"]\ntoken_policies = [\"x\"]",
            "unknown field `token_policies`",
        ),
    ];
    for (keys, want) in refused {
        let e = with(keys).unwrap_err();
        assert!(e.contains(want), "{keys}: {e}");
        assert!(e.starts_with("/etc/jobkey/jobkey.toml"), "{e}");
    }
}
