//! The tools for people who write policies, built on the engine's public
//! face and its compiled form (read only): `lint` (`jobkey policy lint`),
//! `who_can` (the access review), `fixtures` (`jobkey policy test`),
//! `explain` (decisions and rule outcomes as text) and `replay` (`jobkey
//! policy replay`, the backtest over recorded exchanges). The request path uses
//! none of them.

pub(crate) mod explain;
pub(crate) mod fixtures;
pub(crate) mod lint;
pub(crate) mod replay;
pub(crate) mod who_can;
