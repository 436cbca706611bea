//! The integration tests: one binary with a module per area, so the crate
//! is linked once (on two cores, thirteen test binaries each linking the
//! whole library took most of a cold `make test`).
//!
//! `support` starts what the tests need (OpenBao, stand-in CI issuers,
//! jobkey itself); `fetch_support` stands in for the CI side of `jobkey
//! fetch`.

mod fetch_support;
mod support;

mod abuse;
mod audit_checkpoint;
mod audit_cli;
mod audit_flood;
mod audit_rotate;
mod broker_support;
mod broker_vault_login;
mod cli;
mod credentials;
mod deploy_examples;
mod disclosure;
mod documented_formats;
mod examples;
mod exchange;
mod faults;
mod fetch;
mod fetch_retry;
mod fetch_revoke;
mod hostile_files;
mod hostile_tokens;
mod issuer_tls;
mod listener_tls;
mod logging;
mod masking;
mod metrics;
mod no_secrets_in_logs;
mod policy_cli;
mod policy_reload;
mod review;
mod server_limits;
mod vault;
mod vault_policy;
mod vault_token_env;
