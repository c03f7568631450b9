//! The Postgres sink: [`writer`] stores decided batches (events, dead letters, outcome
//! counts) and moves its progress by compare-and-set in the same transaction. The pool,
//! migrations and table definitions it shares with the stages are in [`crate::db`].

pub mod writer;
