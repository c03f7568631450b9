//! eventline consumes business events from Kafka, checks each against its contract,
//! drops duplicates by `event_id`, and stores every accepted event exactly once in
//! PostgreSQL and in a Delta Lake table (Parquet) partitioned by `event_type/year/month/day`.
//!
//! # The layout, by layer
//!
//! Imports point one way, down: a module uses only modules of a lower layer, those at
//! the bottom use nothing of the crate, and no two files import each other in a circle
//! (`tests/layers.rs` fails otherwise). From the bottom:
//!
//! | layer | modules | what they hold |
//! | --- | --- | --- |
//! | 0 | [`record`], [`settings`], [`storable`], [`failure`], [`payload_fields`] | the vocabulary (records, events, batches), typed settings, the one boundary input text crosses on its way out, the class of every error (transient, poison, fenced, fatal) and the backoff, the typed fields a contract declares |
//! | 1 | [`telemetry`] | metrics, the supervision log, fault injection, the clock: what every stage and sink reports through |
//! | 2 | [`db`] | the Postgres pool, migrations, table definitions, the raw SQL each connection prepares once ([`db::prepared`]) |
//! | 3 | [`projections`] | current state: the entities contracts declare (`x-entity`), their state tables' DDL and fold |
//! | 4 | [`stages`] | contracts, transforms and the validator, headers, tombstones, the dedup decision and its actor, dead letters |
//! | 5 | [`ops`] | admin server (health, readiness, metrics), summary counters, log format |
//! | 6 | [`offsets`] | resume positions, the offset tracker that commits to Kafka |
//! | 7 | [`sinks`] | the writer trait, worker, supervisor and restart policy; [`sinks::postgres`] and [`sinks::lake`]; what Postgres refused, for the lake ([`sinks::verdicts`]) |
//! | 8 | [`source`] | the Kafka source actor (consumer, rebalances, batching, back-pressure), the per-partition flow, the guard against a consumer stuck outside its group |
//! | 9 | [`pipeline`] | the wiring: starts the actors and runs them until a signal or a give-up |
//! | 10 | [`cli`] | tooling apart from the runtime, which the runtime never imports: produce, generator, status, drills, lake purge, compact and vacuum, dead-letter replay, bench limits |
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
//!    current state of the entities it touches ([`projections`]; [`sinks::postgres`]
//!    lists the transaction's steps; a record Postgres refuses is split out and
//!    dead-lettered), and
//!    [`sinks::lake::writer`] buffers it and, once Postgres has stored the range, flushes
//!    Parquet files (and a retraction file for invalidations and deletions) and commits
//!    them to the lake's Delta tables with the partition's progress as a `txn` action
//!    ([`sinks::lake::commit`]), on a local folder or S3 ([`sinks::lake::store`]).
//! 5. [`offsets::tracker`] commits to Kafka the lower of both sinks' durable progress.
//!
//! [`pipeline`] starts the actors and wires them; `src/main.rs` maps the command line
//! onto this library.
#![deny(missing_docs)]

pub mod cli;
pub mod db;
pub mod failure;
pub mod offsets;
pub mod ops;
pub mod payload_fields;
pub mod pipeline;
pub mod projections;
pub mod record;
pub mod settings;
pub mod sinks;
pub mod source;
pub mod stages;
pub mod storable;
pub mod telemetry;

pub use failure::FailureClass;
