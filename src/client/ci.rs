//! Which CI the job runs in, and how it gets its OIDC ID token.
//!
//! What each CI sets and offers is its entry in the provider table
//! (`crate::provider`, [`ClientInfo`](crate::provider::ClientInfo)):
//! detection reads its variable, and `--ci` overrides it. The token comes
//! from, in this order: `--token-file`, `--token-env`, then the CI's own
//! mechanism:
//! - a token request endpoint named by two variables (GitHub Actions,
//!   Forgejo Actions): `GET <url>&audience=AUD` with `Authorization:
//!   bearer <token>`, JSON `.value` (the job needs the right to ask);
//! - a variable the job declares for the audience (GitLab CI's
//!   `id_tokens:`, `JOBKEY_ID_TOKEN` unless `--token-env` says otherwise);
//! - a command that prints it (`buildkite-agent oidc request-token
//!   --audience AUD`).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ClientError;
use super::broker::Secret;
use crate::outbound::{AllowedUrl, HttpClient, OutboundError, Request};
use crate::provider::TokenFrom;
use crate::secret::SecretString;

/// The CI a job runs in: a provider of the table (`Generic`, shown as "an
/// unknown CI", when none is recognised). `--ci` takes its name.
pub(crate) use crate::provider::Provider as Ci;

/// Largest token accepted from any source.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// The variables through which a job can obtain new ID tokens, per CI: one
/// table, the only place jobkey lists them. `--exec` leaves them out of the
/// command's environment unless `--exec-keep-token-env` is given, so a
/// command run with the credentials cannot mint tokens of its own (the ID
/// token jobkey used is already spent on its exchange).
pub(crate) const TOKEN_ENV: &[(Ci, &[&str])] = &[
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
    (Ci::Gitlab, &["JOBKEY_ID_TOKEN"]),
    // The agent's access token, with which `buildkite-agent oidc
    // request-token` asks for tokens.
    (Ci::Buildkite, &["BUILDKITE_AGENT_ACCESS_TOKEN"]),
    // The job access token (when mapped into the environment) and the OIDC
    // request URL it is sent to.
    (
        Ci::AzureDevops,
        &["SYSTEM_ACCESSTOKEN", "SYSTEM_OIDCREQUESTURI"],
    ),
];

/// The variables `--exec` removes from the command's environment: every
/// CI's in [`TOKEN_ENV`] (a job may run one CI's tools inside another, or
/// pass `--ci`), and the variable the token was read from, if any.
pub(super) fn token_env_to_strip(source: &TokenSource) -> Vec<String> {
    let mut names: Vec<String> = TOKEN_ENV
        .iter()
        .flat_map(|(_, vars)| vars.iter().map(|v| (*v).to_owned()))
        .collect();
    if let TokenSource::Env { name, .. } = source {
        names.push(name.clone());
    }
    names.sort();
    names.dedup();
    names
}

/// Where the token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenSource {
    File(std::path::PathBuf),
    /// A variable: `--token-env`'s, or the one the CI's job declares.
    Env {
        name: String,
        ci: Ci,
    },
    /// The CI's token request endpoint.
    Request(Ci),
    /// The CI's token command.
    Command(Ci),
}

/// The token source for `ci`, given `--token-file` and `--token-env`.
pub(super) fn token_source(
    ci: Ci,
    token_file: Option<&Path>,
    token_env: Option<&str>,
) -> Result<TokenSource, ClientError> {
    if let Some(f) = token_file {
        return Ok(TokenSource::File(f.to_owned()));
    }
    if let Some(e) = token_env {
        return Ok(TokenSource::Env {
            name: e.to_owned(),
            ci,
        });
    }
    match &ci.client().token {
        TokenFrom::RequestEndpoint { .. } => Ok(TokenSource::Request(ci)),
        TokenFrom::Variable { default, .. } => Ok(TokenSource::Env {
            name: (*default).to_owned(),
            ci,
        }),
        TokenFrom::Command { .. } => Ok(TokenSource::Command(ci)),
        TokenFrom::Unsupported { hint } => {
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!(" ({hint})")
            };
            Err(ClientError::Token(format!(
                "on {} jobkey cannot request a token itself: pass --token-file FILE or --token-env NAME{hint}",
                ci.title()
            )))
        }
    }
}

/// Obtains the token from `source` for `audience`.
pub(super) async fn obtain(
    source: &TokenSource,
    audience: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ClientError> {
    let token = match source {
        TokenSource::File(path) => {
            // Capped, and only a regular file: a FIFO or /dev/zero is
            // refused, not read until memory runs out.
            let bad = |why: String| ClientError::Token(format!("{}: {why}", path.display()));
            let bytes = crate::files::read_secret(path, MAX_TOKEN_BYTES as u64)
                .map_err(|e| bad(e.reason()))?;
            let s = std::str::from_utf8(&bytes).map_err(|_| bad("it is not UTF-8 text".into()))?;
            SecretString::new(s.to_owned())
        }
        TokenSource::Env { name, ci } => match env(name) {
            Some(v) => SecretString::new(v),
            None => {
                let declare = match &ci.client().token {
                    TokenFrom::Variable { declare, .. } => format!(
                        "; {}",
                        declare
                            .replace("{name}", name)
                            .replace("{audience}", audience)
                    ),
                    _ => String::new(),
                };
                return Err(ClientError::Token(format!(
                    "the variable {name} is not set{declare}"
                )));
            }
        },
        TokenSource::Request(ci) => request(*ci, audience, env).await?,
        TokenSource::Command(ci) => command(*ci, audience).await?,
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

/// What a token request endpoint answers.
#[derive(Deserialize)]
struct TokenAnswer {
    value: Secret,
}

/// Asks `ci`'s token request endpoint (named by two variables) for a token.
async fn request(
    ci: Ci,
    audience: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SecretString, ClientError> {
    let TokenFrom::RequestEndpoint {
        url_var,
        token_var,
        needs,
    } = ci.client().token
    else {
        return Err(ClientError::Token(format!(
            "{} has no token request endpoint",
            ci.title()
        )));
    };
    let (Some(url), Some(bearer)) = (env(url_var), env(token_var).map(SecretString::new)) else {
        return Err(ClientError::Token(format!(
            "{url_var} and {token_var} are not set: {needs} (and run jobkey in a step of that job, not in a container without those variables)"
        )));
    };
    let mut url = url::Url::parse(&url)
        .map_err(|e| ClientError::Token(format!("{url_var} is not a URL: {e}")))?;
    url.query_pairs_mut().append_pair("audience", audience);
    let url = AllowedUrl::new(url).map_err(|source| ClientError::Url {
        setting: url_var,
        source,
    })?;
    let endpoint = format!("the {} token endpoint", ci.title());
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
        OutboundError::Status { status, .. } => {
            ClientError::Token(format!("{endpoint} answered HTTP {status}; check: {needs}"))
        }
        other => ClientError::TokenEndpoint(other),
    })?;
    let answer: TokenAnswer = serde_json::from_slice(body.expose()).map_err(|_| {
        ClientError::Token(format!(
            "{endpoint} did not answer {{\"value\": \"<token>\"}}"
        ))
    })?;
    Ok(answer.value.0)
}

/// Runs `ci`'s token command for `audience`.
async fn command(ci: Ci, audience: &str) -> Result<SecretString, ClientError> {
    let TokenFrom::Command {
        program,
        args,
        shown,
    } = ci.client().token
    else {
        return Err(ClientError::Token(format!(
            "{} has no token command",
            ci.title()
        )));
    };
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(program)
            .args(args(audience))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| ClientError::Token(format!("`{shown}` did not finish in 60s")))?
    .map_err(|e| {
        ClientError::Token(format!(
            "cannot run `{shown}` (is `{program}` on PATH?): {e}"
        ))
    })?;
    let token = SecretString::new(
        String::from_utf8(out.stdout)
            .map_err(|_| ClientError::Token(format!("`{shown}` printed non-UTF-8")))?,
    );
    if !out.status.success() {
        // The command's own message (stderr) carries no token.
        let why = String::from_utf8_lossy(&out.stderr);
        let why = why.lines().next().unwrap_or("").trim();
        return Err(ClientError::Token(format!(
            "`{shown}` failed ({}): {why}",
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
    fn token_sources_by_ci_and_flags() {
        let f = Path::new("/tmp/t");
        let env = |name: &str, ci| TokenSource::Env {
            name: name.into(),
            ci,
        };
        type Case<'a> = (Ci, Option<&'a Path>, Option<&'a str>, Option<TokenSource>);
        let cases: &[Case] = &[
            (
                Ci::Github,
                None,
                None,
                Some(TokenSource::Request(Ci::Github)),
            ),
            (
                Ci::Forgejo,
                None,
                None,
                Some(TokenSource::Request(Ci::Forgejo)),
            ),
            (
                Ci::Gitlab,
                None,
                None,
                Some(env("JOBKEY_ID_TOKEN", Ci::Gitlab)),
            ),
            (
                Ci::Gitlab,
                None,
                Some("VAULT_ID_TOKEN"),
                Some(env("VAULT_ID_TOKEN", Ci::Gitlab)),
            ),
            (
                Ci::Bitbucket,
                None,
                None,
                Some(env("BITBUCKET_STEP_OIDC_TOKEN", Ci::Bitbucket)),
            ),
            (
                Ci::Buildkite,
                None,
                None,
                Some(TokenSource::Command(Ci::Buildkite)),
            ),
            (Ci::Github, Some(f), None, Some(TokenSource::File(f.into()))),
            (Ci::Generic, None, None, None),
            (Ci::AzureDevops, None, None, None),
            (Ci::Circleci, None, None, None),
            (
                Ci::Circleci,
                None,
                Some("CIRCLE_TOKEN"),
                Some(env("CIRCLE_TOKEN", Ci::Circleci)),
            ),
        ];
        for (ci, file, env, want) in cases {
            let got = token_source(*ci, *file, *env).ok();
            assert_eq!(&got, want, "{ci:?}");
        }
        // Every CI either has a way to a token, or says how to get one.
        for ci in Ci::ALL {
            match token_source(ci, None, None) {
                Ok(_) => {}
                Err(e) => assert!(
                    e.to_string().contains(&format!(
                        "on {} jobkey cannot request a token itself: pass --token-file FILE or --token-env NAME",
                        ci.title()
                    )),
                    "{e}"
                ),
            }
        }
        let e = token_source(Ci::Circleci, None, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("circleci run oidc get"), "{e}");
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
            (TokenSource::Request(Ci::Github), None),
            (TokenSource::Command(Ci::Buildkite), None),
            (
                TokenSource::Env {
                    name: "VAULT_ID_TOKEN".into(),
                    ci: Ci::Gitlab,
                },
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
        for ci in [Ci::Github, Ci::Gitlab, Ci::Buildkite, Ci::AzureDevops] {
            assert!(
                TOKEN_ENV.iter().any(|(c, v)| *c == ci && !v.is_empty()),
                "{ci:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_request_endpoint_without_its_variables_names_the_permission() {
        for ci in [Ci::Github, Ci::Forgejo] {
            let e = obtain(
                &TokenSource::Request(ci),
                "jobkey",
                &env_of(&[("GITHUB_ACTIONS", "true")]),
            )
            .await
            .unwrap_err();
            assert!(
                e.to_string().contains(
                    "ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set: give the job `permissions: id-token: write`"
                ),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_variable_says_how_to_declare_it() {
        let e = obtain(
            &TokenSource::Env {
                name: "JOBKEY_ID_TOKEN".into(),
                ci: Ci::Gitlab,
            },
            "jobkey",
            &env_of(&[]),
        )
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string().split_once(": ").map(|(_, m)| m),
            Some(
                "the variable JOBKEY_ID_TOKEN is not set; on GitLab CI declare it in the job: `id_tokens: JOBKEY_ID_TOKEN: aud: jobkey`"
            )
        );
        // `--token-env` on a CI without such a variable: no CI's advice.
        let e = obtain(
            &TokenSource::Env {
                name: "MY_TOKEN".into(),
                ci: Ci::Generic,
            },
            "jobkey",
            &env_of(&[]),
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string().ends_with("the variable MY_TOKEN is not set"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn plain_http_to_a_remote_token_endpoint_is_refused() {
        use crate::outbound::UrlRefusal;
        let e = obtain(
            &TokenSource::Request(Ci::Github),
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
