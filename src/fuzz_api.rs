//! Entry points for the fuzz targets in `fuzz/`, and nothing else.
//!
//! This module exists only when the crate is built with `--cfg fuzzing`
//! (cargo-fuzz builds that way); a normal build, the binary and the tests
//! never see it, and it is not part of jobkey's API. Each function wraps one
//! front end that reads untrusted input, the way the server or the job
//! client runs it, and returns plain data (strings, codes, JSON maps) that
//! the targets check properties on. The targets call only this module, so
//! they keep working whatever the rest of the crate makes private.
//!
//! The front ends:
//! - [`verify_token`] and [`sign_and_verify`]: the token verifier, offline
//!   (pinned JWKS files written once per process, a fixed clock), and the
//!   audit's unverified read of a refused token;
//! - [`compile_policy`]: a policy file through the parser and the compiler,
//!   then decisions, explanations, lint and the access review on what
//!   compiled;
//! - [`parse_config`]: `Config::parse` on TOML text;
//! - [`mask_hints`]: the log-masking hints of labelled values;
//! - [`github_env_append`] and [`github_env_entry`]: the `$GITHUB_ENV`
//!   writer of the job client.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::devissuer::SigningKey;
use crate::policy::{Decision, DenyReason, Effect, PolicyIssuer, PolicySet, Request};
use crate::provider::Provider;
use crate::secret::SecretString;
use crate::token::{FetchSettings, IssuerSettings, KeySource, Verifier};

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

/// The instant every token is verified at (2026-01-01T00:00:00Z), so that a
/// corpus token stays valid, or expired, from run to run.
pub const TOKEN_NOW: u64 = 1_767_225_600;

/// The audience the verifier accepts.
pub const AUDIENCE: &str = "jobkey";

/// The token size cap (the server's default).
pub const MAX_TOKEN_BYTES: usize = crate::token::DEFAULT_MAX_TOKEN_BYTES;

/// The longest string [`unverified_claims`] may return for one claim.
pub const MAX_AUDITED_STRING_BYTES: usize = crate::audit::MAX_STRING_BYTES;

/// One issuer the fuzzing verifier trusts.
#[derive(Debug)]
pub struct TokenIssuer {
    /// The configured name (what a verified token reports).
    pub name: &'static str,
    /// The exact `iss`.
    pub iss: &'static str,
    /// The `alg` values it accepts.
    pub algorithms: &'static [&'static str],
    /// The key ids of its JWKS (`None`: a key without `kid`).
    pub kids: &'static [Option<&'static str>],
    pub leeway_s: u64,
    pub max_lifetime_s: u64,
}

/// The issuers, their key sets and limits:
/// - `github`: RS256 only, `tests/fixtures/keys/issuer-a.pem` as `k1`;
/// - `gitlab`: RS256 and ES256, `issuer-b.pem` as `k2` and the per-process
///   ES256 key as `e1`;
/// - `buildkite`: ES256 only, the per-process ES256 key without a `kid`.
///
/// The dev issuer's `issuer-a`/`issuer-b` keys sign the corpus tokens;
/// [`sign_and_verify`] signs with the ES256 key.
pub const TOKEN_ISSUERS: &[TokenIssuer] = &[
    TokenIssuer {
        name: "github",
        iss: "https://token.actions.githubusercontent.com",
        algorithms: &["RS256"],
        kids: &[Some("k1")],
        leeway_s: 30,
        max_lifetime_s: 600,
    },
    TokenIssuer {
        name: "gitlab",
        iss: "https://gitlab.com",
        algorithms: &["RS256", "ES256"],
        kids: &[Some("k2"), Some("e1")],
        leeway_s: 60,
        max_lifetime_s: 7200,
    },
    TokenIssuer {
        name: "buildkite",
        iss: "https://agent.buildkite.com",
        algorithms: &["ES256"],
        kids: &[None],
        leeway_s: 0,
        max_lifetime_s: 900,
    },
];

/// What the verifier said about one token.
#[derive(Debug)]
pub struct TokenCheck {
    /// The token as verified.
    pub token: String,
    pub outcome: Result<Verified, Refused>,
    /// What the audit would record of the token without verifying it.
    pub unverified: Map<String, Value>,
    /// The claim names the unverified read was asked for.
    pub unverified_names: &'static [&'static str],
}

/// A token that passed every check.
#[derive(Debug)]
pub struct Verified {
    /// The issuer's configured name.
    pub issuer: String,
    /// The issuer's provider (`github`, ...).
    pub provider: &'static str,
    pub claims: Map<String, Value>,
}

/// A refused token.
#[derive(Debug)]
pub struct Refused {
    /// The stable code (`bad_signature`, ...).
    pub code: &'static str,
    /// The message a job would get.
    pub message: String,
    /// False only for `issuer_unavailable` (jobkey's fault, a 503).
    pub job_fault: bool,
}

struct TokenHarness {
    runtime: tokio::runtime::Runtime,
    verifier: Verifier,
    es256: SigningKey,
    audited: Vec<&'static str>,
}

fn token_harness() -> &'static TokenHarness {
    static HARNESS: OnceLock<TokenHarness> = OnceLock::new();
    HARNESS.get_or_init(|| match build_token_harness() {
        Ok(h) => h,
        Err(e) => panic!("the token fuzzing harness cannot start: {e}"),
    })
}

const ISSUER_A_PEM: &str = include_str!("../tests/fixtures/keys/issuer-a.pem");
const ISSUER_B_PEM: &str = include_str!("../tests/fixtures/keys/issuer-b.pem");

fn build_token_harness() -> Result<TokenHarness, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    let k1 = SigningKey::rsa_from_pem(ISSUER_A_PEM, "k1").map_err(|e| e.to_string())?;
    let k2 = SigningKey::rsa_from_pem(ISSUER_B_PEM, "k2").map_err(|e| e.to_string())?;
    let es256 = SigningKey::generate_es256("e1").map_err(|e| e.to_string())?;
    let mut without_kid = es256.public_jwk();
    if let Some(o) = without_kid.as_object_mut() {
        o.remove("kid");
    }
    let documents = [
        json!({"keys": [k1.public_jwk()]}),
        json!({"keys": [k2.public_jwk(), es256.public_jwk()]}),
        json!({"keys": [without_kid]}),
    ];

    // The pinned JWKS files are read once, by `warm_up`; with a refetch
    // interval of a century no input can make the verifier read them again,
    // so the directory goes away right after and runs stay deterministic.
    let dir = std::env::temp_dir().join(format!("jobkey-fuzz-jwks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut issuers = Vec::new();
    for (i, doc) in TOKEN_ISSUERS.iter().zip(documents) {
        let path: PathBuf = dir.join(format!("{}.json", i.name));
        std::fs::write(&path, doc.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
        issuers.push(IssuerSettings {
            name: i.name.to_owned(),
            issuer: i.iss.to_owned(),
            provider: Provider::from_issuer_url(i.iss),
            keys: KeySource::JwksFile(path),
            algorithms: i
                .algorithms
                .iter()
                .map(|a| a.parse::<Algorithm>().map_err(|e| e.to_string()))
                .collect::<Result<_, _>>()?,
            leeway: Duration::from_secs(i.leeway_s),
            max_lifetime: Duration::from_secs(i.max_lifetime_s),
            ca_file: None,
        });
    }
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    let fetch = FetchSettings {
        min_refetch_interval: century,
        max_key_age: century,
        ..FetchSettings::default()
    };
    let verifier = Verifier::new(issuers, vec![AUDIENCE.to_owned()], fetch, MAX_TOKEN_BYTES)
        .map_err(|e| e.to_string())?;
    let failures = runtime.block_on(verifier.warm_up());
    let _ = std::fs::remove_dir_all(&dir);
    if let Some((name, e)) = failures.into_iter().next() {
        return Err(format!("the keys of {name}: {e}"));
    }

    let mut audited: Vec<&'static str> = Provider::names()
        .iter()
        .filter_map(|n| Provider::from_name(n))
        .flat_map(|p| p.audited_claims().iter().copied())
        .collect();
    audited.sort_unstable();
    audited.dedup();
    Ok(TokenHarness {
        runtime,
        verifier,
        es256,
        audited,
    })
}

/// Verifies `token` at [`TOKEN_NOW`] as the server would, and reads it
/// unverified as the audit does for a refused token.
pub fn verify_token(token: &str) -> TokenCheck {
    let h = token_harness();
    let outcome = match h.runtime.block_on(h.verifier.verify_at(token, TOKEN_NOW)) {
        Ok(v) => Ok(Verified {
            issuer: v.issuer,
            provider: v.provider.name(),
            claims: v.claims,
        }),
        Err(e) => Err(Refused {
            code: e.code(),
            message: e.to_string(),
            job_fault: !e.is_unavailable(),
        }),
    };
    let names = unverified_names();
    TokenCheck {
        token: token.to_owned(),
        unverified: crate::token::unverified_claims(token, names),
        unverified_names: names,
        outcome,
    }
}

/// The claim names the unverified read is asked for: every provider's
/// audited claims.
fn unverified_names() -> &'static [&'static str] {
    &token_harness().audited
}

/// Signs `header` and `payload`, exactly as given (base64url of the bytes),
/// with the ES256 key (`gitlab`'s `e1`, `buildkite`'s key without `kid`),
/// then verifies the token: whatever the header and the claims say, the
/// signature is right.
pub fn sign_and_verify(header: &[u8], payload: &[u8]) -> TokenCheck {
    let h = token_harness();
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = h.es256.sign_bytes(signing_input.as_bytes());
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature));
    verify_token(&token)
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

/// The file name a fuzzed policy is compiled as (environment `production`).
pub const POLICY_FILE: &str = "production.yaml";

/// The environment of [`POLICY_FILE`].
pub const POLICY_ENVIRONMENT: &str = "production";

/// The configured issuers a fuzzed policy may name: (name, provider, iss).
pub const POLICY_ISSUERS: &[(&str, &str, &str)] = &[
    (
        "github",
        "github",
        "https://token.actions.githubusercontent.com",
    ),
    ("gitlab", "gitlab", "https://gitlab.com"),
    ("buildkite", "buildkite", "https://agent.buildkite.com"),
    ("internal", "generic", "https://ci.internal.example"),
];

/// A policy file that did not compile.
#[derive(Debug)]
pub struct PolicyFailure {
    /// `Display` of the error: `FILE:LINE:COLUMN: message` or `FILE: message`.
    pub message: String,
    pub file: String,
    /// 1-based line of the offending node, when the error has one.
    pub line: Option<usize>,
}

/// A compiled policy set, and what the tools say about it.
pub struct CompiledPolicy {
    set: PolicySet,
    /// The environment's credential names, in file order.
    pub credentials: Vec<String>,
    /// `jobkey policy lint` warnings, as text.
    pub lint: Vec<String>,
    /// `jobkey policy who-can` for the environment, as text.
    pub who_can: Result<String, String>,
}

/// A decision, as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecisionView {
    /// (credential, granting rule), in the order returned.
    Allow(Vec<(String, String)>),
    Deny {
        code: &'static str,
        /// The rule of a `denied_by_rule`; the credential of
        /// `unknown_credential` and `credential_not_granted`.
        subject: Option<String>,
        /// The claim names a job would be told failed.
        failed_claims: Vec<String>,
    },
}

/// One rule's outcome in an explanation (every rule, file order).
#[derive(Debug, Clone)]
pub struct RuleView {
    pub name: String,
    pub deny: bool,
    pub applies: bool,
    pub grant: Vec<String>,
}

/// The decision for a request, with every rule's outcome (full scan).
#[derive(Debug)]
pub struct ExplainedView {
    pub decision: DecisionView,
    pub rules: Vec<RuleView>,
    /// The explanation as `jobkey policy explain` prints it.
    pub lines: Vec<String>,
}

fn policy_issuers() -> Vec<PolicyIssuer> {
    POLICY_ISSUERS
        .iter()
        .map(|(name, provider, iss)| {
            PolicyIssuer::new(
                *name,
                Provider::from_name(provider).unwrap_or(Provider::Generic),
                Some((*iss).to_owned()),
            )
        })
        .collect()
}

/// Parses and compiles `text` as [`POLICY_FILE`] against
/// [`POLICY_ISSUERS`]; on success runs lint and the access review.
pub fn compile_policy(text: &str) -> Result<CompiledPolicy, PolicyFailure> {
    let sources = [(POLICY_FILE.to_owned(), text.to_owned())];
    let set = PolicySet::from_sources(&sources, &policy_issuers()).map_err(|e| PolicyFailure {
        message: e.to_string(),
        file: e.file().to_owned(),
        line: e.line(),
    })?;
    let lint = crate::policy::tools::lint::lint(&set)
        .into_iter()
        .map(|w| format!("{} {}: {} ({})", w.code, w.name, w.message, w.fix))
        .collect();
    let who_can = crate::policy::tools::who_can::who_can(&set, POLICY_ENVIRONMENT, None)
        .map(|review| crate::policy::tools::who_can::render_table(&review));
    let credentials = set
        .env(POLICY_ENVIRONMENT)
        .map(|env| env.credential_order.clone())
        .unwrap_or_default();
    Ok(CompiledPolicy {
        set,
        credentials,
        lint,
        who_can,
    })
}

fn decision_view(d: &Decision) -> DecisionView {
    match d {
        Decision::Allow(grants) => DecisionView::Allow(
            grants
                .iter()
                .map(|g| (g.credential.clone(), g.rule.clone()))
                .collect(),
        ),
        Decision::Deny(reason) => DecisionView::Deny {
            code: reason.code(),
            subject: match reason {
                DenyReason::DeniedByRule { rule } => Some(rule.clone()),
                DenyReason::UnknownCredential { credential }
                | DenyReason::CredentialNotGranted { credential, .. } => Some(credential.clone()),
                DenyReason::UnknownEnvironment { environment } => Some(environment.clone()),
                DenyReason::NoRuleMatched { .. } => None,
            },
            failed_claims: reason.failed_claims(),
        },
    }
}

impl CompiledPolicy {
    /// The environments the set defines.
    pub fn environments(&self) -> Vec<String> {
        self.set.environments().map(str::to_owned).collect()
    }

    /// `PolicySet::decide` (the indexed request path).
    pub fn decide(
        &self,
        environment: &str,
        issuer: &str,
        claims: &Map<String, Value>,
        credentials: &[String],
    ) -> DecisionView {
        decision_view(&self.set.decide(&Request {
            environment,
            issuer,
            claims,
            credentials,
        }))
    }

    /// `PolicySet::explain`: the decision and every rule's outcome.
    pub fn explain(
        &self,
        environment: &str,
        issuer: &str,
        claims: &Map<String, Value>,
        credentials: &[String],
    ) -> ExplainedView {
        let e = self.set.explain(&Request {
            environment,
            issuer,
            claims,
            credentials,
        });
        let mut lines = crate::policy::tools::explain::explain_lines(&e);
        lines.push(crate::policy::tools::explain::describe_decision(
            &e.decision,
        ));
        ExplainedView {
            decision: decision_view(&e.decision),
            rules: e
                .rules
                .iter()
                .map(|r| RuleView {
                    name: r.rule.clone(),
                    deny: r.effect == Effect::Deny,
                    applies: r.applies,
                    grant: r.grant.clone(),
                })
                .collect(),
            lines,
        }
    }
}

/// The dev issuer's claims of a main-branch deploy for each policy issuer
/// with a shape (`github`, `gitlab`, `buildkite`), issued at
/// [`TOKEN_NOW`]: the requests the shipped policies admit.
pub fn sample_requests() -> Vec<(&'static str, Map<String, Value>)> {
    use crate::devissuer::Shape;
    [
        ("github", Shape::Github),
        ("gitlab", Shape::Gitlab),
        ("buildkite", Shape::Buildkite),
    ]
    .into_iter()
    .filter_map(|(name, shape)| {
        let iss = POLICY_ISSUERS.iter().find(|i| i.0 == name)?.2;
        Some((name, shape.claims(iss, AUDIENCE, TOKEN_NOW)))
    })
    .collect()
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

/// The path a fuzzed config is parsed as.
pub const CONFIG_PATH: &str = "/etc/jobkey/jobkey.toml";

/// A URL the checked config will make jobkey fetch.
#[derive(Debug)]
pub struct FetchedUrl {
    /// What it is for (`issuers.NAME`, `issuers.NAME.jwks_url`,
    /// `issuers.NAME discovery`, `vault.address`).
    pub what: String,
    /// The URL as the config holds it (for an issuer: its exact `iss`).
    pub url: String,
}

/// A config that checked.
#[derive(Debug)]
pub struct ConfigView {
    /// Every URL jobkey would fetch from (an issuer's URL only when its keys
    /// come from discovery).
    pub fetched: Vec<FetchedUrl>,
    /// For each issuer using discovery: its `iss`, and the discovery URL
    /// the key cache builds from it (or why it cannot).
    pub discovery: Vec<(String, Result<String, String>)>,
    /// `{:?}` of the whole `Config`.
    pub debug: String,
    /// `[state] redis_url`, when set.
    pub redis_url: Option<String>,
    pub issuer_names: Vec<String>,
}

/// A config that did not check.
#[derive(Debug)]
pub struct ConfigFailure {
    /// The error's `Display`.
    pub message: String,
}

/// `Config::parse` of `text` as if read from [`CONFIG_PATH`].
pub fn parse_config(text: &str) -> Result<ConfigView, ConfigFailure> {
    let config = Config::parse(Path::new(CONFIG_PATH), text).map_err(|e| ConfigFailure {
        message: e.to_string(),
    })?;
    let mut fetched = Vec::new();
    let mut discovery = Vec::new();
    for i in &config.issuers {
        match &i.keys {
            KeySource::Discovery => {
                fetched.push(FetchedUrl {
                    what: format!("issuers.{}", i.name),
                    url: i.issuer.clone(),
                });
                let url = crate::outbound::AllowedUrl::parse(&i.issuer)
                    .and_then(|u| u.join_path("/.well-known/openid-configuration"))
                    .map(|u| u.as_str().to_owned())
                    .map_err(|e| e.to_string());
                discovery.push((i.issuer.clone(), url));
            }
            KeySource::JwksUrl(u) => fetched.push(FetchedUrl {
                what: format!("issuers.{}.jwks_url", i.name),
                url: u.to_string(),
            }),
            KeySource::JwksFile(_) => {}
        }
    }
    fetched.push(FetchedUrl {
        what: "vault.address".to_owned(),
        url: config.vault.address.to_string(),
    });
    Ok(ConfigView {
        fetched,
        discovery,
        debug: format!("{config:?}"),
        redis_url: config.state.as_ref().map(|s| s.redis_url.clone()),
        issuer_names: config.issuers.iter().map(|i| i.name.clone()).collect(),
    })
}

// ---------------------------------------------------------------------------
// Masks
// ---------------------------------------------------------------------------

/// Pieces shorter than this many characters are not masked.
pub const MIN_MASK_CHARS: usize = crate::mask::MIN_MASK_CHARS;

/// The mask list and the warnings for labelled values.
#[derive(Debug)]
pub struct Masks {
    /// Longest first, deduplicated.
    pub masks: Vec<String>,
    pub warnings: Vec<String>,
}

/// `mask::hints` of `(label, value)` pairs.
pub fn mask_hints(values: &[(String, String)]) -> Masks {
    let secrets: Vec<(String, SecretString)> = values
        .iter()
        .map(|(l, v)| (l.clone(), SecretString::new(v.clone())))
        .collect();
    let hints = crate::mask::hints(secrets.iter().map(|(l, v)| (l.as_str(), v)));
    Masks {
        masks: hints
            .mask
            .iter()
            .map(|m| m.expose_secret().to_owned())
            .collect(),
        warnings: hints.warnings,
    }
}

// ---------------------------------------------------------------------------
// $GITHUB_ENV
// ---------------------------------------------------------------------------

/// The job client's `append_github_file`: appends `vars` to the file at
/// `path` as heredoc entries, each with a fresh random delimiter.
pub fn github_env_append(path: &Path, vars: &[(String, String)]) -> Result<(), String> {
    let vars: Vec<(String, SecretString)> = vars
        .iter()
        .map(|(n, v)| (n.clone(), SecretString::new(v.clone())))
        .collect();
    crate::client::append_github_file(path, &vars).map_err(|e| e.to_string())
}

/// The job client's `github_file_entry`: one heredoc entry with the given
/// delimiter.
pub fn github_env_entry(name: &str, value: &str, delimiter: &str) -> Result<String, String> {
    crate::client::github_file_entry(name, value, delimiter)
        .map(|e| e.expose_secret().to_owned())
        .map_err(|e| e.to_string())
}
