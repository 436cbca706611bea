//! jobkey: a secrets broker for CI/CD jobs.
//!
//! See `ARCHITECTURE.md` for the map of this crate. The modules are
//! private: the `pub use` list below is the whole library API — the
//! binary's entry point, and what an embedding, a benchmark or a test needs
//! to run the broker, read and verify its audit log, backtest policies,
//! and stand in for a CI issuer. Anything not on it is internal, so the
//! compiler reports it when it is dead (`unreachable_pub` keeps `pub` off
//! internal items).
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

mod audit;
mod cli;
mod client;
mod config;
mod devissuer;
mod exchanges;
mod files;
#[cfg(fuzzing)]
pub mod fuzz_api;
mod issue;
mod limits;
mod mask;
mod metrics;
mod outbound;
mod policy;
mod provider;
mod random;
mod redis_conn;
mod review;
mod secret;
mod server;
mod tls;
mod token;
mod vault;

// The binary.
pub use cli::{Cli, run};

// Running the broker: its configuration, its state and its server.
pub use config::{Config, ConfigError, StateSettings};
pub use limits::{LimitSettings, Rate};
pub use server::{AppState, ServeError, serve};
pub use tls::install_rustls_ring_provider;

// Token verification.
pub use provider::Provider;
pub use token::{
    DEFAULT_MAX_TOKEN_BYTES, FetchError, FetchSettings, IssuerSettings, KeySource, TokenError,
    VerifiedToken, Verifier,
};

// Policies, and backtesting them against an audit log.
pub use policy::tools::replay::{Report as ReplayReport, replay as replay_policies};
pub use policy::{Decision, PolicyError, PolicyIssuer, PolicySet, Request};

// Vault.
pub use secret::SecretString;
pub use vault::{Readiness, TokenRole, Vault, VaultAuth, VaultConfig, VaultError};

// The audit log: its record type, writing, reading and verifying it.
pub use audit::query::{LogSet, Records};
pub use audit::{
    AuditError, AuditLog, AuditSettings, CheckpointSettings, Decision as AuditDecision, Event,
    Fingerprinter, IssuedCredential, Refusal, RotateSettings, Stage, VerifyReport, verify_file,
};

// The stand-in CI issuer (`jobkey dev-issuer`), for tests and demos.
pub use devissuer::{
    DevIssuer, KeyError, Shape, SigningKey, apply as apply_claim_overrides,
    router as dev_issuer_router, spawn as spawn_dev_issuer,
};
