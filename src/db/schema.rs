//! Diesel table definitions; they mirror `migrations/`.
#![allow(missing_docs)]

diesel::table! {
    processed_events (event_id) {
        event_id -> Uuid,
        topic -> Nullable<Text>,
        partition -> Nullable<Int4>,
        offset -> Nullable<Int8>,
        payload_hash -> Nullable<Text>,
        first_seen_at -> Nullable<Timestamptz>,
        sink_rejected -> Nullable<Text>,
        invalidated_topic -> Nullable<Text>,
        invalidated_partition -> Nullable<Int4>,
        invalidated_offset -> Nullable<Int8>,
        invalidated_hash -> Nullable<Text>,
        invalidated_at -> Nullable<Timestamptz>,
        deleted_topic -> Nullable<Text>,
        deleted_partition -> Nullable<Int4>,
        deleted_offset -> Nullable<Int8>,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    events (event_id) {
        event_id -> Uuid,
        event_type -> Text,
        schema_version -> Int4,
        source -> Text,
        occurred_at -> Timestamptz,
        payload -> Jsonb,
        payload_hash -> Text,
        topic -> Text,
        partition -> Int4,
        offset -> Int8,
        kafka_timestamp -> Nullable<Timestamptz>,
        received_at -> Timestamptz,
        lateness_ms -> Int8,
        late -> Bool,
        is_valid -> Bool,
        invalidated_at -> Nullable<Timestamptz>,
        invalidated_topic -> Nullable<Text>,
        invalidated_partition -> Nullable<Int4>,
        invalidated_offset -> Nullable<Int8>,
        headers -> Nullable<Jsonb>,
        correlation_id -> Nullable<Text>,
        normalized -> Nullable<Jsonb>,
    }
}

diesel::table! {
    dead_letters (topic, partition, offset) {
        topic -> Text,
        partition -> Int4,
        offset -> Int8,
        record_key -> Nullable<Bytea>,
        record_value -> Nullable<Bytea>,
        headers -> Jsonb,
        error_class -> Text,
        error_message -> Text,
        event_type -> Nullable<Text>,
        schema_version -> Nullable<Int4>,
        rejected_at -> Timestamptz,
    }
}

diesel::table! {
    conflicts (topic, partition, offset) {
        topic -> Text,
        partition -> Int4,
        offset -> Int8,
        event_id -> Uuid,
        payload -> Jsonb,
        payload_hash -> Text,
        first_topic -> Text,
        first_partition -> Int4,
        first_offset -> Int8,
        detected_at -> Timestamptz,
    }
}

diesel::table! {
    outcome_counts (topic, partition, outcome) {
        topic -> Text,
        partition -> Int4,
        outcome -> Text,
        count -> Int8,
    }
}

diesel::table! {
    retracted_events (event_id) {
        event_id -> Uuid,
        recorded_at -> Timestamptz,
    }
}

diesel::table! {
    sink_progress (sink, topic, partition) {
        sink -> Text,
        topic -> Text,
        partition -> Int4,
        next_offset -> Int8,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    dlq_redrives (topic, partition, offset) {
        topic -> Text,
        partition -> Int4,
        offset -> Int8,
        redriven_at -> Timestamptz,
        sent_partition -> Nullable<Int4>,
        sent_offset -> Nullable<Int8>,
    }
}

diesel::table! {
    entity_tombstones (topic, partition, offset) {
        topic -> Text,
        partition -> Int4,
        offset -> Int8,
        entity_key -> Text,
        deleted_at -> Timestamptz,
        entity -> Nullable<Text>,
    }
}
