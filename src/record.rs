//! The data that flows between the actors: raw records, checked events, dead letters,
//! and the batches that carry them. Batches cover a contiguous run of one partition's
//! offsets, `[first_offset, next_offset)`, so progress arithmetic stays simple.

use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// Where a record sits in Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Coords {
    /// Topic name (shared, records of a batch all carry the same one).
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
}

/// One record exactly as it was read from Kafka.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    /// Its coordinates.
    pub coords: Coords,
    /// Message key, if any.
    pub key: Option<Vec<u8>>,
    /// Message value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Message headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Broker or producer timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// An event that passed its contract.
#[derive(Debug, Clone)]
pub struct Event {
    /// The producer's id for this business event; the dedup key.
    pub event_id: Uuid,
    /// E.g. `account_created`.
    pub event_type: String,
    /// Contract version the payload was checked against.
    pub schema_version: i32,
    /// The producing system.
    pub source: String,
    /// The event's own time, in UTC.
    pub occurred_at: DateTime<Utc>,
    /// The payload object as compact JSON text: far smaller in memory than a parsed
    /// tree, and what both sinks write anyway.
    pub payload: String,
    /// Hex SHA-256 of the canonical envelope: equal hashes mean the same event.
    pub payload_hash: String,
    /// Where it was read.
    pub coords: Coords,
    /// Kafka timestamp, for end-to-end latency.
    pub kafka_timestamp_ms: Option<i64>,
    /// When eventline read it from Kafka, milliseconds since the epoch (the lake's
    /// `read_at`; Postgres's `received_at` is when the row was written).
    pub received_at_ms: i64,
    /// Arrival (Kafka timestamp, else receive time) minus its own time.
    pub lateness_ms: i64,
    /// Later than `pipeline.late_after_s`.
    pub late: bool,
    /// The envelope's `is_valid` (absent: true). `false` makes this record an
    /// invalidation of the event stored under the same `event_id`.
    pub is_valid: bool,
    /// The record's Kafka headers as kept (by the validator): a JSON
    /// array, `None` without headers. Not part of `payload_hash`.
    pub headers: Option<String>,
    /// The value of `headers.correlation_header`.
    pub correlation_id: Option<String>,
    /// The payload after its event type's transforms, as compact JSON text; `None` when
    /// no transform applies (the payload is then the normalised form too).
    pub normalized: Option<String>,
    /// The key of the entity it folds into, when its contract declares one (`x-entity`).
    pub entity_key: Option<String>,
}

impl Event {
    /// The payload's fields as stored in typed columns and state: the normalised payload
    /// when transforms made one, else the payload itself.
    pub fn fields(&self) -> &str {
        self.normalized.as_deref().unwrap_or(&self.payload)
    }
}

/// A record that takes back an event: an invalidation (`is_valid: false`) or a
/// deletion (a tombstone keyed by the `event_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// The event it takes back.
    pub event_id: Uuid,
    /// Where the retracting record was read.
    pub coords: Coords,
    /// Its Kafka timestamp.
    pub kafka_timestamp_ms: Option<i64>,
    /// When eventline read it, milliseconds since the epoch.
    pub received_at_ms: i64,
    /// The event type, when the record carries one (invalidations do, tombstones not).
    pub event_type: Option<String>,
    /// Where the event was first seen, when the dedup decision knew it: the Postgres
    /// writer waits for that partition's write in flight before applying this.
    pub target: Option<Coords>,
    /// The entity key of the event, when the record carries it (invalidations do).
    pub entity_key: Option<String>,
}

/// A tombstone keyed by an entity key (not an event id): the entity's events up to
/// `deleted_at_ms` stop counting in its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityDeletion {
    /// The entity key (the record's key).
    pub key: String,
    /// Where the tombstone was read.
    pub coords: Coords,
    /// Its Kafka timestamp, else when eventline read it (ms since the epoch), at most
    /// when eventline read it.
    pub deleted_at_ms: i64,
    /// The entity it deletes, when its header `eventline.entity` names one; `None`:
    /// every entity whose state has the key.
    pub entity: Option<String>,
}

impl Retraction {
    /// The invalidation an `is_valid: false` event stands for.
    pub fn invalidating(event: &Event, target: Option<Coords>) -> Retraction {
        Retraction {
            event_id: event.event_id,
            coords: event.coords.clone(),
            kafka_timestamp_ms: event.kafka_timestamp_ms,
            received_at_ms: event.received_at_ms,
            event_type: Some(event.event_type.clone()),
            target,
            entity_key: event.entity_key.clone(),
        }
    }
}

/// Why a record was rejected; each class has its own stable name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The value is null (a tombstone).
    Tombstone,
    /// The value is larger than `pipeline.max_record_bytes`.
    Oversized,
    /// The value is not valid UTF-8.
    NotUtf8,
    /// The value is nested deeper than `pipeline.max_json_depth`.
    TooDeep,
    /// The value is not JSON.
    NotJson,
    /// The envelope is missing a field or a field breaks its rule.
    BadEnvelope,
    /// No contract exists for this `event_type`.
    UnknownEventType,
    /// The `event_type` exists but not in this `schema_version`.
    UnknownSchemaVersion,
    /// The payload breaks its contract.
    ContractViolation,
    /// A string holds text no sink can store: a NUL character (U+0000), which
    /// PostgreSQL's `text` and `jsonb` reject.
    UnstorableText,
    /// Checking the record made the validator panic: the record is set aside so the
    /// partition goes on (a bug to report, with the record kept in the DLQ).
    CheckerPanicked,
    /// The event passed its contract but a sink refused it for good (a constraint a
    /// database administrator added, say): dead-lettered alone, the rest of its batch
    /// stored, and kept out of both sinks.
    SinkRejected,
    /// The event passed its contract but one of its transforms failed on it (a value
    /// not in a strict map, a field a template needs): the rule is named.
    TransformFailed,
}

impl ErrorClass {
    /// Every class, in declaration order.
    pub const ALL: [ErrorClass; 13] = [
        ErrorClass::Tombstone,
        ErrorClass::Oversized,
        ErrorClass::NotUtf8,
        ErrorClass::TooDeep,
        ErrorClass::NotJson,
        ErrorClass::BadEnvelope,
        ErrorClass::UnknownEventType,
        ErrorClass::UnknownSchemaVersion,
        ErrorClass::ContractViolation,
        ErrorClass::UnstorableText,
        ErrorClass::CheckerPanicked,
        ErrorClass::SinkRejected,
        ErrorClass::TransformFailed,
    ];

    /// The stable name used in the DLQ headers, the table and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Tombstone => "tombstone",
            ErrorClass::Oversized => "oversized",
            ErrorClass::NotUtf8 => "not_utf8",
            ErrorClass::TooDeep => "too_deep",
            ErrorClass::NotJson => "not_json",
            ErrorClass::BadEnvelope => "bad_envelope",
            ErrorClass::UnknownEventType => "unknown_event_type",
            ErrorClass::UnknownSchemaVersion => "unknown_schema_version",
            ErrorClass::ContractViolation => "contract_violation",
            ErrorClass::UnstorableText => "unstorable_text",
            ErrorClass::CheckerPanicked => "checker_panicked",
            ErrorClass::SinkRejected => "sink_rejected",
            ErrorClass::TransformFailed => "transform_failed",
        }
    }
}

/// A rejected record with everything needed to inspect or replay it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The record, bytes untouched.
    pub record: SourceRecord,
    /// The class of the failure.
    pub class: ErrorClass,
    /// Which field, which rule.
    pub reason: String,
    /// The event type, when the envelope got that far.
    pub event_type: Option<String>,
    /// The contract version, when known.
    pub schema_version: Option<i32>,
}

impl DeadLetter {
    /// An accepted event a sink refused for good. The original bytes are not kept past
    /// the validator, so the value is the event as eventline read it: its envelope with
    /// the payload, as JSON (sending it again re-drives it).
    pub fn sink_rejected(event: &Event, reason: String) -> DeadLetter {
        let payload: serde_json::Value =
            serde_json::from_str(&event.payload).unwrap_or(serde_json::Value::Null);
        let envelope = serde_json::json!({
            "event_id": event.event_id,
            "event_type": event.event_type,
            "schema_version": event.schema_version,
            "source": event.source,
            "occurred_at": event.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            "payload": payload,
        });
        DeadLetter {
            record: SourceRecord {
                coords: event.coords.clone(),
                key: None,
                value: Some(envelope.to_string().into_bytes()),
                headers: Vec::new(),
                timestamp_ms: event.kafka_timestamp_ms,
            },
            class: ErrorClass::SinkRejected,
            reason,
            event_type: Some(event.event_type.clone()),
            schema_version: Some(event.schema_version),
        }
    }
}

/// A same-`event_id`-different-content record, kept for inspection.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// The event as read at these coordinates.
    pub event: Event,
    /// Where the first version of this `event_id` was seen.
    pub first_seen: Coords,
}

/// A contiguous run of one partition's offsets, `[first_offset, next_offset)`, with the
/// records read in it. Offsets in the run with no record are ones Kafka never delivers
/// to a consumer: transaction markers (commit and abort control records) and the
/// records of aborted transactions. They count as consumed, with no outcome.
#[derive(Debug, Clone)]
pub struct SourceBatch {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Records in offset order.
    pub records: Vec<SourceRecord>,
    /// The first offset covered (at most the first record's).
    pub first_offset: i64,
    /// One past the last offset covered (at least one past the last record's).
    pub next_offset: i64,
}

impl SourceBatch {
    /// A batch covering exactly its records.
    pub fn new(topic: Arc<str>, partition: i32, records: Vec<SourceRecord>) -> Self {
        let first_offset = records.first().map(|r| r.coords.offset).unwrap_or(0);
        let next_offset = records.last().map(|r| r.coords.offset + 1).unwrap_or(0);
        SourceBatch { topic, partition, records, first_offset, next_offset }
    }

    /// A batch covering `[first, next)`, which holds its records and the offsets around
    /// them that Kafka never delivers.
    pub fn covering(
        topic: Arc<str>,
        partition: i32,
        first: i64,
        records: Vec<SourceRecord>,
        next: i64,
    ) -> Self {
        let mut batch = SourceBatch::new(topic, partition, records);
        if batch.records.is_empty() {
            (batch.first_offset, batch.next_offset) = (first, next);
        } else {
            batch.first_offset = batch.first_offset.min(first);
            batch.next_offset = batch.next_offset.max(next);
        }
        batch
    }
}

/// A checked record: an event to deduplicate, a deletion, or a dead letter.
#[derive(Debug, Clone)]
pub enum Checked {
    /// Passed its contract (an invalidation too: `is_valid` false).
    Valid(Event),
    /// A tombstone keyed by an `event_id`: delete that event.
    Delete(Retraction),
    /// A tombstone keyed by an entity key: remove that entity's state.
    DeleteEntity(EntityDeletion),
    /// Rejected.
    Dead(DeadLetter),
}

/// The validator's output for one source batch.
#[derive(Debug)]
pub struct CheckedBatch {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// First offset covered.
    pub first_offset: i64,
    /// One past the last offset covered.
    pub next_offset: i64,
    /// Outcome of each record, in offset order.
    pub items: Vec<Checked>,
}

/// The final outcome of every record of a batch, as both sinks receive it.
#[derive(Debug, Default)]
pub struct DecidedBatch {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// First offset covered.
    pub first_offset: i64,
    /// One past the last offset covered.
    pub next_offset: i64,
    /// New events to store (or re-store after a crash: same coordinates).
    pub accepted: Vec<Event>,
    /// Rejected records.
    pub dead: Vec<DeadLetter>,
    /// Same `event_id`, same content, seen before elsewhere: coordinates of each.
    pub duplicates: Vec<Coords>,
    /// Same `event_id`, different content.
    pub conflicts: Vec<Conflict>,
    /// `is_valid: false` records that invalidate an event (outcome `invalidated`).
    pub invalidations: Vec<Retraction>,
    /// Tombstones that delete an event (outcome `deleted`).
    pub deletions: Vec<Retraction>,
    /// Copies of a deleted event, never stored again (outcome `deleted`).
    pub deleted_copies: Vec<Coords>,
    /// Tombstones keyed by an entity key (outcome `deleted`).
    pub entity_deletions: Vec<EntityDeletion>,
}

impl DecidedBatch {
    /// Roughly the memory this batch holds, for bounding what a sink may retain. The
    /// variable-length parts dominate; fixed parts are counted by their struct size.
    pub fn approx_bytes(&self) -> usize {
        let event = |e: &Event| {
            std::mem::size_of::<Event>()
                + e.event_type.len()
                + e.source.len()
                + e.payload.len()
                + e.payload_hash.len()
                + e.headers.as_ref().map_or(0, String::len)
                + e.correlation_id.as_ref().map_or(0, String::len)
        };
        let record = |r: &SourceRecord| {
            std::mem::size_of::<SourceRecord>()
                + r.key.as_ref().map_or(0, Vec::len)
                + r.value.as_ref().map_or(0, Vec::len)
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                    .sum::<usize>()
        };
        std::mem::size_of::<Self>()
            + self.accepted.iter().map(event).sum::<usize>()
            + self
                .conflicts
                .iter()
                .map(|c| event(&c.event) + std::mem::size_of::<Coords>())
                .sum::<usize>()
            + self
                .dead
                .iter()
                .map(|d| std::mem::size_of::<DeadLetter>() + record(&d.record) + d.reason.len())
                .sum::<usize>()
            + (self.duplicates.len() + self.deleted_copies.len()) * std::mem::size_of::<Coords>()
            + (self.invalidations.len() + self.deletions.len()) * std::mem::size_of::<Retraction>()
    }

    /// Records covered by this batch (equals the sum of outcomes).
    pub fn len(&self) -> usize {
        self.accepted.len()
            + self.dead.len()
            + self.duplicates.len()
            + self.conflicts.len()
            + self.invalidations.len()
            + self.deletions.len()
            + self.deleted_copies.len()
            + self.entity_deletions.len()
    }

    /// The offsets of each outcome's records, by the outcome's stable name (P1:
    /// together they are every record of the batch).
    pub fn outcome_offsets(&self) -> [(&'static str, Vec<i64>); 6] {
        let offsets = |it: &mut dyn Iterator<Item = i64>| it.collect::<Vec<_>>();
        [
            ("accepted", offsets(&mut self.accepted.iter().map(|e| e.coords.offset))),
            ("duplicate", offsets(&mut self.duplicates.iter().map(|c| c.offset))),
            ("conflict", offsets(&mut self.conflicts.iter().map(|c| c.event.coords.offset))),
            ("invalidated", offsets(&mut self.invalidations.iter().map(|r| r.coords.offset))),
            (
                "deleted",
                offsets(
                    &mut self
                        .deletions
                        .iter()
                        .map(|r| r.coords.offset)
                        .chain(self.deleted_copies.iter().map(|c| c.offset))
                        .chain(self.entity_deletions.iter().map(|d| d.coords.offset)),
                ),
            ),
            ("dead_letter", offsets(&mut self.dead.iter().map(|d| d.record.coords.offset))),
        ]
    }
    /// True when the batch covers no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Shared, read-only: both sinks get the same decided batch.
pub type SharedBatch = Arc<DecidedBatch>;

/// Which sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkId {
    /// The Postgres writer.
    Postgres,
    /// The Parquet lake writer.
    Lake,
}

impl SinkId {
    /// Stable name: the `sink_progress.sink` value and the supervision actor name.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkId::Postgres => "postgres",
            SinkId::Lake => "lake",
        }
    }
    /// The writer's actor name in the supervision log.
    pub fn actor_name(self) -> &'static str {
        match self {
            SinkId::Postgres => "postgres_writer",
            SinkId::Lake => "parquet_writer",
        }
    }
}

/// Test fixtures the unit tests of several modules share.
#[cfg(test)]
impl Event {
    /// A valid `account_created` event from `crm` at `coords` with `payload`, stamped
    /// 2025-11-22T08:26:40Z, nothing optional set.
    pub(crate) fn fixture(coords: Coords, payload: &str) -> Event {
        Event {
            event_id: Uuid::new_v4(),
            event_type: "account_created".into(),
            schema_version: 1,
            source: "crm".into(),
            occurred_at: DateTime::from_timestamp(1_763_800_000, 0).expect("a valid time"),
            payload: payload.into(),
            payload_hash: "h".repeat(64),
            coords,
            kafka_timestamp_ms: None,
            received_at_ms: 0,
            lateness_ms: 0,
            late: false,
            is_valid: true,
            headers: None,
            correlation_id: None,
            normalized: None,
            entity_key: None,
        }
    }
}

#[cfg(test)]
mod approx_bytes_tests {
    use super::*;

    fn event(payload_len: usize) -> Event {
        let at = Coords { topic: Arc::from("t"), partition: 0, offset: 0 };
        Event::fixture(at, &"x".repeat(payload_len))
    }

    #[test]
    fn approx_bytes_counts_what_the_batch_holds() {
        let small = DecidedBatch { accepted: vec![event(10); 100], ..DecidedBatch::default() };
        let large = DecidedBatch { accepted: vec![event(1000); 100], ..DecidedBatch::default() };
        assert!(small.approx_bytes() >= 100 * (10 + 64 + std::mem::size_of::<Event>()));
        assert_eq!(large.approx_bytes() - small.approx_bytes(), 100 * 990);
    }
}
