//! eventline consumes business events from Kafka, checks each against its contract,
//! drops duplicates by `event_id`, and stores every accepted event exactly once in
//! PostgreSQL and in a Parquet lake partitioned by `event_type/year/month/day`.
//!
//! The stages are actix actors (see [`pipeline`] for the wiring):
//! [`kafka_source`] -> [`validator`] -> [`deduplicator`] -> [`dead_letter`] ->
//! [`sink_supervisor`] over [`postgres_writer`] and [`parquet_writer`] ->
//! [`offset_tracker`]. Pure logic lives outside the actors and is unit-tested:
//! [`contract`], [`dedup`], [`progress`], [`lake_layout`], [`restart_policy`].
#![deny(missing_docs)]

pub mod admin;
pub mod bench;
pub mod console;
pub mod contract;
pub mod db;
pub mod dead_letter;
pub mod dedup;
pub mod deduplicator;
pub mod drill;
pub mod flow;
pub mod generator;
pub mod kafka_source;
pub mod lake_files;
pub mod lake_layout;
pub mod lake_log;
pub mod lake_reader;
pub mod metrics;
pub mod offset_tracker;
pub mod parquet_writer;
pub mod pipeline;
pub mod postgres_writer;
pub mod produce_run;
pub mod producer;
pub mod progress;
pub mod progress_store;
pub mod record;
pub mod restart_policy;
pub mod schema;
pub mod settings;
pub mod sink;
pub mod sink_supervisor;
pub mod stats;
pub mod status;
pub mod supervision_log;
pub mod validator;
