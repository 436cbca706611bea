use std::path::Path;

use super::*;
use crate::provider::Provider;
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
    // Presets imply their provider; a stand-in URL is generic.
    for (name, provider) in [
        ("github", Provider::Github),
        ("ghe", Provider::Github),
        ("ghes", Provider::Github),
        ("gitlab", Provider::Gitlab),
        ("selfgl", Provider::Gitlab),
        ("local", Provider::Generic),
    ] {
        assert_eq!(by(name).provider, provider, "{name}");
    }
    assert_eq!(
        by("github").max_lifetime,
        std::time::Duration::from_secs(900)
    );
    assert_eq!(
        by("gitlab").max_lifetime,
        std::time::Duration::from_secs(7200)
    );
    assert_eq!(
        by("local").max_lifetime,
        std::time::Duration::from_secs(3600)
    );
}

/// Every preset from the provider table, with its parameter.
#[test]
fn every_preset_of_the_table_loads() {
    let org = "c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e";
    // (preset, parameter line, issuer URL, provider)
    let table = [
        (
            "github",
            "",
            "https://token.actions.githubusercontent.com",
            Provider::Github,
        ),
        (
            "github-enterprise",
            "enterprise = \"acme\"",
            "https://token.actions.githubusercontent.com/acme",
            Provider::Github,
        ),
        (
            "github-server",
            "host = \"ghe.acme.internal\"",
            "https://ghe.acme.internal/_services/token",
            Provider::Github,
        ),
        ("gitlab", "", "https://gitlab.com", Provider::Gitlab),
        (
            "buildkite",
            "",
            "https://agent.buildkite.com",
            Provider::Buildkite,
        ),
        (
            "circleci",
            &format!("organization = \"{org}\""),
            &format!("https://oidc.circleci.com/org/{org}"),
            Provider::Circleci,
        ),
        (
            "bitbucket",
            "workspace = \"acme\"",
            "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc",
            Provider::Bitbucket,
        ),
        (
            "azure-devops",
            &format!("organization = \"{org}\""),
            &format!("https://vstoken.dev.azure.com/{org}"),
            Provider::AzureDevops,
        ),
        (
            "forgejo",
            "url = \"https://codeberg.org/\"",
            "https://codeberg.org/api/actions",
            Provider::Forgejo,
        ),
    ];
    for (preset, param, url, provider) in table {
        let c = parse(&format!("[issuers.x]\npreset = \"{preset}\"\n{param}\n"))
            .unwrap_or_else(|e| panic!("{preset}: {e}"));
        assert_eq!(c.issuers[0].issuer, url, "{preset}");
        assert_eq!(c.issuers[0].provider, provider, "{preset}");
    }
    assert_eq!(table.len(), crate::provider::PRESETS.len());
}

/// `provider =` names the provider of a stand-in or proxied URL; without
/// it, only an exact well-known URL names one; a well-known URL keeps its
/// own provider.
#[test]
fn the_provider_of_an_explicit_issuer() {
    // (entry, provider, or the error it gives)
    let table: &[(&str, Result<Provider, &str>)] = &[
        (
            "issuer = \"http://127.0.0.1:8403\"\nprovider = \"buildkite\"",
            Ok(Provider::Buildkite),
        ),
        ("issuer = \"http://127.0.0.1:8403\"", Ok(Provider::Generic)),
        (
            "issuer = \"https://agent.buildkite.com\"",
            Ok(Provider::Buildkite),
        ),
        (
            "issuer = \"https://agent.buildkite.com\"\nprovider = \"buildkite\"",
            Ok(Provider::Buildkite),
        ),
        (
            "issuer = \"https://token.actions.githubusercontent.com/acme\"",
            Ok(Provider::Github),
        ),
        (
            "issuer = \"https://ghe.example.com/_services/token\"",
            Ok(Provider::Generic),
        ),
        (
            "issuer = \"https://ghe.example.com/_services/token\"\nprovider = \"github\"",
            Ok(Provider::Github),
        ),
        // A well-known shared issuer cannot lose its tenant check.
        (
            "issuer = \"https://agent.buildkite.com\"\nprovider = \"generic\"",
            Err(
                "issuers.x.provider`: \"https://agent.buildkite.com\" is Buildkite's issuer; write provider = \"buildkite\"",
            ),
        ),
        (
            "issuer = \"https://gitlab.com\"\nprovider = \"github\"",
            Err("is GitLab CI's issuer; write provider = \"gitlab\""),
        ),
        (
            "issuer = \"https://a.example\"\nprovider = \"jenkins\"",
            Err("unknown variant `jenkins`"),
        ),
        (
            "preset = \"github\"\nprovider = \"github\"",
            Err("issuers.x.provider`: preset \"github\" is the \"github\" provider already"),
        ),
        (
            "preset = \"buildkite\"\nworkspace = \"acme\"",
            Err("issuers.x.workspace`: `workspace` does not apply to preset \"buildkite\""),
        ),
        (
            "preset = \"circleci\"",
            Err("preset \"circleci\" needs `organization`, e.g. organization = \""),
        ),
        (
            "preset = \"circleci\"\norganization = \"acme\"",
            Err("issuers.x.organization`: write the organisation's id, a UUID"),
        ),
        (
            "preset = \"github-server\"\nhost = \"evil.example/x\"",
            Err("issuers.x.host`: write the host name only"),
        ),
        (
            "issuer = \"https://a.example\"\nworkspace = \"acme\"",
            Err("`workspace` only applies with a preset"),
        ),
    ];
    for (entry, want) in table {
        let got = parse(&format!("[issuers.x]\n{entry}\n")).map(|c| c.issuers[0].provider);
        match (want, got) {
            (Ok(p), Ok(got)) => assert_eq!(got, *p, "{entry}"),
            (Err(fragment), Err(e)) => assert!(e.contains(fragment), "{entry}: {e}"),
            (want, got) => panic!("{entry}: want {want:?}, got {got:?}"),
        }
    }
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

/// Found by the `config` fuzz target: toml's own error text quotes the
/// offending line, and with it the password of a Redis URL.
#[test]
fn a_toml_syntax_error_does_not_quote_the_redis_password() {
    let text = "[state]\nredis_url = \"redis://user:hunter2-secret@127.0.0.1:6379/0\" x\n";
    let e = Config::parse(Path::new("/etc/jobkey/jobkey.toml"), text)
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2-secret"), "{e}");
    // The position toml gives (line 2, column 60: the `x`), without the line.
    assert_eq!(
        e,
        "/etc/jobkey/jobkey.toml: TOML parse error at line 2, column 60: \
         unexpected key or value, expected newline, `#`"
    );
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
    // The demo's stand-ins are on loopback; `provider =` names each, so
    // the Buildkite one gets the shared issuer's tenant check.
    for (name, provider) in [
        ("github", Provider::Github),
        ("gitlab", Provider::Gitlab),
        ("buildkite", Provider::Buildkite),
    ] {
        let i = c.issuers.iter().find(|i| i.name == name);
        assert_eq!(i.map(|i| i.provider), Some(provider), "{name}");
    }
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

#[test]
fn tls_and_metrics_sections() {
    let github = "[issuers.github]\npreset = \"github\"\n";
    let c = parse(&format!(
        "[tls]\ncert_file = \"tls/cert.pem\"\nkey_file = \"/keys/key.pem\"\nclient_ca_file = \"runners.pem\"\n[metrics]\nlisten = \"127.0.0.1:9400\"\n{github}"
    ))
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert_file, Path::new("/etc/jobkey/tls/cert.pem"));
    assert_eq!(tls.key_file, Path::new("/keys/key.pem"));
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/jobkey/runners.pem"))
    );
    assert_eq!(c.metrics_listen, Some("127.0.0.1:9400".parse().unwrap()));
    let plain = parse(github).unwrap();
    assert!(plain.tls.is_none() && plain.metrics_listen.is_none());

    let cases = [
        ("[tls]\ncert_file = \"c.pem\"\n", "missing field `key_file`"),
        (
            "[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nca = \"x\"\n",
            "unknown field `ca`",
        ),
        (
            "[metrics]\nlisten = \"nine\"\n",
            "`metrics.listen`: \"nine\" is not an address",
        ),
        (
            "[metrics]\nlisten = \"0.0.0.0:9400\"\n",
            "listens on loopback only",
        ),
        (
            "[metrics]\nlisten = \"127.0.0.1:8400\"\n",
            "the same address as `listen`",
        ),
    ];
    for (extra, want) in cases {
        let e = parse(&format!("{extra}{github}")).unwrap_err();
        assert!(e.contains(want), "for {extra:?}: {e}");
    }
}

#[test]
fn limits_single_use_and_replica_id() {
    let gh = "[issuers.github]\npreset = \"github\"\n";
    let c = parse(gh).unwrap();
    assert_eq!(c.limits, crate::limits::LimitSettings::default());
    assert!(!c.replica_id.is_empty(), "the host name by default");
    let c = parse(&format!(
        "{gh}single_use = true\n[issuers.gl]\npreset = \"gitlab\"\n[limits]\nper_source = \"off\"\nper_identity = \"10/s\"\nper_identity_burst = 3\n[limits.environments.production]\nper_identity = \"2/min\"\n"
    ))
    .unwrap();
    assert_eq!(c.limits.per_source, None);
    let id = c.limits.per_identity.unwrap();
    assert_eq!((id.count, id.period.as_secs(), id.burst), (10, 1, 3));
    assert_eq!(c.limits.environments["production"].unwrap().count, 2);
    assert_eq!(c.limits.single_use, ["github".to_owned()].into());
    let cases = [
        (
            "[limits]\nper_source = \"lots\"\n",
            "`limits.per_source`: \"lots\" is not a rate",
        ),
        (
            "[limits.environments.production]\nper_identity = \"0/min\"\n",
            "`limits.environments.production.per_identity`",
        ),
        ("[limits]\nmax_entries = 5\n", "`limits.max_entries`"),
        ("[limits]\nper_sources = \"1/s\"\n", "unknown field"),
    ];
    for (extra, want) in cases {
        let e = parse(&format!("{gh}{extra}")).unwrap_err();
        assert!(e.contains(want), "{extra}: {e}");
    }
    let e = Config::parse(
        Path::new("/etc/jobkey/jobkey.toml"),
        &format!(
            "{}{gh}",
            BASE.replace("[audit]\n", "[audit]\nreplica_id = \"a b\"\n")
        ),
    )
    .unwrap_err();
    assert!(e.to_string().contains("`audit.replica_id`"), "{e}");
}
