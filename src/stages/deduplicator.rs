//! The deduplicator actor: records the first sighting of each new `event_id` in
//! `processed_events` and decides every valid record of a batch (see [`crate::stages::dedup_decision`]).
//! It is on every record's path, so a batch of new events costs one statement (one
//! round trip, one commit); only ids seen before cost a second, read-only one.
//! It runs on a `SyncArbiter` because diesel blocks. The table, not any cache, is the
//! authority, so replaying any range of the log gives the same outcomes.

use crate::db::{self, DbError, PgPool};
use crate::ops::faults::{panic_message, Fault, Faults};
use crate::ops::metrics::metrics;
use crate::ops::supervision_log::{Entry, EntryKind, SupervisionLog};
use crate::record::{Checked, CheckedBatch, Conflict, Coords, DeadLetter, DecidedBatch, Event};
use crate::stages::dedup_decision::{decide, Decision, FirstSeen};
use actix::prelude::*;
use diesel::prelude::*;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// Decide a checked batch.
#[derive(Message)]
#[rtype(result = "Result<DecidedBatch, DedupFailed>")]
pub struct Decide(pub CheckedBatch);

/// The decision could not be made; the batch comes back so the caller can retry it.
#[derive(Debug)]
pub struct DedupFailed {
    /// The untouched batch.
    pub batch: CheckedBatch,
    /// Why.
    pub error: DedupError,
}

/// Why a batch could not be decided. Both are retried by the flow with backoff.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// Postgres unavailable or a statement failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The decision panicked; caught, so the actor's thread and the flows go on.
    #[error("the dedup decision panicked: {0}")]
    Panicked(String),
}

/// The deduplicator actor.
pub struct Deduplicator {
    pool: PgPool,
    log: Arc<SupervisionLog>,
    faults: Arc<Mutex<Faults>>,
    /// Kept between batches (a pool checkout costs a validation round trip); dropped
    /// after any error, so the retry gets a checked one.
    conn: Option<db::PgConn>,
}

impl Deduplicator {
    /// A deduplicator over `pool`; caught panics go to `log`.
    pub fn new(pool: PgPool, log: Arc<SupervisionLog>, faults: Arc<Mutex<Faults>>) -> Self {
        Deduplicator { pool, log, faults, conn: None }
    }
}

#[derive(QueryableByName)]
struct NewId {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
}

#[derive(QueryableByName)]
struct Sighting {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    event_id: Uuid,
    #[diesel(sql_type = diesel::sql_types::Text)]
    topic: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    partition: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    offset: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    payload_hash: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    sink_rejected: Option<String>,
}

/// Records the ids not seen before and returns them (only the ids: the rest of a new
/// id's first sighting is the record at hand): in the common case (new events) this
/// one statement, one round trip and one commit, is the whole decision.
const RECORD_NEW: &str = "\
    INSERT INTO processed_events (event_id, topic, \"partition\", \"offset\", payload_hash) \
    SELECT event_id, $2, $3, \"offset\", payload_hash FROM unnest($1::uuid[], $4::bigint[], $5::text[]) AS t(event_id, \"offset\", payload_hash) \
    ON CONFLICT (event_id) DO NOTHING \
    RETURNING event_id";

/// Reads the first sightings of ids recorded before (duplicates, conflicts, replays).
/// The insert above waited for any concurrent writer of these ids, so a new snapshot
/// sees them all.
const READ: &str = "SELECT event_id, topic, \"partition\", \"offset\", payload_hash, sink_rejected FROM processed_events WHERE event_id = ANY($1)";

/// Records first sightings and reads back the authoritative one for every id.
fn first_sightings(
    conn: &mut PgConnection,
    topic: &str,
    partition: i32,
    events: &[&Event],
) -> Result<HashMap<Uuid, FirstSeen>, DbError> {
    use diesel::sql_types::{Array, BigInt, Integer, Text, Uuid as SqlUuid};
    // The lowest offset of each id within the batch is its candidate first sighting;
    // sorted by id so concurrent writers take row locks in the same order.
    let mut seen = HashSet::new();
    let mut rows: Vec<&Event> =
        events.iter().copied().filter(|e| seen.insert(e.event_id)).collect();
    rows.sort_by_key(|e| e.event_id);
    let ids: Vec<Uuid> = rows.iter().map(|e| e.event_id).collect();
    let offsets: Vec<i64> = rows.iter().map(|e| e.coords.offset).collect();
    let hashes: Vec<&str> = rows.iter().map(|e| e.payload_hash.as_str()).collect();
    let recorded: HashSet<Uuid> = diesel::sql_query(RECORD_NEW)
        .bind::<Array<SqlUuid>, _>(&ids)
        .bind::<Text, _>(topic)
        .bind::<Integer, _>(partition)
        .bind::<Array<BigInt>, _>(&offsets)
        .bind::<Array<Text>, _>(&hashes)
        .load::<NewId>(conn)?
        .into_iter()
        .map(|row| row.event_id)
        .collect();
    let mut first: HashMap<Uuid, FirstSeen> = rows
        .iter()
        .filter(|e| recorded.contains(&e.event_id))
        .map(|e| {
            (
                e.event_id,
                FirstSeen {
                    coords: e.coords.clone(),
                    payload_hash: e.payload_hash.clone(),
                    sink_rejected: None,
                },
            )
        })
        .collect();
    if recorded.len() < ids.len() {
        let known: Vec<Uuid> = ids.into_iter().filter(|id| !recorded.contains(id)).collect();
        let earlier =
            diesel::sql_query(READ).bind::<Array<SqlUuid>, _>(&known).load::<Sighting>(conn)?;
        first.extend(earlier.into_iter().map(|s| {
            (
                s.event_id,
                FirstSeen {
                    coords: Coords {
                        topic: s.topic.into(),
                        partition: s.partition,
                        offset: s.offset,
                    },
                    payload_hash: s.payload_hash,
                    sink_rejected: s.sink_rejected,
                },
            )
        }));
    }
    Ok(first)
}

/// Applies the decision to every record of the batch.
pub fn assemble(batch: CheckedBatch, first: &HashMap<Uuid, FirstSeen>) -> DecidedBatch {
    let mut out = DecidedBatch {
        topic: batch.topic,
        partition: batch.partition,
        first_offset: batch.first_offset,
        next_offset: batch.next_offset,
        ..DecidedBatch::default()
    };
    for item in batch.items {
        match item {
            Checked::Dead(dead) => out.dead.push(dead),
            Checked::Valid(event) => {
                let Some(first_seen) = first.get(&event.event_id) else {
                    // Cannot happen: the id was inserted or found above. Accepting keeps
                    // the record (the sinks' primary keys still prevent a second copy).
                    log::error!("No first sighting for {}; accepting", event.event_id);
                    out.accepted.push(event);
                    continue;
                };
                match decide(&event.coords, &event.payload_hash, first_seen) {
                    Decision::Accepted => out.accepted.push(event),
                    Decision::Duplicate => out.duplicates.push(event.coords),
                    Decision::Conflict => out
                        .conflicts
                        .push(Conflict { first_seen: first_seen.coords.clone(), event }),
                    Decision::SinkRejected => {
                        let reason = first_seen.sink_rejected.clone().unwrap_or_default();
                        out.dead.push(DeadLetter::sink_rejected(&event, reason));
                    }
                }
            }
        }
    }
    out
}

impl Actor for Deduplicator {
    type Context = SyncContext<Self>;
}

impl Handler<Decide> for Deduplicator {
    type Result = Result<DecidedBatch, DedupFailed>;

    fn handle(&mut self, msg: Decide, _: &mut SyncContext<Self>) -> Self::Result {
        let batch = msg.0;
        let events: Vec<&Event> = batch
            .items
            .iter()
            .filter_map(|i| if let Checked::Valid(e) = i { Some(e) } else { None })
            .collect();
        if events.is_empty() {
            return Ok(assemble(batch, &HashMap::new()));
        }
        let fault = self.faults.lock().unwrap_or_else(|p| p.into_inner()).take_next();
        let first = catch_unwind(AssertUnwindSafe(|| {
            if fault == Some(Fault::Panic) {
                panic!("injected panic in the deduplicator");
            }
            db::kept_or_new(&mut self.conn, &self.pool).and_then(|mut conn| {
                let first = first_sightings(&mut conn, &batch.topic, batch.partition, &events)?;
                self.conn = Some(conn);
                Ok(first)
            })
        }));
        match first {
            Ok(Ok(first)) => Ok(assemble(batch, &first)),
            Ok(Err(error)) => Err(DedupFailed { batch, error: error.into() }),
            Err(panic) => {
                // The kept connection may be mid-statement: the retry gets a fresh one.
                self.conn = None;
                let error = DedupError::Panicked(panic_message(&panic));
                let mut entry = Entry::new("deduplicator", EntryKind::Failure);
                entry.cause = Some(format!("{}/{}: {error}", batch.topic, batch.partition));
                self.log.append(&entry);
                metrics().stage_failures.with_label_values(&["deduplicator"]).inc();
                Err(DedupFailed { batch, error })
            }
        }
    }
}
