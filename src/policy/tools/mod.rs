//! The tools for people who write policies, built on the engine's public
//! face and its compiled form (read only): `lint` (`jobkey policy lint`),
//! `who_can` (the access review), `fixtures` (`jobkey policy test`),
//! `explain` (decisions and rule outcomes as text) and `replay` (`jobkey
//! policy replay`, the backtest over recorded exchanges). The request path uses
//! none of them.

pub mod explain;
pub mod fixtures;
pub mod lint;
pub mod replay;
pub mod who_can;
