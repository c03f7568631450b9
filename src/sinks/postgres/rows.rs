//! The rows the Postgres sink writes, as diesel sees them: an accepted event for
//! `COPY ... (FORMAT binary)` or for the fallback INSERT that skips stored ids, a dead
//! letter, a conflict, an entity tombstone. Text from input goes in only as
//! [`StorableText`].

use crate::db::prepared::prepared;
use crate::db::schema::{conflicts, dead_letters, entity_tombstones, events};
use crate::record::{Conflict, DeadLetter, EntityDeletion, Event};
use crate::storable::StorableText;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

/// Rows per INSERT statement (dead letters, conflicts): 12 columns x 4,000 rows stays
/// under Postgres's 65,535 bind parameters.
pub(super) const ROWS_PER_STATEMENT: usize = 4_000;

/// Accepted events as one array per column, for the fallback write: one
/// INSERT ... SELECT FROM unnest(...) ... ON CONFLICT DO NOTHING stores any number of
/// rows in one round trip, with no bind-parameter limit.
#[derive(Default)]
pub(super) struct EventColumns<'a> {
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    schema_version: Vec<i32>,
    source: Vec<&'a str>,
    occurred_at: Vec<DateTime<Utc>>,
    payload: Vec<&'a str>,
    payload_hash: Vec<&'a str>,
    topic: Vec<&'a str>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    kafka_timestamp: Vec<Option<DateTime<Utc>>>,
    lateness_ms: Vec<i64>,
    late: Vec<bool>,
    headers: Vec<Option<&'a str>>,
    correlation_id: Vec<Option<&'a str>>,
    normalized: Vec<Option<&'a str>>,
}

impl<'a> EventColumns<'a> {
    pub(super) fn push(&mut self, e: &'a Event) {
        self.event_id.push(e.event_id);
        self.event_type.push(&e.event_type);
        self.schema_version.push(e.schema_version);
        self.source.push(&e.source);
        self.occurred_at.push(e.occurred_at);
        self.payload.push(&e.payload);
        self.payload_hash.push(&e.payload_hash);
        self.topic.push(&e.coords.topic);
        self.partition.push(e.coords.partition);
        self.offset.push(e.coords.offset);
        self.kafka_timestamp.push(e.kafka_timestamp_ms.and_then(DateTime::from_timestamp_millis));
        self.lateness_ms.push(e.lateness_ms);
        self.late.push(e.late);
        self.headers.push(e.headers.as_deref());
        self.correlation_id.push(e.correlation_id.as_deref());
        self.normalized.push(e.normalized.as_deref());
    }

    pub(super) fn insert_skipping_existing(&self, conn: &mut PgConnection) -> QueryResult<usize> {
        if self.event_id.is_empty() {
            return Ok(0);
        }
        use diesel::sql_types::{
            Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid,
        };
        prepared(INSERT_EVENTS_SKIP_EXISTING)
            .bind::<Array<SqlUuid>, _>(&self.event_id)
            .bind::<Array<Text>, _>(&self.event_type)
            .bind::<Array<Integer>, _>(&self.schema_version)
            .bind::<Array<Text>, _>(&self.source)
            .bind::<Array<Timestamptz>, _>(&self.occurred_at)
            .bind::<Array<Text>, _>(&self.payload)
            .bind::<Array<Text>, _>(&self.payload_hash)
            .bind::<Array<Text>, _>(&self.topic)
            .bind::<Array<Integer>, _>(&self.partition)
            .bind::<Array<BigInt>, _>(&self.offset)
            .bind::<Array<Nullable<Timestamptz>>, _>(&self.kafka_timestamp)
            .bind::<Array<BigInt>, _>(&self.lateness_ms)
            .bind::<Array<Bool>, _>(&self.late)
            .bind::<Array<Nullable<Text>>, _>(&self.headers)
            .bind::<Array<Nullable<Text>>, _>(&self.correlation_id)
            .bind::<Array<Nullable<Text>>, _>(&self.normalized)
            .execute(conn)
    }
}

/// A JSON document that is already valid JSON text (the validator produced it), sent
/// as `jsonb` without parsing it into a `serde_json::Value` and printing it again.
#[derive(Debug, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Jsonb)]
pub(super) struct JsonText<'a>(&'a str);

impl diesel::serialize::ToSql<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonText<'_> {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        use std::io::Write;
        // jsonb's binary input is a version byte (1) and the JSON text.
        out.write_all(&[1])?;
        out.write_all(self.0.as_bytes())?;
        Ok(diesel::serialize::IsNull::No)
    }
}

/// One accepted event as a row of `events` for `COPY ... FROM STDIN (FORMAT binary)`.
#[derive(Insertable)]
#[diesel(table_name = events, treat_none_as_default_value = false)]
pub(super) struct EventRow<'a> {
    event_id: Uuid,
    event_type: &'a str,
    schema_version: i32,
    source: StorableText<'a>,
    occurred_at: DateTime<Utc>,
    payload: JsonText<'a>,
    payload_hash: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
    kafka_timestamp: Option<DateTime<Utc>>,
    lateness_ms: i64,
    late: bool,
    headers: Option<JsonText<'a>>,
    correlation_id: Option<StorableText<'a>>,
    normalized: Option<JsonText<'a>>,
}

impl<'a> From<&'a Event> for EventRow<'a> {
    fn from(e: &'a Event) -> Self {
        EventRow {
            event_id: e.event_id,
            event_type: &e.event_type,
            schema_version: e.schema_version,
            source: StorableText::new(&e.source),
            occurred_at: e.occurred_at,
            payload: JsonText(&e.payload),
            payload_hash: &e.payload_hash,
            topic: &e.coords.topic,
            partition: e.coords.partition,
            offset: e.coords.offset,
            kafka_timestamp: e.kafka_timestamp_ms.and_then(DateTime::from_timestamp_millis),
            lateness_ms: e.lateness_ms,
            late: e.late,
            headers: e.headers.as_deref().map(JsonText),
            correlation_id: e.correlation_id.as_deref().map(StorableText::new),
            normalized: e.normalized.as_deref().map(JsonText),
        }
    }
}

/// How accepted events go in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum InsertMode {
    /// COPY in binary format: the dedup decision and the progress compare-and-set
    /// already guarantee the ids are new, so the fastest path Postgres has applies
    /// (rows go into the table in bulk; no ON CONFLICT pre-check per row).
    New,
    /// ON CONFLICT DO NOTHING, after a plain INSERT met an existing id (progress rows
    /// deleted by hand, say): the write still lands, once.
    SkipExisting,
}

/// The INSERT of accepted events that skips ids already stored.
const INSERT_EVENTS_SKIP_EXISTING: &str = "\
    INSERT INTO events (event_id, event_type, schema_version, source, occurred_at, payload, payload_hash, topic, \"partition\", \"offset\", kafka_timestamp, lateness_ms, late, headers, correlation_id, normalized) \
    SELECT event_id, event_type, schema_version, source, occurred_at, payload::jsonb, payload_hash, topic, \"partition\", \"offset\", kafka_timestamp, lateness_ms, late, headers::jsonb, correlation_id, normalized::jsonb \
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::int[], $10::bigint[], $11::timestamptz[], $12::bigint[], $13::boolean[], $14::text[], $15::text[], $16::text[]) \
        AS t(event_id, event_type, schema_version, source, occurred_at, payload, payload_hash, topic, \"partition\", \"offset\", kafka_timestamp, lateness_ms, late, headers, correlation_id, normalized) \
    ON CONFLICT (event_id) DO NOTHING";

#[derive(Insertable)]
#[diesel(table_name = dead_letters)]
pub(super) struct NewDeadLetter<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    record_key: Option<&'a [u8]>,
    record_value: Option<&'a [u8]>,
    headers: serde_json::Value,
    error_class: &'a str,
    error_message: StorableText<'a>,
    event_type: Option<StorableText<'a>>,
    schema_version: Option<i32>,
}

impl<'a> From<&'a DeadLetter> for NewDeadLetter<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        let r = &d.record;
        NewDeadLetter {
            topic: &r.coords.topic,
            partition: r.coords.partition,
            offset: r.coords.offset,
            record_key: r.key.as_deref(),
            record_value: r.value.as_deref(),
            headers: crate::stages::headers::headers_json(&r.headers),
            error_class: d.class.as_str(),
            error_message: StorableText::reason(&d.reason),
            event_type: d.event_type.as_deref().map(StorableText::new),
            schema_version: d.schema_version,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = conflicts)]
pub(super) struct NewConflict<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    event_id: Uuid,
    payload: serde_json::Value,
    payload_hash: &'a str,
    first_topic: &'a str,
    first_partition: i32,
    first_offset: i64,
}

impl<'a> From<&'a Conflict> for NewConflict<'a> {
    fn from(c: &'a Conflict) -> Self {
        NewConflict {
            topic: &c.event.coords.topic,
            partition: c.event.coords.partition,
            offset: c.event.coords.offset,
            event_id: c.event.event_id,
            payload: serde_json::from_str(&c.event.payload).unwrap_or_default(),
            payload_hash: &c.event.payload_hash,
            first_topic: &c.first_seen.topic,
            first_partition: c.first_seen.partition,
            first_offset: c.first_seen.offset,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = entity_tombstones)]
pub(super) struct NewEntityTombstone<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    pub(super) entity_key: StorableText<'a>,
    deleted_at: DateTime<Utc>,
    pub(super) entity: Option<&'a str>,
}

impl<'a> From<&'a EntityDeletion> for NewEntityTombstone<'a> {
    fn from(d: &'a EntityDeletion) -> Self {
        NewEntityTombstone {
            topic: &d.coords.topic,
            partition: d.coords.partition,
            offset: d.coords.offset,
            entity_key: StorableText::bounded(&d.key, crate::storable::MAX_KEY_BYTES),
            deleted_at: DateTime::from_timestamp_millis(d.deleted_at_ms).unwrap_or_default(),
            entity: d.entity.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::stages::headers::headers_json;

    #[test]
    fn header_text_never_carries_a_nul_into_jsonb() {
        let headers =
            vec![("trace\0id".to_string(), Some(b"a\0b\xff".to_vec())), ("x".into(), None)];
        let json = headers_json(&headers).to_string();
        assert!(!json.replace("\\\\", "").contains("\\u0000"), "{json}");
        assert_eq!(headers_json(&headers)[0]["value"], "a\\u0000b\u{FFFD}");
    }
}
