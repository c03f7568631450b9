//! eventline consumes business events from Kafka, checks each against its contract,
//! drops duplicates by `event_id`, and stores every accepted event exactly once in
//! PostgreSQL and in a Delta Lake table (Parquet) partitioned by `event_type/year/month/day`.
//!
//! # The layout, in the order an event meets it
//!
//! | folder | what it holds |
//! | --- | --- |
//! | [`source`] | the Kafka source actor (consumer, rebalances, batching, back-pressure), the per-partition flow, the guard against a consumer stuck outside its group |
//! | [`stages`] | contracts (and the typed fields they declare), transforms and the validator, which Kafka headers an event keeps, what a tombstone deletes, the dedup decision (accepted, duplicate, conflict, invalidated, deleted) and its actor, dead letters |
//! | [`projections`] | current state: the entities contracts declare (`x-entity`), their state tables' DDL and fold, kept in the Postgres writer's transaction |
//! | [`sinks`] | the writer trait, worker, supervisor and restart policy; [`sinks::postgres`] and [`sinks::lake`]; what Postgres refused, for the lake ([`sinks::verdicts`]) |
//! | [`offsets`] | resume positions, both sinks' progress, the offset tracker that commits to Kafka |
//! | [`ops`] | admin server (health, readiness, metrics), supervision log, summary counters |
//! | [`cli`] | tooling apart from the runtime: produce, generator, status, drills, lake purge, compact and vacuum, dead-letter replay, bench limits |
//! | [`db`] | the Postgres pool, migrations and table definitions the stages and sinks share, and the raw SQL each connection prepares once ([`db::prepared`]) |
//! | [`record`], [`settings`], [`pipeline`] | shared vocabulary, typed settings, the wiring |
//! | [`storable`] | the one boundary input text crosses on its way out: NUL and bad bytes escaped, lengths bounded |
//! | [`error`] | the crate's [`Error`] over every module's error enum, and the class of each |
//!
//! # One event's path
//!
//! 1. [`source::actor`] reads it from Kafka into a per-partition [`record::SourceBatch`]
//!    and hands the batch to that partition's flow ([`source::flow`]).
//! 2. [`stages::validator`] parses it, checks it against [`stages::contract`] and applies
//!    its [`stages::transform`]s; a bad record becomes a dead letter
//!    ([`stages::dead_letter`]).
//! 3. [`stages::deduplicator`] records its `event_id` (and, for an `is_valid: false` copy
//!    or a tombstone keyed by it, the invalidation or deletion) and decides accepted,
//!    duplicate, conflict, invalidated or deleted with [`stages::dedup_decision`].
//! 4. The decided batch goes to both [`sinks::supervisor::SinkSupervisor`]s:
//!    [`sinks::postgres::writer`] stores it in one transaction with its progress and the
//!    current state of the entities it touches ([`projections`]; a record Postgres
//!    refuses is split out and dead-lettered), and
//!    [`sinks::lake::writer`] buffers it and, once Postgres has stored the range, flushes
//!    Parquet files (and a retraction file for invalidations and deletions) and commits
//!    them to the lake's Delta tables with the partition's progress as a `txn` action
//!    ([`sinks::lake::table`]), on a local folder or S3 ([`sinks::lake::store`]).
//! 5. [`offsets::tracker`] commits to Kafka the lower of both sinks' durable progress.
//!
//! [`pipeline`] starts the actors and wires them; `src/main.rs` maps the command line
//! onto this library.
#![deny(missing_docs)]

pub mod cli;
pub mod db;
pub mod error;
pub mod offsets;
pub mod ops;
pub mod pipeline;
pub mod projections;
pub mod record;
pub mod settings;
pub mod sinks;
pub mod source;
pub mod stages;
pub mod storable;

pub use error::{Error, FailureClass};
