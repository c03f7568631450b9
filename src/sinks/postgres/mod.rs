//! The Postgres sink. Each write is one transaction that stores the accepted events,
//! dead letters, conflicts and current state, and moves `sink_progress` by
//! compare-and-set. The pool, migrations and table definitions it shares with the
//! stages are in [`crate::db`].
//!
//! - [`writer`]: plans a write against the durable progress, retries a fenced one,
//!   isolates a refused record;
//! - `transaction`: the transaction's named steps;
//! - `rows`: the rows as diesel writes them;
//! - `refusal`: which record to blame and what stands in for it (pure);
//! - `outcomes`: the outcome counts of a write (pure);
//! - `bookkeeping`: counts, progress and retractions in one statement.

mod bookkeeping;
mod outcomes;
mod refusal;
mod rows;
mod transaction;
pub mod writer;
