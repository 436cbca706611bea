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
#[cfg(fuzzing)]
pub mod fuzz_api;
pub mod issue;
pub mod mask;
pub mod outbound;
pub mod policy;
pub mod provider;
pub mod random;
pub mod secret;
pub mod server;
pub mod tls;
pub mod token;
pub mod vault;
