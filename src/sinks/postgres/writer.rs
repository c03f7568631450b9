//! The Postgres sink: one transaction per batch stores the accepted events, the dead
//! letters, the conflicts and the outcome counts, and moves `sink_progress` by
//! compare-and-set. Zero rows moved means another process owns the partition now
//! (or moved it first): the transaction rolls back and the writer re-reads progress.
//!
//! A write Postgres refuses because of a record (a constraint violation) is stored
//! again batch by batch, each split in halves until the refused record is alone: that
//! record becomes a dead letter of class `sink_rejected`, the rest is stored, and the
//! refusal is remembered in `processed_events` so a replay decides the same way.

use crate::db::prepared::prepared;
use crate::db::schema::{conflicts, dead_letters, entity_tombstones, events};
use crate::db::{self, PgPool};
use crate::offsets::progress::write_start;
use crate::projections::refresh::Projections;
use crate::record::SinkId;
use crate::record::{
    Conflict, Coords, DeadLetter, EntityDeletion, ErrorClass, Event, SharedBatch, SourceRecord,
};
use crate::sinks::verdicts::PostgresVerdicts;
use crate::sinks::worker::{Fencing, SinkError, SinkWriter, WriteReport};
use crate::storable::StorableText;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use uuid::Uuid;

/// Rows per INSERT statement (dead letters, conflicts): 12 columns x 4,000 rows stays
/// under Postgres's 65,535 bind parameters.
const ROWS_PER_STATEMENT: usize = 4_000;

/// Stores decided batches in Postgres.
pub struct PostgresWriter {
    pool: PgPool,
    /// Kept between writes: a pool checkout costs a validation round trip, which at
    /// moderate rates (small groups) was a large share of each write. After any error
    /// it is dropped (the supervisor builds a fresh writer), so a broken connection is
    /// never reused.
    conn: Option<db::PgConn>,
    progress: HashMap<(Arc<str>, i32), Option<i64>>,
    /// Where the lake learns what this writer stored and refused.
    verdicts: Arc<PostgresVerdicts>,
    /// Test staging: a wait inside each transaction (`faults.postgres_pause_in_transaction_ms`).
    pause_in_transaction: Option<std::time::Duration>,
    /// The current-state tables kept in the same transaction as the events.
    projections: Arc<Projections>,
}

#[derive(Debug)]
enum TxError {
    Db(diesel::result::Error),
    /// These partitions' progress had moved under another writer.
    Fenced(Vec<i32>),
}

/// The part `[from, to)` of a batch that one transaction stores.
#[derive(Clone, Copy)]
struct Slice<'a> {
    batch: &'a SharedBatch,
    from: i64,
    to: i64,
}

impl Slice<'_> {
    fn holds(&self, offset: i64) -> bool {
        offset >= self.from && offset < self.to
    }
}

/// A record Postgres refused, whatever row it put there (an accepted event, a dead
/// letter, a conflict, a retraction, a tombstone): stored as a dead letter instead, so
/// that its offset still gets an outcome and the partition moves on.
struct Refusal<'a> {
    coords: Coords,
    /// The accepted event it was, marked refused where the dedup decision reads.
    event: Option<&'a Event>,
    dead: DeadLetter,
}

/// Whether an error may be a record's fault, so that the write is split at once to
/// find it. diesel does not expose Postgres's SQLSTATE beyond a few kinds, so the
/// split itself is the proof: a record is blamed only when the write fails with it
/// and passes without it. A lost connection, a serialization failure or a read-only
/// server is never a record's fault, and a split that blames no record fails as
/// transient.
fn may_be_a_refusal(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match e {
        Error::DatabaseError(
            Kind::ClosedConnection | Kind::SerializationFailure | Kind::ReadOnlyTransaction,
            _,
        ) => false,
        Error::DatabaseError(..) | Error::SerializationError(_) => true,
        _ => false,
    }
}

/// The offsets of a slice that put a row into Postgres, in order: the candidates a
/// refused write is split by.
fn row_offsets(slice: &Slice) -> Vec<i64> {
    let b = slice.batch;
    let mut offsets: Vec<i64> = b
        .accepted
        .iter()
        .map(|e| e.coords.offset)
        .chain(b.dead.iter().map(|d| d.record.coords.offset))
        .chain(b.conflicts.iter().map(|c| c.event.coords.offset))
        .chain(b.invalidations.iter().chain(&b.deletions).map(|r| r.coords.offset))
        .chain(b.entity_deletions.iter().map(|d| d.coords.offset))
        .filter(|o| slice.holds(*o))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// The dead letter that replaces whatever the record at `offset` stored, refused by
/// Postgres with `error`. `bare`: the first replacement was refused too, so only the
/// coordinates, the class and a reason are kept (no bytes, no headers).
fn refusal_at<'a>(slice: &Slice<'a>, offset: i64, error: &str, bare: bool) -> Refusal<'a> {
    let b = slice.batch;
    let coords = Coords { topic: b.topic.clone(), partition: b.partition, offset };
    let event = b.accepted.iter().find(|e| e.coords.offset == offset);
    let conflict = b.conflicts.iter().find(|c| c.event.coords.offset == offset);
    let dead = b.dead.iter().find(|d| d.record.coords.offset == offset);
    let reason = format!("Postgres refused it: {error}");
    let stripped = |class, reason: String, event_type, schema_version| DeadLetter {
        record: SourceRecord {
            coords: coords.clone(),
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        },
        class,
        reason,
        event_type,
        schema_version,
    };
    let letter = match (event.or(conflict.map(|c| &c.event)), dead) {
        // Nothing of the record but where it was: what Postgres refused may be any of
        // its parts, even its class or its reason.
        _ if bare => stripped(
            ErrorClass::SinkRejected,
            format!("{reason} (stored without anything of the record: Postgres refused its dead letter too)"),
            None,
            None,
        ),
        (Some(e), _) => DeadLetter::sink_rejected(e, reason),
        (None, Some(d)) => stripped(
            d.class,
            format!("{} (stored without its key, value and headers, which {reason})", d.reason),
            d.event_type.clone(),
            d.schema_version,
        ),
        (None, None) => stripped(ErrorClass::SinkRejected, reason, None, None),
    };
    Refusal { coords, event, dead: letter }
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        TxError::Db(e)
    }
}

/// Accepted events as one array per column, for the fallback write: one
/// INSERT ... SELECT FROM unnest(...) ... ON CONFLICT DO NOTHING stores any number of
/// rows in one round trip, with no bind-parameter limit.
#[derive(Default)]
struct EventColumns<'a> {
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
    fn push(&mut self, e: &'a Event) {
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

    fn insert_skipping_existing(&self, conn: &mut PgConnection) -> QueryResult<usize> {
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
struct JsonText<'a>(&'a str);

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
struct EventRow<'a> {
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
enum InsertMode {
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
struct NewDeadLetter<'a> {
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
struct NewConflict<'a> {
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

impl PostgresWriter {
    /// A writer over `pool`; it connects on first use. What it stores and refuses goes
    /// to `verdicts`, which the lake follows.
    pub fn new(pool: PgPool, verdicts: Arc<PostgresVerdicts>) -> Self {
        PostgresWriter {
            pool,
            conn: None,
            progress: HashMap::new(),
            verdicts,
            pause_in_transaction: None,
            projections: Arc::default(),
        }
    }

    /// Keeps these current-state tables with the events.
    pub fn with_projections(mut self, projections: Arc<Projections>) -> Self {
        self.projections = projections;
        self
    }

    /// Waits `pause` inside every transaction (fault injection for tests).
    pub fn with_pause_in_transaction(mut self, pause: std::time::Duration) -> Self {
        self.pause_in_transaction = (!pause.is_zero()).then_some(pause);
        self
    }

    /// A partition's durable progress: as this writer last left it, or read.
    fn progress_of(
        &mut self,
        conn: &mut PgConnection,
        key: &(Arc<str>, i32),
    ) -> Result<Option<i64>, SinkError> {
        if let Some(p) = self.progress.get(key) {
            return Ok(*p);
        }
        let read =
            db::read_progress(conn, SinkId::Postgres.as_str(), &key.0, key.1).map_err(retryable)?;
        self.progress.insert(key.clone(), read);
        Ok(read)
    }

    /// What each batch still needs stored, against the durable progress.
    fn plan<'a>(
        &mut self,
        conn: &mut PgConnection,
        batches: &'a [SharedBatch],
    ) -> Result<(Plan, Vec<Slice<'a>>), SinkError> {
        let mut plan: Plan = BTreeMap::new();
        let mut slices = Vec::new();
        for batch in batches {
            let key = (batch.topic.clone(), batch.partition);
            if !plan.contains_key(&key) {
                let expected = self.progress_of(conn, &key)?;
                plan.insert(key.clone(), (expected, expected));
            }
            let entry = plan.get_mut(&key).expect("inserted above");
            let span = (batch.first_offset, batch.next_offset);
            let at = (&*batch.topic, batch.partition);
            let Some(from) = write_start("Postgres", at, entry.1, span) else { continue };
            slices.push(Slice { batch, from, to: batch.next_offset });
            entry.1 = Some(batch.next_offset);
        }
        Ok((plan, slices))
    }

    /// A stored plan becomes this writer's progress and the report's.
    fn settle(&mut self, plan: Plan, report: &mut WriteReport) {
        for ((topic, partition), (_, now)) in plan {
            self.progress.insert((topic, partition), now);
            if let Some(now) = now {
                report.progress.push((partition, now));
            }
        }
    }

    /// Every batch in one transaction; when Postgres refuses it because of a record,
    /// batch by batch, splitting until the record is found.
    fn write_all(
        &mut self,
        conn: &mut PgConnection,
        batches: &[SharedBatch],
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        // Twice at most: a fenced attempt re-reads the progress another writer left.
        for _ in 0..2 {
            let (plan, slices) = self.plan(conn, batches)?;
            match self.store_either(conn, &slices, &plan, &[]) {
                Ok(()) => {
                    self.settle(plan, report);
                    return Ok(());
                }
                Err(TxError::Fenced(partitions)) => {
                    log::warn!("Postgres writer fenced on partitions {partitions:?}: their progress moved under another writer; re-reading");
                    for key in plan.keys() {
                        self.progress.remove(key);
                    }
                    report.fenced.extend(partitions.into_iter().map(|partition| Fencing {
                        partition,
                        reason: "sink_progress moved under another writer".into(),
                    }));
                }
                Err(TxError::Db(e)) if may_be_a_refusal(&e) => {
                    log::warn!("Postgres refused a write ({e}); storing batch by batch to find the record(s) to blame");
                    return self.isolate(conn, batches, report);
                }
                Err(TxError::Db(e)) => return Err(retryable(e)),
            }
        }
        Err(SinkError::Retryable(
            "fenced twice: another writer keeps moving these partitions".into(),
        ))
    }

    /// Stores the batches one by one, each split until a refused record is alone.
    fn isolate(
        &mut self,
        conn: &mut PgConnection,
        batches: &[SharedBatch],
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        for batch in batches {
            let key = (batch.topic.clone(), batch.partition);
            let expected = self.progress_of(conn, &key)?;
            let span = (batch.first_offset, batch.next_offset);
            let at = (&*batch.topic, batch.partition);
            match write_start("Postgres", at, expected, span) {
                Some(from) => {
                    let slice = Slice { batch, from, to: batch.next_offset };
                    self.store_range(conn, slice, report)?;
                }
                None => report.progress.extend(expected.map(|p| (batch.partition, p))),
            }
        }
        Ok(())
    }

    /// Stores one slice in its own transaction. Refused because of a record: split it
    /// in halves by the offsets that hold rows; a refused slice with one such offset is
    /// stored with that record as a dead letter instead ([`refusal_at`]), and if that is
    /// refused too, as a bare one (coordinates, class and reason).
    fn store_range(
        &mut self,
        conn: &mut PgConnection,
        slice: Slice,
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        let key = (slice.batch.topic.clone(), slice.batch.partition);
        let expected = self.progress.get(&key).copied().flatten();
        let plan: Plan = BTreeMap::from([(key, (expected, Some(slice.to)))]);
        let fenced = || SinkError::Retryable("fenced while isolating a refused record".into());
        let error = match self.store_either(conn, &[slice], &plan, &[]) {
            Ok(()) => {
                self.settle(plan, report);
                return Ok(());
            }
            Err(TxError::Db(e)) if may_be_a_refusal(&e) => e,
            Err(TxError::Db(e)) => return Err(retryable(e)),
            Err(TxError::Fenced(_)) => return Err(fenced()),
        };
        match row_offsets(&slice).as_slice() {
            // No record's row to blame: the rows left are ours (progress, counts).
            [] => Err(retryable(error)),
            [offset] => {
                let mut last = error.to_string();
                for bare in [false, true] {
                    let refusal = refusal_at(&slice, *offset, &last, bare);
                    match self.store_either(conn, &[slice], &plan, std::slice::from_ref(&refusal)) {
                        Ok(()) => {
                            let c = &refusal.coords;
                            log::warn!(
                                "Postgres refused {}/{}@{}: dead-lettered as {}: {error}",
                                c.topic,
                                c.partition,
                                c.offset,
                                refusal.dead.class.as_str()
                            );
                            report.rejected.push(refusal.dead);
                            self.settle(plan, report);
                            return Ok(());
                        }
                        Err(TxError::Db(e)) if may_be_a_refusal(&e) => last = e.to_string(),
                        Err(TxError::Db(e)) => return Err(retryable(e)),
                        Err(TxError::Fenced(_)) => return Err(fenced()),
                    }
                }
                // Refused even without the record's own bytes: not this record's fault.
                Err(retryable(last))
            }
            many => {
                let middle = many[many.len() / 2];
                self.store_range(conn, Slice { to: middle, ..slice }, report)?;
                self.store_range(conn, Slice { from: middle, ..slice }, report)
            }
        }
    }

    /// [`Self::store`], falling back to skipping stored ids when some already were.
    fn store_either(
        &self,
        conn: &mut PgConnection,
        slices: &[Slice],
        plan: &Plan,
        refused: &[Refusal],
    ) -> Result<(), TxError> {
        if slices.is_empty() {
            return Ok(());
        }
        match self.store(conn, slices, plan, InsertMode::New, refused) {
            Err(TxError::Db(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            ))) => {
                log::warn!("Postgres writer: some accepted events were already in `events` ({}); storing the rest", info.message());
                self.store(conn, slices, plan, InsertMode::SkipExisting, refused)
            }
            other => other,
        }
    }

    /// One transaction for every slice: the rows, the outcome counts, and a
    /// compare-and-set of each partition's progress from `expected` to `next`. Refused
    /// events are stored as dead letters instead, and marked in `processed_events`.
    fn store(
        &self,
        conn: &mut PgConnection,
        slices: &[Slice],
        plan: &Plan,
        mode: InsertMode,
        refused: &[Refusal],
    ) -> Result<(), TxError> {
        // A refused record's own rows are left out: its dead letter stands in for them.
        let is_refused = |c: &Coords| refused.iter().any(|r| r.coords == *c);
        let keeps = |s: &Slice, c: &Coords| s.holds(c.offset) && !is_refused(c);
        conn.transaction(|c| {
            lock_partitions(c, plan, slices)?;
            let accepted = slices
                .iter()
                .flat_map(|s| s.batch.accepted.iter().filter(move |e| keeps(s, &e.coords)));
            // Every id this write stores or retracts: the bookkeeping statement applies
            // the invalidations and deletions recorded for them, whichever came first.
            let retractions = slices.iter().flat_map(|s| {
                s.batch
                    .invalidations
                    .iter()
                    .chain(&s.batch.deletions)
                    .filter(move |r| keeps(s, &r.coords))
            });
            let touched: Vec<Uuid> = accepted
                .clone()
                .map(|e| e.event_id)
                .chain(retractions.map(|r| r.event_id))
                .collect();
            match mode {
                InsertMode::New => {
                    let rows: Vec<EventRow> = accepted.map(EventRow::from).collect();
                    if !rows.is_empty() {
                        diesel::copy_from(events::table).from_insertable(rows).execute(c)?;
                    }
                }
                InsertMode::SkipExisting => {
                    let mut columns = EventColumns::default();
                    accepted.for_each(|e| columns.push(e));
                    if !columns.event_id.is_empty() {
                        columns.insert_skipping_existing(c)?;
                    }
                }
            }
            let dead: Vec<NewDeadLetter> = slices
                .iter()
                .flat_map(|s| s.batch.dead.iter().filter(move |d| keeps(s, &d.record.coords)))
                .chain(refused.iter().map(|r| &r.dead))
                .map(NewDeadLetter::from)
                .collect();
            for chunk in dead.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(dead_letters::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(c)?;
            }
            let conflicting: Vec<NewConflict> = slices
                .iter()
                .flat_map(|s| s.batch.conflicts.iter().filter(move |x| keeps(s, &x.event.coords)))
                .map(NewConflict::from)
                .collect();
            for chunk in conflicting.chunks(ROWS_PER_STATEMENT) {
                diesel::insert_into(conflicts::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(c)?;
            }
            if refused.iter().any(|r| r.event.is_some()) {
                mark_refused(c, refused)?;
            }
            if let Some(pause) = self.pause_in_transaction {
                std::thread::sleep(pause);
            }
            let mut counts: BTreeMap<(&str, i32, &str), i64> = BTreeMap::new();
            for s in slices {
                let b = s.batch;
                let at =
                    |offset: i64| Coords { topic: b.topic.clone(), partition: b.partition, offset };
                let refused_here = refused
                    .iter()
                    .filter(|r| r.coords.partition == b.partition && s.holds(r.coords.offset))
                    .count() as i64;
                for (outcome, offsets) in b.outcome_offsets() {
                    let mut k =
                        offsets.iter().filter(|o| s.holds(**o) && !is_refused(&at(**o))).count()
                            as i64;
                    if outcome == "dead_letter" {
                        k += refused_here;
                    }
                    if k > 0 {
                        *counts.entry((&b.topic, b.partition, outcome)).or_default() += k;
                    }
                }
            }
            let mut keys = self.projections.touched();
            if !self.projections.is_empty() {
                for s in slices {
                    let b = s.batch;
                    for e in b.accepted.iter().filter(|e| keeps(s, &e.coords)) {
                        self.projections.touch(&mut keys, &e.event_type, e.entity_key.as_deref());
                    }
                    for r in b.invalidations.iter().filter(|r| keeps(s, &r.coords)) {
                        let event_type = r.event_type.as_deref().unwrap_or_default();
                        self.projections.touch(&mut keys, event_type, r.entity_key.as_deref());
                    }
                }
                // Read before the bookkeeping statement deletes them.
                let deleted: Vec<Uuid> = slices
                    .iter()
                    .flat_map(|s| s.batch.deletions.iter().filter(move |r| keeps(s, &r.coords)))
                    .map(|r| r.event_id)
                    .collect();
                self.projections.touch_stored(c, &mut keys, &deleted)?;
                let tombstones: Vec<NewEntityTombstone> = slices
                    .iter()
                    .flat_map(|s| {
                        s.batch.entity_deletions.iter().filter(move |d| keeps(s, &d.coords))
                    })
                    .map(NewEntityTombstone::from)
                    .collect();
                for t in &tombstones {
                    self.projections.touch_entity(&mut keys, t.entity, t.entity_key.as_str());
                }
                for chunk in tombstones.chunks(ROWS_PER_STATEMENT) {
                    diesel::insert_into(entity_tombstones::table)
                        .values(chunk)
                        .on_conflict_do_nothing()
                        .execute(c)?;
                }
            }
            let mut bookkeeping = Bookkeeping { touched, ..Bookkeeping::default() };
            for ((topic, partition, outcome), n) in &counts {
                bookkeeping.count(topic, *partition, outcome, *n);
            }
            for ((topic, partition), (expected, next)) in plan {
                if let Some(next) = next.filter(|n| Some(*n) != *expected) {
                    bookkeeping.advance(topic, *partition, *expected, next);
                }
            }
            let fenced = bookkeeping.store(c)?;
            if !fenced.is_empty() {
                return Err(TxError::Fenced(fenced));
            }
            self.projections.refresh(c, &keys)?;
            Ok(())
        })
    }
}

/// A tombstone keyed by an entity key, as a row of `entity_tombstones`.
#[derive(Insertable)]
#[diesel(table_name = entity_tombstones)]
struct NewEntityTombstone<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    entity_key: StorableText<'a>,
    deleted_at: DateTime<Utc>,
    entity: Option<&'a str>,
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

/// Takes this transaction's partition locks, in one order for every writer so two
/// never wait on each other: exclusive on the partitions it writes, shared on those
/// where the events it retracts were first seen. A retraction decided after its event
/// was decided, but applied before that event's write committed, would miss the row;
/// the shared lock waits for that write, and a write that starts later finds the
/// retraction already recorded (the bookkeeping statement reads after the lock).
fn lock_partitions(conn: &mut PgConnection, plan: &Plan, slices: &[Slice]) -> QueryResult<()> {
    use diesel::sql_types::{Array, Bool, Integer, Text};
    let mut locks: BTreeMap<(&str, i32), bool> =
        plan.keys().map(|(topic, partition)| ((&**topic, *partition), true)).collect();
    for s in slices {
        let b = s.batch;
        let retractions = b.invalidations.iter().chain(&b.deletions);
        for r in retractions.filter(|r| s.holds(r.coords.offset)) {
            if let Some(t) = &r.target {
                locks.entry((&t.topic, t.partition)).or_insert(false);
            }
        }
    }
    let topics: Vec<&str> = locks.keys().map(|(t, _)| *t).collect();
    let partitions: Vec<i32> = locks.keys().map(|(_, p)| *p).collect();
    let exclusive: Vec<bool> = locks.values().copied().collect();
    prepared(LOCK_PARTITIONS)
        .bind::<Array<Text>, _>(&topics)
        .bind::<Array<Integer>, _>(&partitions)
        .bind::<Array<Bool>, _>(&exclusive)
        .execute(conn)
        .map(|_| ())
}

/// Transaction-scoped advisory locks keyed by (hash of the topic, partition), taken in
/// that key order.
const LOCK_PARTITIONS: &str = "\
    SELECT count(*) FROM ( \
        SELECT CASE WHEN l.exclusive THEN pg_advisory_xact_lock(hashtext(l.topic), l.\"partition\") \
                    ELSE pg_advisory_xact_lock_shared(hashtext(l.topic), l.\"partition\") END AS locked \
        FROM (SELECT topic, \"partition\", bool_or(exclusive) AS exclusive \
              FROM unnest($1::text[], $2::int[], $3::boolean[]) AS u(topic, \"partition\", exclusive) \
              GROUP BY 1, 2 ORDER BY hashtext(topic), \"partition\") AS l \
    ) AS x";

/// Remembers a refusal where the dedup decision reads, so that replaying the record
/// dead-letters it again rather than handing it to the lake as accepted.
fn mark_refused(conn: &mut PgConnection, refused: &[Refusal]) -> QueryResult<usize> {
    use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
    let events = refused.iter().filter_map(|r| r.event.map(|e| (e, &r.dead.reason)));
    let ids: Vec<Uuid> = events.clone().map(|(e, _)| e.event_id).collect();
    let reasons: Vec<StorableText> =
        events.map(|(_, reason)| StorableText::reason(reason)).collect();
    diesel::sql_query(
        "UPDATE processed_events p SET sink_rejected = t.reason \
         FROM unnest($1::uuid[], $2::text[]) AS t(event_id, reason) WHERE p.event_id = t.event_id",
    )
    .bind::<Array<SqlUuid>, _>(&ids)
    .bind::<Array<Text>, _>(&reasons)
    .execute(conn)
}

/// Outcome counts and progress moves of one transaction, stored by one statement
/// ([`BOOKKEEPING`]): at moderate rates a write holds a few small batches, and one round
/// trip per partition plus one for the counts was a large share of it.
#[derive(Default)]
struct Bookkeeping<'a> {
    count_topic: Vec<&'a str>,
    count_partition: Vec<i32>,
    count_outcome: Vec<&'a str>,
    count_n: Vec<i64>,
    move_topic: Vec<&'a str>,
    move_partition: Vec<i32>,
    move_expected: Vec<i64>,
    move_next: Vec<i64>,
    start_topic: Vec<&'a str>,
    start_partition: Vec<i32>,
    start_next: Vec<i64>,
    /// Ids stored or retracted by this transaction.
    touched: Vec<Uuid>,
}

/// Adds the outcome counts, moves progress by compare-and-set (from the expected offset,
/// or from no row at all), applies the invalidations and deletions recorded for the ids
/// this transaction touched, and returns the partitions that moved. Those ids are joined
/// with `retracted_events`, which holds only retracted ids: cheap whatever the planner
/// knows, where `= ANY(ids)` over `processed_events` cost ~30 ms of planning per write.
const BOOKKEEPING: &str = "\
    WITH retracted AS MATERIALIZED ( \
        SELECT p.event_id, p.invalidated_topic, p.invalidated_partition, p.invalidated_offset, \
               p.invalidated_at, p.deleted_topic IS NOT NULL AS deleted \
        FROM retracted_events r \
        JOIN unnest($13::uuid[]) AS t(event_id) ON t.event_id = r.event_id \
        JOIN processed_events p ON p.event_id = r.event_id \
    ), invalidated AS ( \
        UPDATE events e SET is_valid = false, invalidated_at = x.invalidated_at, \
            invalidated_topic = x.invalidated_topic, invalidated_partition = x.invalidated_partition, \
            invalidated_offset = x.invalidated_offset \
        FROM retracted x \
        WHERE e.event_id = x.event_id AND NOT x.deleted AND x.invalidated_topic IS NOT NULL AND e.is_valid \
    ), removed AS ( \
        DELETE FROM events e USING retracted x WHERE e.event_id = x.event_id AND x.deleted \
    ), removed_versions AS ( \
        DELETE FROM conflicts c USING retracted x WHERE c.event_id = x.event_id AND x.deleted \
    ), counted AS ( \
        INSERT INTO outcome_counts (topic, \"partition\", outcome, count) \
        SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::bigint[]) \
        ON CONFLICT (topic, \"partition\", outcome) DO UPDATE SET count = outcome_counts.count + excluded.count \
    ), moved AS ( \
        UPDATE sink_progress p SET next_offset = m.next, updated_at = now() \
        FROM unnest($5::text[], $6::int[], $7::bigint[], $8::bigint[]) AS m(topic, \"partition\", expected, next) \
        WHERE p.sink = $12 AND p.topic = m.topic AND p.\"partition\" = m.\"partition\" AND p.next_offset = m.expected \
        RETURNING p.\"partition\" \
    ), started AS ( \
        INSERT INTO sink_progress (sink, topic, \"partition\", next_offset) \
        SELECT $12, topic, \"partition\", next FROM unnest($9::text[], $10::int[], $11::bigint[]) AS s(topic, \"partition\", next) \
        ON CONFLICT DO NOTHING \
        RETURNING \"partition\" \
    ) \
    SELECT array(SELECT \"partition\" FROM moved UNION ALL SELECT \"partition\" FROM started) AS moved";

#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Integer>)]
    moved: Vec<i32>,
}

impl<'a> Bookkeeping<'a> {
    fn count(&mut self, topic: &'a str, partition: i32, outcome: &'a str, n: i64) {
        self.count_topic.push(topic);
        self.count_partition.push(partition);
        self.count_outcome.push(outcome);
        self.count_n.push(n);
    }

    fn advance(&mut self, topic: &'a str, partition: i32, expected: Option<i64>, next: i64) {
        match expected {
            Some(expected) => {
                self.move_topic.push(topic);
                self.move_partition.push(partition);
                self.move_expected.push(expected);
                self.move_next.push(next);
            }
            None => {
                self.start_topic.push(topic);
                self.start_partition.push(partition);
                self.start_next.push(next);
            }
        }
    }

    /// The partitions that did not move: another writer moved them first (fenced).
    fn store(&self, conn: &mut PgConnection) -> QueryResult<Vec<i32>> {
        use diesel::sql_types::{Array, BigInt, Integer, Text, Uuid as SqlUuid};
        let moves = self.move_topic.len() + self.start_topic.len();
        if moves == 0 && self.count_topic.is_empty() && self.touched.is_empty() {
            return Ok(Vec::new());
        }
        let moved: Moved = prepared(BOOKKEEPING)
            .bind::<Array<Text>, _>(&self.count_topic)
            .bind::<Array<Integer>, _>(&self.count_partition)
            .bind::<Array<Text>, _>(&self.count_outcome)
            .bind::<Array<BigInt>, _>(&self.count_n)
            .bind::<Array<Text>, _>(&self.move_topic)
            .bind::<Array<Integer>, _>(&self.move_partition)
            .bind::<Array<BigInt>, _>(&self.move_expected)
            .bind::<Array<BigInt>, _>(&self.move_next)
            .bind::<Array<Text>, _>(&self.start_topic)
            .bind::<Array<Integer>, _>(&self.start_partition)
            .bind::<Array<BigInt>, _>(&self.start_next)
            .bind::<Text, _>(SinkId::Postgres.as_str())
            .bind::<Array<SqlUuid>, _>(&self.touched)
            .get_result(conn)?;
        Ok(self
            .move_partition
            .iter()
            .chain(&self.start_partition)
            .filter(|p| !moved.moved.contains(p))
            .copied()
            .collect())
    }
}

/// Per partition: the durable progress when the write started, and after it.
type Plan = BTreeMap<(Arc<str>, i32), (Option<i64>, Option<i64>)>;

fn retryable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Retryable(e.to_string())
}

impl SinkWriter for PostgresWriter {
    const ID: SinkId = SinkId::Postgres;

    fn open(&mut self) -> Result<(), SinkError> {
        self.conn = Some(db::conn(&self.pool).map_err(retryable)?);
        Ok(())
    }

    fn write(&mut self, batches: &[SharedBatch], _failures: u32) -> Result<WriteReport, SinkError> {
        let mut conn = db::kept_or_new(&mut self.conn, &self.pool).map_err(retryable)?;
        let mut report = WriteReport::default();
        self.write_all(&mut conn, batches, &mut report)?;
        self.conn = Some(conn);
        for (partition, next) in &report.progress {
            let refused = report.rejected.iter().map(|d| &d.record.coords);
            let refused = refused.filter(|c| c.partition == *partition).map(|c| c.offset);
            self.verdicts.record(*partition, *next, refused);
        }
        Ok(report)
    }

    fn flush(&mut self, _only_if_due: bool) -> Result<WriteReport, SinkError> {
        Ok(WriteReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::may_be_a_refusal;
    use crate::stages::headers::headers_json;
    use diesel::result::{DatabaseErrorKind as Kind, Error};

    fn db(kind: Kind) -> Error {
        Error::DatabaseError(kind, Box::new("message".to_string()))
    }

    #[test]
    fn any_database_error_but_a_lost_connection_is_split_at_once_to_find_a_record() {
        for kind in [Kind::CheckViolation, Kind::NotNullViolation, Kind::Unknown] {
            assert!(may_be_a_refusal(&db(kind)));
        }
        assert!(!may_be_a_refusal(&db(Kind::ClosedConnection)));
        assert!(!may_be_a_refusal(&db(Kind::SerializationFailure)));
        assert!(!may_be_a_refusal(&Error::BrokenTransactionManager));
    }

    #[test]
    fn header_text_never_carries_a_nul_into_jsonb() {
        let headers =
            vec![("trace\0id".to_string(), Some(b"a\0b\xff".to_vec())), ("x".into(), None)];
        let json = headers_json(&headers).to_string();
        assert!(!json.replace("\\\\", "").contains("\\u0000"), "{json}");
        assert_eq!(headers_json(&headers)[0]["value"], "a\\u0000b\u{FFFD}");
    }
}
