//! jobkey: a secrets broker for CI/CD jobs.
//!
//! See `ARCHITECTURE.md` for the map of this crate.
#![forbid(unsafe_code)]

pub mod secret;
pub mod tls;
pub mod vault;
