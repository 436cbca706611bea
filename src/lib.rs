//! jobkey: a secrets broker for CI/CD jobs.
//!
//! See `ARCHITECTURE.md` for the map of this crate.
#![forbid(unsafe_code)]

pub mod policy;
pub mod secret;
