//! The Arrow schemas of the lake's three tables (events, retractions, dead letters):
//! what every file of each holds before its event type's typed columns. A leaf of the
//! lake sink: the files, the typed columns and the Delta tables all read it.

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, OnceLock};

/// Timestamps in the lake: UTC microseconds.
pub fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The schema of every lake file.
pub fn lake_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("event_id", DataType::Utf8, false),
                Field::new("schema_version", DataType::Int32, false),
                Field::new("source", DataType::Utf8, false),
                Field::new("occurred_at", utc_micros(), false),
                Field::new("payload", DataType::Utf8, false),
                Field::new("payload_hash", DataType::Utf8, false),
                Field::new("topic", DataType::Utf8, false),
                Field::new("partition", DataType::Int32, false),
                Field::new("offset", DataType::Int64, false),
                Field::new("kafka_timestamp", utc_micros(), true),
                Field::new("ingested_at", utc_micros(), false),
                Field::new("read_at", utc_micros(), false),
                Field::new("lateness_ms", DataType::Int64, false),
                Field::new("late", DataType::Boolean, false),
                Field::new("headers", DataType::Utf8, true),
                Field::new("correlation_id", DataType::Utf8, true),
            ]))
        })
        .clone()
}

/// The schema of retraction files: which event, what happened, and the record that
/// said so.
pub fn retraction_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("event_id", DataType::Utf8, false),
                Field::new("action", DataType::Utf8, false),
                Field::new("event_type", DataType::Utf8, true),
                Field::new("topic", DataType::Utf8, false),
                Field::new("partition", DataType::Int32, false),
                Field::new("offset", DataType::Int64, false),
                Field::new("kafka_timestamp", utc_micros(), true),
                Field::new("read_at", utc_micros(), false),
            ]))
        })
        .clone()
}

/// The schema of dead-letter files: the record as it came (key and value bytes,
/// untouched), why it was refused, and where it came from.
pub fn dead_letter_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            Arc::new(Schema::new(vec![
                Field::new("topic", DataType::Utf8, false),
                Field::new("partition", DataType::Int32, false),
                Field::new("offset", DataType::Int64, false),
                Field::new("record_key", DataType::Binary, true),
                Field::new("record_value", DataType::Binary, true),
                Field::new("error_class", DataType::Utf8, false),
                Field::new("error_message", DataType::Utf8, false),
                Field::new("event_type", DataType::Utf8, true),
                Field::new("schema_version", DataType::Int32, true),
                Field::new("kafka_timestamp", utc_micros(), true),
                Field::new("rejected_at", utc_micros(), false),
            ]))
        })
        .clone()
}
