//! Tooling around the runtime, used by the `eventline` binary: [`produce`] (with
//! [`publisher`] and the traffic [`generator`]), [`status`], [`drill`], [`lake`] purge,
//! [`dlq`] replay, [`state`] of one entity, [`bench`](mod@bench) limits,
//! and [`console`] output that survives a closed pipe.

pub mod bench;
pub mod console;
pub mod dlq;
pub mod drill;
pub mod generator;
pub mod lake;
pub mod produce;
pub mod publisher;
pub mod state;
pub mod status;
pub mod supervision;
