//! The CI providers: one table entry per provider, holding what jobkey knows
//! about each CI's issuer, its tokens and its jobs.
//!
//! Nothing outside this module knows a provider's issuer URL or claim
//! names. The config takes its presets and well-known issuer URLs from here
//! ([`Preset`], [`Provider::from_issuer_url`]); the policy compiler which
//! issuers are shared ([`Tenancy`]), the immutable ids every allow rule for
//! them must bind and the claims the provider sends; lint and the access
//! review the role of
//! each claim ([`Role`], [`LintHints`]); the audit the claims worth
//! recording and the run a token belongs to; the client how a job is
//! detected, how it gets its token and how it masks values ([`ClientInfo`]).
//!
//! Adding a CI is a [`Provider`] variant with its [`ProviderInfo`] entry
//! (and a [`Preset`] when its issuer has a well-known URL); the table-driven
//! tests in `provider/tests.rs` run over every entry.
//!
//! A provider is named by the config: a preset implies it, `provider = "…"`
//! names it for any other URL (a proxy, a stand-in), and without either it
//! is looked up by the *exact* well-known issuer URL, or is
//! [`Provider::Generic`]. Nothing guesses it from the shape of a URL.

use std::sync::LazyLock;
use std::time::Duration;

use serde_json::{Map, Value};

/// A CI provider. [`Provider::Generic`] is any issuer jobkey has no entry
/// for: no tenant check, no run claims, and every provider's claims known
/// and audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Github,
    Gitlab,
    Buildkite,
    Circleci,
    Bitbucket,
    AzureDevops,
    Forgejo,
    Generic,
}

/// Everything jobkey knows about one provider.
#[derive(Debug)]
pub struct ProviderInfo {
    pub provider: Provider,
    /// The name in the config (`provider = "buildkite"`), in `--issuer
    /// NAME=PROVIDER:URL` and in `--ci`.
    pub name: &'static str,
    /// For people: "GitHub Actions".
    pub title: &'static str,
    /// Which of the provider's issuers sign for many tenants. Every allow
    /// rule for such an issuer must bind each of
    /// [`tenant_claims`](Self::tenant_claims) and
    /// [`project_claims`](Self::project_claims) to exact values (or
    /// [`ids_in_sub`](Self::ids_in_sub) holds for its exact `sub`), or it
    /// admits other tenants' jobs.
    pub tenancy: Tenancy,
    /// The immutable ids of the tenant (owner, namespace, organisation,
    /// workspace). Names are not here: a name can be given up and then
    /// registered by someone else.
    pub tenant_claims: &'static [&'static str],
    /// The immutable ids of the repository, project or pipeline.
    pub project_claims: &'static [&'static str],
    /// Whether an exact `sub` value names the tenant and the project by
    /// their immutable ids (GitHub's immutable subject); `None` when the
    /// provider's `sub` never does.
    pub ids_in_sub: Option<fn(&str) -> bool>,
    /// The claims whose values, together, name one run (a build, not a
    /// whole pipeline). Empty: the tokens do not say.
    pub run_claims: &'static [&'static str],
    /// The claims the provider is known to send (beyond the registered
    /// claims, which any token may carry), with their role and whether the
    /// audit records them.
    pub claims: &'static [Claim],
    pub lint: LintHints,
    pub client: ClientInfo,
}

/// Who can hold tokens of one of the provider's issuers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenancy {
    /// Every issuer of the provider signs for many tenants: Buildkite's
    /// one issuer, and providers whose per-tenant URLs rules must not rely
    /// on (a policy stays right when its issuer entry changes).
    Shared,
    /// The provider's well-known issuers (its presets' exact URLs: the
    /// issuer of github.com and its enterprises, gitlab.com) sign for many
    /// tenants; an issuer at another URL is one instance's (GitHub
    /// Enterprise Server, a self-managed GitLab, a stand-in). A token's
    /// `iss` must equal the configured URL, so only an issuer configured
    /// with a well-known URL accepts that URL's tokens.
    SharedAtWellKnownUrls,
    /// Each issuer is one organisation's.
    Single,
}

/// One claim a provider sends.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    pub name: &'static str,
    pub role: Role,
    /// Copied into the audit record (who ran what, where).
    pub audited: bool,
}

/// What a claim says about a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Names the repository, project or pipeline.
    Repository,
    /// Names the owner, namespace, organisation or workspace.
    Owner,
    /// A workflow or pipeline definition named with its repository.
    WorkflowOfRepository,
    /// A workflow or pipeline definition.
    Workflow,
    /// The branch, tag or ref.
    Ref,
    /// The deployment environment.
    Environment,
    /// What triggered the run.
    Event,
    /// Where the job runs (hosted or self-hosted, which agent).
    Runner,
    /// The run, job or attempt.
    Run,
    Other,
}

impl Role {
    /// Binding this claim pins whose jobs a rule admits.
    pub fn is_identity(self) -> bool {
        matches!(
            self,
            Role::Repository | Role::Owner | Role::WorkflowOfRepository
        )
    }
}

/// What `jobkey policy lint` needs to know of a provider.
#[derive(Debug)]
pub struct LintHints {
    /// (name, its immutable id): a name bound without its id can be renamed
    /// and re-registered by someone else.
    pub renamed: &'static [(&'static str, &'static str)],
    /// Claims naming a repository or project in words, `sub` included: a
    /// wildcard in them can match another one.
    pub project_names: &'static [&'static str],
    /// How `sub` names the project, when it does.
    pub sub: Option<SubShape>,
    /// The event check of branch rules, for CIs where a run of untrusted
    /// code can carry a trusted branch.
    pub branch_event: Option<BranchEvent>,
    /// The hosted/self-hosted runner claim, for CIs that send it.
    pub runner: Option<RunnerClaim>,
}

/// A `sub` such as `repo:acme/api:ref:…` names the project once its
/// fixed start (before any wildcard) begins with `prefix` and holds
/// `count` times `separator`.
#[derive(Debug, Clone, Copy)]
pub struct SubShape {
    pub prefix: &'static str,
    pub separator: char,
    pub count: usize,
}

/// A branch rule must pin the event claim to events that exclude
/// `unsafe_event` (which runs a fork's code with the default branch as ref).
#[derive(Debug, Clone, Copy)]
pub struct BranchEvent {
    pub ref_claim: &'static str,
    pub branch_prefix: &'static str,
    pub tag_prefix: &'static str,
    /// How `sub` spells a branch ref.
    pub sub_branch: &'static str,
    pub event_claim: &'static str,
    pub unsafe_event: &'static str,
    /// The suggested condition, as YAML.
    pub safe_events: &'static str,
}

/// The claim telling hosted runners from self-hosted ones.
#[derive(Debug, Clone, Copy)]
pub struct RunnerClaim {
    pub claim: &'static str,
    pub self_hosted: &'static str,
    pub hosted: &'static str,
}

/// What `jobkey fetch` needs to know of a provider.
#[derive(Debug)]
pub struct ClientInfo {
    /// The variable that says a job runs in this CI.
    pub detect: Option<Detect>,
    /// This CI also sets another's variables (Forgejo sets
    /// `GITHUB_ACTIONS`), so it is told apart first.
    pub imitates: Option<Provider>,
    /// Other spellings `--ci` accepts (its values before this table).
    pub aliases: &'static [&'static str],
    pub token: TokenFrom,
    pub mask: MaskCommand,
}

/// A CI's detection variable.
#[derive(Debug, Clone, Copy)]
pub struct Detect {
    pub var: &'static str,
    /// `true` (any case) is required; otherwise any value will do.
    pub must_be_true: bool,
}

/// How a job obtains its ID token.
#[derive(Debug)]
pub enum TokenFrom {
    /// `GET $url_var&audience=AUD` with `Authorization: bearer $token_var`;
    /// the answer is JSON `{"value": "<token>"}`.
    RequestEndpoint {
        url_var: &'static str,
        token_var: &'static str,
        /// What the job needs for those variables to be set.
        needs: &'static str,
    },
    /// A variable the job's definition declares for the audience.
    Variable {
        default: &'static str,
        /// How to declare it; `{name}` and `{audience}` are filled in.
        declare: &'static str,
    },
    /// A command that prints the token.
    Command {
        program: &'static str,
        /// The arguments for an audience.
        args: fn(&str) -> Vec<String>,
        /// The command as people know it, for messages.
        shown: &'static str,
    },
    /// jobkey cannot get one itself: `--token-file` or `--token-env`.
    Unsupported {
        /// How to get one, when there is a way.
        hint: &'static str,
    },
}

/// How a job registers a value to be masked in its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskCommand {
    /// `::add-mask::VALUE` on stdout.
    AddMaskLine,
    /// `##vso[task.setsecret]VALUE` on stdout.
    SetSecretLine,
    /// `buildkite-agent redactor add --format json`, values on stdin.
    BuildkiteRedactor,
    /// The CI cannot mask at run time.
    None,
}

// The registered claims, which any provider's tokens may carry.
const REGISTERED: &[Claim] = &[
    a("iss", Role::Other),
    a("sub", Role::Repository),
    c("aud", Role::Other),
    c("exp", Role::Other),
    c("nbf", Role::Other),
    c("iat", Role::Other),
    a("jti", Role::Other),
];

const fn a(name: &'static str, role: Role) -> Claim {
    Claim {
        name,
        role,
        audited: true,
    }
}

const fn c(name: &'static str, role: Role) -> Claim {
    Claim {
        name,
        role,
        audited: false,
    }
}

const GITHUB_BRANCH_EVENT: BranchEvent = BranchEvent {
    ref_claim: "ref",
    branch_prefix: "refs/heads/",
    tag_prefix: "refs/tags/",
    sub_branch: ":ref:refs/heads/",
    event_claim: "event_name",
    unsafe_event: "pull_request_target",
    safe_events: "[push, workflow_dispatch]",
};

const GITHUB_SUB: SubShape = SubShape {
    prefix: "repo:",
    separator: ':',
    count: 2,
};

const GITHUB_REQUEST: TokenFrom = TokenFrom::RequestEndpoint {
    url_var: "ACTIONS_ID_TOKEN_REQUEST_URL",
    token_var: "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    needs: "give the job `permissions: id-token: write`",
};

/// GitHub's immutable subject: `repo:OWNER-OWNERID/REPO-REPOID:…`, each
/// name followed by `-` and its numeric id, then at least one more part.
fn github_sub_has_ids(sub: &str) -> bool {
    let named_id = |part: &str| {
        part.rsplit_once('-').is_some_and(|(name, id)| {
            !name.is_empty() && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())
        })
    };
    let Some(rest) = sub.strip_prefix("repo:") else {
        return false;
    };
    let Some((repository, context)) = rest.split_once(':') else {
        return false;
    };
    match repository.split_once('/') {
        Some((owner, repo)) => {
            !repo.contains('/') && named_id(owner) && named_id(repo) && !context.is_empty()
        }
        None => false,
    }
}

/// GitHub Actions, on github.com or GitHub Enterprise Server.
static GITHUB: ProviderInfo = ProviderInfo {
    provider: Provider::Github,
    name: "github",
    title: "GitHub Actions",
    tenancy: Tenancy::SharedAtWellKnownUrls,
    tenant_claims: &["repository_owner_id"],
    project_claims: &["repository_id"],
    ids_in_sub: Some(github_sub_has_ids),
    // `run_attempt` is left out: a retry is the same run.
    run_claims: &["run_id"],
    claims: &[
        a("repository", Role::Repository),
        a("repository_id", Role::Repository),
        a("repository_owner", Role::Owner),
        a("repository_owner_id", Role::Owner),
        c("repository_visibility", Role::Other),
        c("enterprise", Role::Owner),
        c("enterprise_id", Role::Owner),
        a("actor", Role::Other),
        c("actor_id", Role::Other),
        a("ref", Role::Ref),
        a("ref_type", Role::Ref),
        a("ref_protected", Role::Ref),
        c("base_ref", Role::Ref),
        c("head_ref", Role::Ref),
        a("sha", Role::Other),
        a("environment", Role::Environment),
        a("event_name", Role::Event),
        c("workflow", Role::Workflow),
        a("workflow_ref", Role::WorkflowOfRepository),
        c("workflow_sha", Role::Workflow),
        a("job_workflow_ref", Role::WorkflowOfRepository),
        c("job_workflow_sha", Role::Workflow),
        a("runner_environment", Role::Runner),
        a("run_id", Role::Run),
        c("run_number", Role::Run),
        a("run_attempt", Role::Run),
        c("check_run_id", Role::Run),
        c("environment_node_id", Role::Environment),
    ],
    lint: LintHints {
        renamed: &[
            ("repository", "repository_id"),
            ("repository_owner", "repository_owner_id"),
        ],
        project_names: &["sub", "repository"],
        sub: Some(GITHUB_SUB),
        branch_event: Some(GITHUB_BRANCH_EVENT),
        runner: Some(RunnerClaim {
            claim: "runner_environment",
            self_hosted: "self-hosted",
            hosted: "github-hosted",
        }),
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "GITHUB_ACTIONS",
            must_be_true: true,
        }),
        imitates: None,
        aliases: &[],
        token: GITHUB_REQUEST,
        mask: MaskCommand::AddMaskLine,
    },
};

/// GitLab CI, on gitlab.com or a self-managed instance.
static GITLAB: ProviderInfo = ProviderInfo {
    provider: Provider::Gitlab,
    name: "gitlab",
    title: "GitLab CI",
    tenancy: Tenancy::SharedAtWellKnownUrls,
    tenant_claims: &["namespace_id"],
    project_claims: &["project_id"],
    ids_in_sub: None,
    // A GitLab pipeline is one run; `job_id` is one job of it.
    run_claims: &["pipeline_id"],
    claims: &[
        a("namespace_id", Role::Owner),
        a("namespace_path", Role::Owner),
        a("project_id", Role::Repository),
        a("project_path", Role::Repository),
        c("project_visibility", Role::Other),
        c("user_id", Role::Other),
        a("user_login", Role::Other),
        c("user_email", Role::Other),
        c("user_access_level", Role::Other),
        c("user_identities", Role::Other),
        c("groups_direct", Role::Other),
        a("pipeline_id", Role::Run),
        a("pipeline_source", Role::Event),
        a("job_id", Role::Run),
        a("ref", Role::Ref),
        a("ref_type", Role::Ref),
        c("ref_path", Role::Ref),
        a("ref_protected", Role::Ref),
        a("environment", Role::Environment),
        c("environment_protected", Role::Environment),
        c("environment_action", Role::Environment),
        c("deployment_tier", Role::Environment),
        c("runner_id", Role::Runner),
        a("runner_environment", Role::Runner),
        a("sha", Role::Other),
        c("ci_config_ref_uri", Role::WorkflowOfRepository),
        c("ci_config_sha", Role::Workflow),
    ],
    lint: LintHints {
        renamed: &[
            ("project_path", "project_id"),
            ("namespace_path", "namespace_id"),
        ],
        project_names: &["sub", "project_path"],
        sub: Some(SubShape {
            prefix: "project_path:",
            separator: ':',
            count: 2,
        }),
        branch_event: None,
        runner: Some(RunnerClaim {
            claim: "runner_environment",
            self_hosted: "self-hosted",
            hosted: "gitlab-hosted",
        }),
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "GITLAB_CI",
            must_be_true: true,
        }),
        imitates: None,
        aliases: &[],
        token: TokenFrom::Variable {
            default: "JOBKEY_ID_TOKEN",
            declare: "on GitLab CI declare it in the job: `id_tokens: {name}: aud: {audience}`",
        },
        mask: MaskCommand::None,
    },
};

fn buildkite_token_args(audience: &str) -> Vec<String> {
    ["oidc", "request-token", "--audience", audience]
        .map(str::to_owned)
        .to_vec()
}

/// Buildkite Pipelines: one issuer for every organisation.
static BUILDKITE: ProviderInfo = ProviderInfo {
    provider: Provider::Buildkite,
    name: "buildkite",
    title: "Buildkite",
    tenancy: Tenancy::Shared,
    // Both ids are only in tokens requested with `--claim
    // organization_id,pipeline_id` (or `BUILDKITE_OIDC_TOKEN_CLAIMS`); the
    // slugs, always there, can be renamed and registered again.
    tenant_claims: &["organization_id"],
    project_claims: &["pipeline_id"],
    ids_in_sub: None,
    // The tokens carry no build id: a build is its number within its
    // pipeline. (`pipeline_id` names the pipeline: with it, build 1235
    // could revoke build 1234's exchange.)
    run_claims: &["organization_slug", "pipeline_slug", "build_number"],
    claims: &[
        a("organization_slug", Role::Owner),
        a("organization_id", Role::Owner),
        a("pipeline_slug", Role::Repository),
        a("pipeline_id", Role::Repository),
        a("build_number", Role::Run),
        a("build_branch", Role::Ref),
        c("build_tag", Role::Ref),
        c("build_commit", Role::Other),
        c("build_source", Role::Event),
        a("step_key", Role::Other),
        a("job_id", Role::Run),
        c("agent_id", Role::Runner),
        a("runner_environment", Role::Runner),
    ],
    lint: LintHints {
        renamed: &[("organization_slug", "organization_id")],
        project_names: &["sub", "pipeline_slug"],
        sub: Some(SubShape {
            prefix: "organization:",
            separator: ':',
            count: 4,
        }),
        branch_event: None,
        runner: None,
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "BUILDKITE",
            must_be_true: true,
        }),
        imitates: None,
        aliases: &[],
        token: TokenFrom::Command {
            program: "buildkite-agent",
            args: buildkite_token_args,
            shown: "buildkite-agent oidc request-token",
        },
        mask: MaskCommand::BuildkiteRedactor,
    },
};

/// CircleCI. Each organisation has its own issuer URL, but rules must
/// still bind the organisation id, as they did before the issuer URL was
/// matched exactly: a policy stays right when its issuer entry changes.
static CIRCLECI: ProviderInfo = ProviderInfo {
    provider: Provider::Circleci,
    name: "circleci",
    title: "CircleCI",
    tenancy: Tenancy::Shared,
    tenant_claims: &["oidc.circleci.com/org-id"],
    project_claims: &["oidc.circleci.com/project-id"],
    ids_in_sub: None,
    // A pipeline holds several workflows, and a re-run gets a new workflow id.
    run_claims: &["oidc.circleci.com/workflow-id"],
    claims: &[
        a("oidc.circleci.com/org-id", Role::Owner),
        a("oidc.circleci.com/project-id", Role::Repository),
        c("oidc.circleci.com/pipeline-definition-id", Role::Workflow),
        a("oidc.circleci.com/pipeline-id", Role::Run),
        a("oidc.circleci.com/workflow-id", Role::Run),
        a("oidc.circleci.com/job-id", Role::Run),
        a("oidc.circleci.com/vcs-origin", Role::Repository),
        a("oidc.circleci.com/vcs-ref", Role::Ref),
        c("oidc.circleci.com/context-ids", Role::Other),
        a("oidc.circleci.com/ssh-rerun", Role::Other),
    ],
    lint: LintHints {
        renamed: &[],
        project_names: &["sub", "oidc.circleci.com/vcs-origin"],
        sub: Some(SubShape {
            prefix: "org/",
            separator: '/',
            count: 4,
        }),
        branch_event: None,
        runner: None,
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "CIRCLECI",
            must_be_true: true,
        }),
        imitates: None,
        aliases: &[],
        // `$CIRCLE_OIDC_TOKEN` is for the organisation id as audience.
        token: TokenFrom::Unsupported {
            hint: "run `circleci run oidc get --claims '{\"aud\": \"jobkey\"}'` into a file or variable first",
        },
        mask: MaskCommand::None,
    },
};

/// Bitbucket Pipelines. The issuer URL names the workspace by its slug,
/// which can be renamed, so rules bind the workspace's UUID.
static BITBUCKET: ProviderInfo = ProviderInfo {
    provider: Provider::Bitbucket,
    name: "bitbucket",
    title: "Bitbucket Pipelines",
    tenancy: Tenancy::Shared,
    tenant_claims: &["workspaceUuid"],
    project_claims: &["repositoryUuid"],
    ids_in_sub: None,
    run_claims: &["pipelineUuid"],
    claims: &[
        a("workspaceUuid", Role::Owner),
        a("repositoryUuid", Role::Repository),
        a("pipelineUuid", Role::Run),
        a("stepUuid", Role::Run),
        a("deploymentEnvironmentUuid", Role::Environment),
        a("branchName", Role::Ref),
    ],
    lint: LintHints {
        renamed: &[],
        project_names: &["sub"],
        // `{repository uuid}:{step uuid}`
        sub: Some(SubShape {
            prefix: "{",
            separator: ':',
            count: 1,
        }),
        branch_event: None,
        runner: None,
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "BITBUCKET_BUILD_NUMBER",
            must_be_true: false,
        }),
        imitates: None,
        aliases: &[],
        token: TokenFrom::Variable {
            default: "BITBUCKET_STEP_OIDC_TOKEN",
            declare: "on Bitbucket Pipelines give the step `oidc: true` (the token is in {name}; its audience must be one of the broker's, not {audience})",
        },
        mask: MaskCommand::None,
    },
};

/// Azure DevOps Pipelines. Its tokens name the organisation, project and
/// service connection only in `sub` (`sc://ORG/PROJECT/CONNECTION`); they
/// carry no repository, tenant or run claim.
static AZURE_DEVOPS: ProviderInfo = ProviderInfo {
    provider: Provider::AzureDevops,
    name: "azure-devops",
    title: "Azure DevOps",
    tenancy: Tenancy::Single,
    tenant_claims: &[],
    project_claims: &[],
    ids_in_sub: None,
    run_claims: &[],
    claims: &[],
    lint: LintHints {
        renamed: &[],
        project_names: &["sub"],
        sub: Some(SubShape {
            prefix: "sc://",
            separator: '/',
            count: 4,
        }),
        branch_event: None,
        runner: None,
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "TF_BUILD",
            must_be_true: true,
        }),
        imitates: None,
        aliases: &["azure"],
        token: TokenFrom::Unsupported { hint: "" },
        mask: MaskCommand::SetSecretLine,
    },
};

/// Forgejo Actions: GitHub's token shape and token endpoint, one issuer
/// per instance. `repository_id`, `repository_owner_id` and `actor_id`
/// are in the tokens of recent Forgejo versions only.
static FORGEJO: ProviderInfo = ProviderInfo {
    provider: Provider::Forgejo,
    name: "forgejo",
    title: "Forgejo Actions",
    tenancy: Tenancy::Single,
    tenant_claims: &["repository_owner_id"],
    project_claims: &["repository_id"],
    ids_in_sub: None,
    run_claims: &["run_id"],
    claims: &[
        a("repository", Role::Repository),
        a("repository_id", Role::Repository),
        a("repository_owner", Role::Owner),
        a("repository_owner_id", Role::Owner),
        a("actor", Role::Other),
        c("actor_id", Role::Other),
        a("ref", Role::Ref),
        a("ref_type", Role::Ref),
        a("ref_protected", Role::Ref),
        c("base_ref", Role::Ref),
        c("head_ref", Role::Ref),
        a("sha", Role::Other),
        a("environment", Role::Environment),
        a("event_name", Role::Event),
        c("workflow", Role::Workflow),
        a("workflow_ref", Role::WorkflowOfRepository),
        a("job_workflow_ref", Role::WorkflowOfRepository),
        a("run_id", Role::Run),
        c("run_number", Role::Run),
        a("run_attempt", Role::Run),
    ],
    lint: LintHints {
        renamed: &[
            ("repository", "repository_id"),
            ("repository_owner", "repository_owner_id"),
        ],
        project_names: &["sub", "repository"],
        sub: Some(GITHUB_SUB),
        branch_event: Some(GITHUB_BRANCH_EVENT),
        runner: None,
    },
    client: ClientInfo {
        detect: Some(Detect {
            var: "FORGEJO_ACTIONS",
            must_be_true: true,
        }),
        imitates: Some(Provider::Github),
        aliases: &[],
        token: GITHUB_REQUEST,
        mask: MaskCommand::AddMaskLine,
    },
};

/// Any other issuer. Its claims are the union of every entry's (see
/// [`Provider::known_claims`]); lint checks it as GitHub where a rule is
/// GitHub-shaped (a `refs/heads/` ref).
static GENERIC: ProviderInfo = ProviderInfo {
    provider: Provider::Generic,
    name: "generic",
    title: "an unknown CI",
    tenancy: Tenancy::Single,
    tenant_claims: &[],
    project_claims: &[],
    ids_in_sub: None,
    run_claims: &[],
    claims: &[],
    lint: LintHints {
        renamed: &[],
        project_names: &[],
        sub: None,
        branch_event: None,
        // GitHub's spelling: stand-ins are most often GitHub-shaped.
        runner: Some(RunnerClaim {
            claim: "runner_environment",
            self_hosted: "self-hosted",
            hosted: "github-hosted",
        }),
    },
    client: ClientInfo {
        detect: None,
        imitates: None,
        aliases: &["none"],
        token: TokenFrom::Unsupported { hint: "" },
        mask: MaskCommand::None,
    },
};

/// A config preset: an issuer URL, made of a fixed part and at most one
/// [`Param`], and the provider it implies.
#[derive(Debug)]
pub(crate) struct Preset {
    pub name: &'static str,
    pub provider: Provider,
    /// The issuer URL is `{prefix}{param}{suffix}` (`prefix` alone without
    /// a parameter).
    pub prefix: &'static str,
    pub param: Option<Param>,
    pub suffix: &'static str,
    /// The parameter's value when the config gives none; `None`: required.
    pub default: Option<&'static str>,
    /// The longest token lifetime accepted unless the config says otherwise.
    pub max_lifetime: Duration,
}

/// The one variable part of a preset's issuer URL, named by its config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    /// A GitHub Enterprise Cloud slug.
    Enterprise,
    /// A host name (GitHub Enterprise Server).
    Host,
    /// The URL of a self-managed instance.
    Url,
    /// An organisation's UUID (CircleCI, Azure DevOps).
    Organization,
    /// A Bitbucket workspace slug.
    Workspace,
}

/// Why a preset's parameter cannot make an issuer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PresetError {
    /// The parameter is required: `key` with an example value.
    Missing {
        key: &'static str,
        example: &'static str,
    },
    /// The value is not of the parameter's form; `fix` says what to write.
    Invalid {
        key: &'static str,
        fix: &'static str,
    },
}

const MINUTE: u64 = 60;

/// Every preset, in the order the docs list them.
pub(crate) static PRESETS: &[Preset] = &[
    Preset {
        name: "github",
        provider: Provider::Github,
        prefix: "https://token.actions.githubusercontent.com",
        param: None,
        suffix: "",
        default: None,
        max_lifetime: Duration::from_secs(15 * MINUTE),
    },
    Preset {
        name: "github-enterprise",
        provider: Provider::Github,
        prefix: "https://token.actions.githubusercontent.com/",
        param: Some(Param::Enterprise),
        suffix: "",
        default: None,
        max_lifetime: Duration::from_secs(15 * MINUTE),
    },
    Preset {
        name: "github-server",
        provider: Provider::Github,
        prefix: "https://",
        param: Some(Param::Host),
        suffix: "/_services/token",
        default: None,
        max_lifetime: Duration::from_secs(15 * MINUTE),
    },
    Preset {
        name: "gitlab",
        provider: Provider::Gitlab,
        prefix: "",
        param: Some(Param::Url),
        suffix: "",
        default: Some("https://gitlab.com"),
        max_lifetime: Duration::from_secs(120 * MINUTE),
    },
    Preset {
        name: "buildkite",
        provider: Provider::Buildkite,
        prefix: "https://agent.buildkite.com",
        param: None,
        suffix: "",
        default: None,
        max_lifetime: Duration::from_secs(60 * MINUTE),
    },
    Preset {
        name: "circleci",
        provider: Provider::Circleci,
        prefix: "https://oidc.circleci.com/org/",
        param: Some(Param::Organization),
        suffix: "",
        default: None,
        max_lifetime: Duration::from_secs(60 * MINUTE),
    },
    Preset {
        name: "bitbucket",
        provider: Provider::Bitbucket,
        prefix: "https://api.bitbucket.org/2.0/workspaces/",
        param: Some(Param::Workspace),
        suffix: "/pipelines-config/identity/oidc",
        default: None,
        max_lifetime: Duration::from_secs(60 * MINUTE),
    },
    Preset {
        name: "azure-devops",
        provider: Provider::AzureDevops,
        prefix: "https://vstoken.dev.azure.com/",
        param: Some(Param::Organization),
        suffix: "",
        default: None,
        max_lifetime: Duration::from_secs(60 * MINUTE),
    },
    Preset {
        name: "forgejo",
        provider: Provider::Forgejo,
        prefix: "",
        param: Some(Param::Url),
        suffix: "/api/actions",
        default: None,
        max_lifetime: Duration::from_secs(60 * MINUTE),
    },
];

impl Param {
    /// Every parameter, in the order the config checks them.
    pub(crate) const ALL: [Param; 5] = [
        Param::Enterprise,
        Param::Host,
        Param::Url,
        Param::Organization,
        Param::Workspace,
    ];

    /// Its config key.
    pub(crate) fn key(self) -> &'static str {
        match self {
            Param::Enterprise => "enterprise",
            Param::Host => "host",
            Param::Url => "url",
            Param::Organization => "organization",
            Param::Workspace => "workspace",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Param::Enterprise => "acme",
            Param::Host => "github.example.com",
            Param::Url => "https://git.example.com",
            Param::Organization => "c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e",
            Param::Workspace => "acme",
        }
    }

    fn fix(self) -> &'static str {
        match self {
            Param::Enterprise => "write the enterprise slug only, e.g. \"acme\"",
            Param::Host => "write the host name only, e.g. \"github.example.com\"",
            Param::Url => "write the instance's URL, e.g. \"https://git.example.com\"",
            Param::Organization => {
                "write the organisation's id, a UUID such as \"c9035eb6-6eb2-4c85-8a81-d9ed6a1d1d1e\""
            }
            Param::Workspace => {
                "write the workspace's slug (lowercase letters, digits, `-`, `_`), e.g. \"acme\""
            }
        }
    }

    /// Whether `v` has the parameter's form. A value that passes stays
    /// one path segment (or one host), so the URL keeps its fixed parts.
    fn accepts(self, v: &str) -> bool {
        match self {
            Param::Enterprise => {
                !v.is_empty() && v.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
            }
            Param::Host => {
                !v.is_empty() && !v.contains('/') && (!v.contains(':') || v.starts_with('['))
            }
            Param::Url => !v.is_empty(),
            Param::Organization => {
                v.len() == 36
                    && v.char_indices().all(|(i, ch)| match i {
                        8 | 13 | 18 | 23 => ch == '-',
                        _ => ch.is_ascii_hexdigit(),
                    })
            }
            Param::Workspace => {
                !v.is_empty()
                    && v.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                    })
            }
        }
    }

    /// The URL's host is fixed, so a URL of this shape is well known.
    fn on_fixed_host(self) -> bool {
        matches!(
            self,
            Param::Enterprise | Param::Organization | Param::Workspace
        )
    }
}

impl Preset {
    /// The preset named `name`.
    pub(crate) fn by_name(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }

    /// Every preset's name, for error messages.
    pub(crate) fn names() -> &'static [&'static str] {
        static NAMES: LazyLock<Vec<&'static str>> =
            LazyLock::new(|| PRESETS.iter().map(|p| p.name).collect());
        &NAMES
    }

    /// The issuer URL for the parameter's value from the config (`None`:
    /// not given). A URL parameter loses its trailing `/`.
    pub(crate) fn issuer_url(&self, value: Option<&str>) -> Result<String, PresetError> {
        let Some(param) = self.param else {
            return Ok(self.prefix.to_owned());
        };
        let value = match (value, self.default) {
            (Some(v), _) => v,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(PresetError::Missing {
                    key: param.key(),
                    example: param.example(),
                });
            }
        };
        let value = if param == Param::Url {
            value.trim_end_matches('/')
        } else {
            value
        };
        if !param.accepts(value) {
            return Err(PresetError::Invalid {
                key: param.key(),
                fix: param.fix(),
            });
        }
        Ok(format!("{}{value}{}", self.prefix, self.suffix))
    }

    /// Whether `url` is this preset's issuer on a well-known host: its
    /// fixed URL, its default, or its fixed parts around a valid parameter.
    /// A self-managed host or instance URL is never well known.
    fn is_well_known(&self, url: &str) -> bool {
        match (self.param, self.default) {
            (None, _) => url == self.prefix,
            (Some(_), Some(default)) => url == format!("{}{default}{}", self.prefix, self.suffix),
            (Some(param), None) if param.on_fixed_host() => url
                .strip_prefix(self.prefix)
                .and_then(|rest| rest.strip_suffix(self.suffix))
                .is_some_and(|v| param.accepts(v)),
            (Some(_), None) => false,
        }
    }
}

/// The names of several lists, each once, in order.
fn union<'a>(lists: impl Iterator<Item = &'a [&'static str]>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for name in lists.flatten() {
        if !out.contains(name) {
            out.push(name);
        }
    }
    out
}

/// The per-provider claim lists, built once from the table.
struct Lists {
    audited: Vec<&'static str>,
    known: Vec<&'static str>,
}

fn lists(p: Provider) -> &'static Lists {
    static LISTS: LazyLock<Vec<Lists>> = LazyLock::new(|| {
        Provider::ALL
            .iter()
            .map(|p| {
                let claims = p.claims().collect::<Vec<_>>();
                let names = |keep: fn(&Claim) -> bool| {
                    let mut out: Vec<&'static str> = Vec::new();
                    for c in claims.iter().filter(|c| keep(c)) {
                        if !out.contains(&c.name) {
                            out.push(c.name);
                        }
                    }
                    out
                };
                Lists {
                    audited: names(|c| c.audited),
                    known: names(|_| true),
                }
            })
            .collect()
    });
    let i = Provider::ALL.iter().position(|q| *q == p).unwrap_or(0);
    &LISTS[i]
}

impl Provider {
    /// Every provider, [`Provider::Generic`] last.
    pub const ALL: [Provider; 8] = [
        Provider::Github,
        Provider::Gitlab,
        Provider::Buildkite,
        Provider::Circleci,
        Provider::Bitbucket,
        Provider::AzureDevops,
        Provider::Forgejo,
        Provider::Generic,
    ];

    /// The provider's table entry.
    pub fn info(self) -> &'static ProviderInfo {
        match self {
            Provider::Github => &GITHUB,
            Provider::Gitlab => &GITLAB,
            Provider::Buildkite => &BUILDKITE,
            Provider::Circleci => &CIRCLECI,
            Provider::Bitbucket => &BITBUCKET,
            Provider::AzureDevops => &AZURE_DEVOPS,
            Provider::Forgejo => &FORGEJO,
            Provider::Generic => &GENERIC,
        }
    }

    /// The name in the config and on the command line (`buildkite`).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// For people: "Buildkite", "GitHub Actions".
    pub fn title(self) -> &'static str {
        self.info().title
    }

    /// The provider named `name` (exactly as [`name`](Self::name) spells it).
    pub fn from_name(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Every provider's name, for error messages.
    pub fn names() -> &'static [&'static str] {
        static NAMES: LazyLock<Vec<&'static str>> =
            LazyLock::new(|| Provider::ALL.iter().map(|p| p.name()).collect());
        &NAMES
    }

    /// The provider whose well-known issuer URL is exactly `url`
    /// (github.com's issuer and its enterprise issuers, gitlab.com,
    /// agent.buildkite.com, CircleCI's, Bitbucket's and Azure DevOps'
    /// per-tenant issuers); [`Provider::Generic`] for anything else.
    pub fn from_issuer_url(url: &str) -> Provider {
        PRESETS
            .iter()
            .find(|p| p.is_well_known(url))
            .map(|p| p.provider)
            .unwrap_or(Provider::Generic)
    }

    /// Which of the provider's issuers are shared; see [`Tenancy`].
    pub fn tenancy(self) -> Tenancy {
        self.info().tenancy
    }

    /// Whether this provider's issuer at `url` signs for many tenants
    /// (`None`, an unknown URL, is taken as shared: the check fails
    /// closed).
    pub fn issuer_is_shared(self, url: Option<&str>) -> bool {
        match self.tenancy() {
            Tenancy::Shared => true,
            Tenancy::SharedAtWellKnownUrls => {
                url.is_none_or(|u| Provider::from_issuer_url(u) == self)
            }
            Tenancy::Single => false,
        }
    }

    /// Whether an exact `sub` value names the tenant and the project by
    /// their immutable ids; see [`ProviderInfo::ids_in_sub`].
    pub fn sub_has_ids(self, sub: &str) -> bool {
        self.info().ids_in_sub.is_some_and(|f| f(sub))
    }

    /// The immutable ids of the tenant.
    pub fn tenant_claims(self) -> &'static [&'static str] {
        self.info().tenant_claims
    }

    /// The immutable ids of the repository or project.
    pub fn project_claims(self) -> &'static [&'static str] {
        self.info().project_claims
    }

    /// The claims that together name one run. Empty for a provider whose
    /// tokens do not say (and for [`Provider::Generic`]).
    pub fn run_claims(self) -> &'static [&'static str] {
        self.info().run_claims
    }

    /// The run `claims` belong to: the run claims' values (strings or
    /// numbers), one value as it is, several as a JSON array. `None` when
    /// the provider names no run claims or any is missing.
    pub fn run_of(self, claims: &Map<String, Value>) -> Option<String> {
        let values = self
            .run_claims()
            .iter()
            .map(|name| match claims.get(*name)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<String>>>()?;
        match values.as_slice() {
            [] => None,
            [one] => Some(one.clone()),
            _ => serde_json::to_string(&values).ok(),
        }
    }

    /// The claims the audit records for this provider's tokens (every
    /// provider's, for [`Provider::Generic`]).
    pub fn audited_claims(self) -> &'static [&'static str] {
        &lists(self).audited
    }

    /// The claims this provider is known to send, registered ones included
    /// (every provider's, for [`Provider::Generic`]).
    pub fn known_claims(self) -> &'static [&'static str] {
        &lists(self).known
    }

    /// Whether the entry lists every claim the provider's tokens carry, so
    /// that a claim name outside [`known_claims`](Self::known_claims) is a
    /// mistake. Not for [`Provider::Generic`]: an unknown CI's tokens may
    /// carry anything.
    pub fn claims_are_known(self) -> bool {
        self != Provider::Generic
    }

    /// Whether this provider sends `claim` (registered claims included);
    /// always true when its claims are not known.
    pub fn sends(self, claim: &str) -> bool {
        !self.claims_are_known() || self.known_claims().contains(&claim)
    }

    /// The known claim `name` is most likely a misspelling of: the closest
    /// by edit distance, when it is close (one edit for names of up to 4
    /// characters; otherwise 2, or a quarter of the name's length).
    pub fn closest_claim(self, name: &str) -> Option<&'static str> {
        let length = name.chars().count();
        let limit = if length <= 4 { 1 } else { (length / 4).max(2) };
        self.known_claims()
            .iter()
            .map(|known| (strsim::damerau_levenshtein(name, known), *known))
            .filter(|(distance, _)| *distance <= limit)
            .min_by_key(|(distance, known)| (*distance, *known))
            .map(|(_, known)| known)
    }

    /// What `claim` says for this provider; `None` for a claim it does not
    /// send. [`Provider::Generic`] takes the first entry that knows it.
    pub fn role_of(self, claim: &str) -> Option<Role> {
        self.claims().find(|c| c.name == claim).map(|c| c.role)
    }

    /// This provider's claims, registered ones included; every provider's
    /// in table order for [`Provider::Generic`] (names may repeat).
    fn claims(self) -> impl Iterator<Item = &'static Claim> {
        let own: Box<dyn Iterator<Item = &'static Claim>> = match self {
            Provider::Generic => Box::new(
                Provider::ALL
                    .into_iter()
                    .flat_map(|p| p.info().claims.iter()),
            ),
            p => Box::new(p.info().claims.iter()),
        };
        REGISTERED.iter().chain(own)
    }

    /// The provider's lint hints.
    pub fn lint(self) -> &'static LintHints {
        &self.info().lint
    }

    /// The entries whose lint hints apply: its own, or every provider's
    /// for [`Provider::Generic`].
    fn lint_entries(self) -> Vec<Provider> {
        match self {
            Provider::Generic => Provider::ALL.to_vec(),
            p => vec![p],
        }
    }

    /// For lint: (name, immutable id) pairs; see [`LintHints::renamed`].
    pub fn renamed_claims(self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        for p in self.lint_entries() {
            for pair in p.lint().renamed {
                if !out.contains(pair) {
                    out.push(*pair);
                }
            }
        }
        out
    }

    /// For lint: the claims naming a project in words; see
    /// [`LintHints::project_names`].
    pub fn project_name_claims(self) -> Vec<&'static str> {
        union(self.lint_entries().iter().map(|p| p.lint().project_names))
    }

    /// For lint: the immutable project ids that pin one project (every
    /// provider's for [`Provider::Generic`]).
    pub fn project_id_claims(self) -> Vec<&'static str> {
        union(self.lint_entries().iter().map(|p| p.project_claims()))
    }

    /// For lint: the branch-and-event checks that may apply to a rule
    /// (every provider's for [`Provider::Generic`], where the rule's
    /// shape decides).
    pub fn branch_event_checks(self) -> Vec<BranchEvent> {
        let mut out: Vec<BranchEvent> = Vec::new();
        for check in self
            .lint_entries()
            .iter()
            .filter_map(|p| p.lint().branch_event)
        {
            if !out
                .iter()
                .any(|c| c.event_claim == check.event_claim && c.ref_claim == check.ref_claim)
            {
                out.push(check);
            }
        }
        out
    }

    /// Whether a `sub` pattern whose fixed start is `prefix` names one
    /// project. [`Provider::Generic`] takes the shape whose prefix `prefix`
    /// starts with, or else two `:` (GitHub's and GitLab's shape).
    pub fn sub_names_project(self, prefix: &str) -> bool {
        let holds = |s: &SubShape| {
            prefix.starts_with(s.prefix) && prefix.matches(s.separator).count() >= s.count
        };
        match self.lint().sub {
            Some(shape) => holds(&shape),
            None if self == Provider::Generic => Provider::ALL
                .iter()
                .filter_map(|p| p.lint().sub)
                .find(|s| prefix.starts_with(s.prefix))
                .map(|s| holds(&s))
                .unwrap_or_else(|| prefix.matches(':').count() >= 2),
            None => false,
        }
    }

    /// The provider's client facts.
    pub fn client(self) -> &'static ClientInfo {
        &self.info().client
    }

    /// The CI a job runs in, from its environment (`env` looks a variable
    /// up): a CI that sets another's variables is told apart first;
    /// [`Provider::Generic`] when none is recognised.
    pub fn detect(env: &dyn Fn(&str) -> Option<String>) -> Provider {
        let found = |p: &Provider| {
            p.client().detect.is_some_and(|d| match env(d.var) {
                Some(v) if d.must_be_true => v.eq_ignore_ascii_case("true"),
                Some(_) => true,
                None => false,
            })
        };
        let (imitators, others): (Vec<Provider>, Vec<Provider>) = Provider::ALL
            .into_iter()
            .partition(|p| p.client().imitates.is_some());
        imitators
            .iter()
            .chain(others.iter())
            .find(|p| found(p))
            .copied()
            .unwrap_or(Provider::Generic)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Provider {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Provider::from_name(&name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, Provider::names()))
    }
}

/// `--ci NAME`: the providers' names, and their older spellings.
impl clap::ValueEnum for Provider {
    fn value_variants<'a>() -> &'a [Self] {
        &Provider::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(
            clap::builder::PossibleValue::new(self.name())
                .aliases(self.client().aliases.iter().copied()),
        )
    }
}

#[cfg(test)]
mod tests;
