//! jobkey: a secrets broker for CI/CD jobs.
//!
//! See `ARCHITECTURE.md` for the map of this crate.
#![forbid(unsafe_code)]

pub mod audit;
pub mod cli;
pub mod client;
pub mod config;
pub mod devissuer;
pub mod exchanges;
pub mod files;
pub mod issue;
pub mod limits;
pub mod mask;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod provider;
pub mod random;
pub mod review;
pub mod secret;
pub mod server;
pub mod tls;
pub mod token;
pub mod vault;
