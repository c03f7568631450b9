//! The two sinks and what they share. Every sink is a [`worker::SinkWriter`] (blocking
//! writes on a thread of its own, its own durable progress per partition), run by a
//! [`worker::SinkWorker`] and supervised by a [`supervisor::SinkSupervisor`] that
//! restarts it with backoff ([`restart_policy`]); [`progress`] reads both sinks' durable
//! progress, where the source resumes. [`postgres`] and [`lake`] are laid out
//! alike: `writer.rs` for the write path, then the files it needs. [`verdicts`] tells
//! the lake which records Postgres refused, so both sinks hold the same events.

pub mod lake;
pub mod postgres;
pub mod progress;
pub mod restart_policy;
pub mod supervisor;
pub mod verdicts;
pub mod worker;
