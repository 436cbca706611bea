//! Which CI the job runs in, and how it gets its OIDC ID token.
//!
//! Detection reads the standard variables (`GITHUB_ACTIONS`, `GITLAB_CI`,
//! `BUILDKITE`, `TF_BUILD`); `--ci` overrides it. The token comes from, in
//! this order: `--token-file`, `--token-env`, then the CI's own mechanism:
//! - GitHub Actions: `GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=AUD` with
//!   `Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`, JSON `.value`
//!   (the job needs `permissions: id-token: write`);
//! - GitLab CI: the variable named by the job's `id_tokens:` entry
//!   (`JOBKEY_ID_TOKEN` unless `--token-env` says otherwise);
//! - Buildkite: `buildkite-agent oidc request-token --audience AUD`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ClientError;
use super::broker::Secret;
use crate::outbound::{AllowedUrl, HttpClient, OutboundError, Request};
use crate::secret::SecretString;

/// The GitLab variable jobkey reads by default (`id_tokens: JOBKEY_ID_TOKEN:`).
pub const DEFAULT_GITLAB_TOKEN_ENV: &str = "JOBKEY_ID_TOKEN";

/// Largest token accepted from any source.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// A CI system, for the token and for the masking command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ci {
    Github,
    Gitlab,
    Buildkite,
    /// Azure DevOps Pipelines.
    Azure,
    /// Anything else: no run-time masking, the token from a file or variable.
    None,
}

impl Ci {
    /// The CI named by the environment (`env` looks a variable up).
    pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Ci {
        let is = |name: &str| {
            env(name)
                .map(|v| v.eq_ignore_ascii_case("true"))
                .unwrap_or(false)
        };
        if is("GITHUB_ACTIONS") {
            Ci::Github
        } else if is("GITLAB_CI") {
            Ci::Gitlab
        } else if is("BUILDKITE") {
            Ci::Buildkite
        } else if is("TF_BUILD") {
            Ci::Azure
        } else {
            Ci::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Ci::Github => "GitHub Actions",
            Ci::Gitlab => "GitLab CI",
            Ci::Buildkite => "Buildkite",
            Ci::Azure => "Azure DevOps",
            Ci::None => "an unknown CI",
        }
    }
}

/// The variables through which a job can obtain new ID tokens, per CI: one
/// table, the only place jobkey lists them. `--exec` leaves them out of the
/// command's environment unless `--exec-keep-token-env` is given, so a
/// command run with the credentials cannot mint tokens of its own (the ID
/// token jobkey used is already spent on its exchange).
pub const TOKEN_ENV: &[(Ci, &[&str])] = &[
    // The request token and URL of GitHub's token endpoint (present with
    // `permissions: id-token: write`).
    (
        Ci::Github,
        &[
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
        ],
    ),
    // The `id_tokens:` variable jobkey reads by default; another one named
    // with `--token-env` is added by `token_env_to_strip`.
    (Ci::Gitlab, &[DEFAULT_GITLAB_TOKEN_ENV]),
    // The agent's access token, with which `buildkite-agent oidc
    // request-token` asks for tokens.
    (Ci::Buildkite, &["BUILDKITE_AGENT_ACCESS_TOKEN"]),
    // The job access token (when mapped into the environment) and the OIDC
    // request URL it is sent to.
    (Ci::Azure, &["SYSTEM_ACCESSTOKEN", "SYSTEM_OIDCREQUESTURI"]),
];

/// The variables `--exec` removes from the command's environment: every
/// CI's in [`TOKEN_ENV`] (a job may run one CI's tools inside another, or
/// pass `--ci`), and the variable the token was read from, if any.
pub fn token_env_to_strip(source: &TokenSource) -> Vec<String> {
    let mut names: Vec<String> = TOKEN_ENV
        .iter()
        .flat_map(|(_, vars)| vars.iter().map(|v| (*v).to_owned()))
        .collect();
    if let TokenSource::Env(name) = source {
        names.push(name.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(std::path::PathBuf),
    Env(String),
    GithubRequest,
    BuildkiteAgent,
}

/// The token source for `ci`, given `--token-file` and `--token-env`.
pub fn token_source(
    ci: Ci,
    token_file: Option<&Path>,
    token_env: Option<&str>,
) -> Result<TokenSource, ClientError> {
    if let Some(f) = token_file {
        return Ok(TokenSource::File(f.to_owned()));
    }
    if let Some(e) = token_env {
        return Ok(TokenSource::Env(e.to_owned()));
    }
    match ci {
        Ci::Github => Ok(TokenSource::GithubRequest),
        Ci::Gitlab => Ok(TokenSource::Env(DEFAULT_GITLAB_TOKEN_ENV.to_owned())),
        Ci::Buildkite => Ok(TokenSource::BuildkiteAgent),
        Ci::Azure | Ci::None => Err(ClientError::Token(format!(
            "on {} jobkey cannot request a token itself: pass --token-file FILE or --token-env NAME",
            ci.name()
        ))),
    }
}

/// Obtains the token from `source` for `audience`.
pub async fn obtain(
    source: &TokenSource,
    audience: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ClientError> {
    let token = match source {
        TokenSource::File(path) => {
            let s = std::fs::read_to_string(path)
                .map_err(|e| ClientError::Token(format!("{}: {e}", path.display())))?;
            SecretString::new(s)
        }
        TokenSource::Env(name) => match env(name) {
            Some(v) => SecretString::new(v),
            None => {
                return Err(ClientError::Token(format!(
                    "the variable {name} is not set; on GitLab CI declare it in the job: `id_tokens: {name}: aud: {audience}`"
                )));
            }
        },
        TokenSource::GithubRequest => github(audience, env).await?,
        TokenSource::BuildkiteAgent => buildkite(audience).await?,
    };
    let trimmed = token.expose_secret().trim();
    if trimmed.is_empty() {
        return Err(ClientError::Token("the token is empty".into()));
    }
    if trimmed.len() > MAX_TOKEN_BYTES {
        return Err(ClientError::Token(format!(
            "the token is longer than {MAX_TOKEN_BYTES} bytes"
        )));
    }
    if trimmed.len() == token.expose_secret().len() {
        Ok(token)
    } else {
        Ok(SecretString::new(trimmed.to_owned()))
    }
}

#[derive(Deserialize)]
struct GithubTokenAnswer {
    value: Secret,
}

async fn github(
    audience: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ClientError> {
    let (Some(url), Some(bearer)) = (
        env("ACTIONS_ID_TOKEN_REQUEST_URL"),
        env("ACTIONS_ID_TOKEN_REQUEST_TOKEN").map(SecretString::new),
    ) else {
        return Err(ClientError::Token(
            "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: give the job `permissions: id-token: write` (and run jobkey in a step of that job, not in a container without those variables)".into(),
        ));
    };
    let mut url = url::Url::parse(&url).map_err(|e| {
        ClientError::Token(format!("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL: {e}"))
    })?;
    url.query_pairs_mut().append_pair("audience", audience);
    let url = AllowedUrl::new(url).map_err(|source| ClientError::Url {
        setting: "ACTIONS_ID_TOKEN_REQUEST_URL",
        source,
    })?;
    let http =
        HttpClient::new(super::broker::http_settings()).map_err(ClientError::TokenEndpoint)?;
    let resp = http
        .send(
            Request::get(&url)
                .authorization("bearer", &bearer)
                .accept_json(),
        )
        .await
        .map_err(ClientError::TokenEndpoint)?;
    let body = resp.success().map_err(|e| match e {
        OutboundError::Status { status, .. } => ClientError::Token(format!(
            "GitHub's token endpoint answered HTTP {status}; check `permissions: id-token: write`"
        )),
        other => ClientError::TokenEndpoint(other),
    })?;
    let answer: GithubTokenAnswer = serde_json::from_slice(body.expose()).map_err(|_| {
        ClientError::Token("GitHub's token endpoint did not answer {\"value\": \"<token>\"}".into())
    })?;
    Ok(answer.value.0)
}

async fn buildkite(audience: &str) -> Result<SecretString, ClientError> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("buildkite-agent")
            .args(["oidc", "request-token", "--audience", audience])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| {
        ClientError::Token("`buildkite-agent oidc request-token` did not finish in 60s".into())
    })?
    .map_err(|e| {
        ClientError::Token(format!(
            "cannot run `buildkite-agent oidc request-token` (is the agent on PATH?): {e}"
        ))
    })?;
    let token = SecretString::new(String::from_utf8(out.stdout).map_err(|_| {
        ClientError::Token("`buildkite-agent oidc request-token` printed non-UTF-8".into())
    })?);
    if !out.status.success() {
        // The agent's own message (stderr) carries no token.
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().next().unwrap_or("").trim();
        return Err(ClientError::Token(format!(
            "`buildkite-agent oidc request-token` failed ({}): {why}",
            out.status
        )));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn detection_reads_the_standard_variables() {
        let cases: &[(&[(&str, &str)], Ci)] = &[
            (&[("GITHUB_ACTIONS", "true")], Ci::Github),
            (&[("GITLAB_CI", "true")], Ci::Gitlab),
            (&[("BUILDKITE", "true")], Ci::Buildkite),
            (&[("TF_BUILD", "True")], Ci::Azure),
            (&[("GITHUB_ACTIONS", "false")], Ci::None),
            (&[("CI", "true")], Ci::None),
            (&[], Ci::None),
        ];
        for (vars, want) in cases {
            let vars: &'static [(&'static str, &'static str)] =
                Box::leak(vars.to_vec().into_boxed_slice());
            assert_eq!(Ci::detect(&env_of(vars)), *want, "{vars:?}");
        }
    }

    #[test]
    fn token_sources_by_ci_and_flags() {
        let f = Path::new("/tmp/t");
        type Case<'a> = (Ci, Option<&'a Path>, Option<&'a str>, Option<TokenSource>);
        let cases: &[Case] = &[
            (Ci::Github, None, None, Some(TokenSource::GithubRequest)),
            (
                Ci::Gitlab,
                None,
                None,
                Some(TokenSource::Env("JOBKEY_ID_TOKEN".into())),
            ),
            (
                Ci::Gitlab,
                None,
                Some("VAULT_ID_TOKEN"),
                Some(TokenSource::Env("VAULT_ID_TOKEN".into())),
            ),
            (Ci::Buildkite, None, None, Some(TokenSource::BuildkiteAgent)),
            (Ci::Github, Some(f), None, Some(TokenSource::File(f.into()))),
            (Ci::None, None, None, None),
            (Ci::Azure, None, None, None),
        ];
        for (ci, file, env, want) in cases {
            let got = token_source(*ci, *file, *env).ok();
            assert_eq!(&got, want, "{ci:?}");
        }
    }

    #[test]
    fn exec_strips_every_variable_that_mints_id_tokens() {
        let every = [
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            "BUILDKITE_AGENT_ACCESS_TOKEN",
            "JOBKEY_ID_TOKEN",
            "SYSTEM_ACCESSTOKEN",
            "SYSTEM_OIDCREQUESTURI",
        ];
        // (token source, what is stripped besides every CI's variables)
        let cases: [(TokenSource, Option<&str>); 4] = [
            (TokenSource::GithubRequest, None),
            (TokenSource::BuildkiteAgent, None),
            (
                TokenSource::Env("VAULT_ID_TOKEN".into()),
                Some("VAULT_ID_TOKEN"),
            ),
            (TokenSource::File("/t".into()), None),
        ];
        for (source, extra) in cases {
            let mut want: Vec<&str> = every.iter().copied().chain(extra).collect();
            want.sort();
            assert_eq!(token_env_to_strip(&source), want, "{source:?}");
        }
        // Every CI that can mint tokens has its row.
        for ci in [Ci::Github, Ci::Gitlab, Ci::Buildkite, Ci::Azure] {
            assert!(
                TOKEN_ENV.iter().any(|(c, v)| *c == ci && !v.is_empty()),
                "{ci:?}"
            );
        }
    }

    #[tokio::test]
    async fn github_without_id_token_permission_names_the_permission() {
        let e = obtain(
            &TokenSource::GithubRequest,
            "jobkey",
            &env_of(&[("GITHUB_ACTIONS", "true")]),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().contains("permissions: id-token: write"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_missing_gitlab_variable_says_how_to_declare_it() {
        let e = obtain(
            &TokenSource::Env("JOBKEY_ID_TOKEN".into()),
            "jobkey",
            &env_of(&[]),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("id_tokens: JOBKEY_ID_TOKEN: aud: jobkey"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn plain_http_to_a_remote_token_endpoint_is_refused() {
        use crate::outbound::UrlRefusal;
        let e = obtain(
            &TokenSource::GithubRequest,
            "jobkey",
            &env_of(&[
                (
                    "ACTIONS_ID_TOKEN_REQUEST_URL",
                    "http://example.com/token?api-version=2.0",
                ),
                ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "t"),
            ]),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &e,
                ClientError::Url {
                    setting: "ACTIONS_ID_TOKEN_REQUEST_URL",
                    source: OutboundError::RefusedUrl {
                        reason: UrlRefusal::PlainHttp,
                        ..
                    },
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "ACTIONS_ID_TOKEN_REQUEST_URL: `http://example.com/token?api-version=2.0&audience=jobkey` is refused: \
             plain http goes only to a loopback address (127.0.0.0/8, [::1] or localhost); it must be https"
        );
    }
}
