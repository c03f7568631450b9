//! The deduplicator actor: records the first sighting of each new `event_id` in
//! `processed_events`, and the first invalidation and deletion of an id on the same row,
//! then decides every record of a batch (see [`crate::stages::dedup_decision`]).
//! It is on every record's path, so a batch of new events costs one statement (one
//! round trip, one commit); only ids seen before, and retractions, cost more.
//! It runs on a `SyncArbiter` because diesel blocks. The table, not any cache, is the
//! authority, so replaying any range of the log gives the same outcomes.

use crate::db::prepared::prepared;
use crate::db::{self, DbError, PgPool};
use crate::record::{
    Checked, CheckedBatch, Conflict, Coords, DeadLetter, DecidedBatch, Retraction,
};
use crate::stages::dedup_decision::{decide, decide_tombstone, Decision, FirstSeen, IdState};
use crate::telemetry::faults::{panic_message, Fault, Faults};
use crate::telemetry::metrics::metrics;
use crate::telemetry::supervision_log::{Entry, EntryKind, SupervisionLog};
use actix::prelude::*;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Uuid as SqlUuid};
use std::collections::{BTreeMap, HashMap, HashSet};
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
    #[diesel(sql_type = Nullable<Text>)]
    topic: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    partition: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    offset: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    payload_hash: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    sink_rejected: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    invalidated_topic: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    invalidated_partition: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    invalidated_offset: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    deleted_topic: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    deleted_partition: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    deleted_offset: Option<i64>,
}

fn coords(topic: Option<String>, partition: Option<i32>, offset: Option<i64>) -> Option<Coords> {
    Some(Coords { topic: topic?.into(), partition: partition?, offset: offset? })
}

impl From<Sighting> for IdState {
    fn from(s: Sighting) -> IdState {
        let first = coords(s.topic, s.partition, s.offset).map(|coords| FirstSeen {
            coords,
            payload_hash: s.payload_hash.unwrap_or_default(),
            sink_rejected: s.sink_rejected,
        });
        IdState {
            first,
            invalidated_by: coords(
                s.invalidated_topic,
                s.invalidated_partition,
                s.invalidated_offset,
            ),
            deleted_by: coords(s.deleted_topic, s.deleted_partition, s.deleted_offset),
        }
    }
}

/// Records the ids not seen before and returns them (only the ids: the rest of a new
/// id's first sighting is the record at hand): in the common case (new events) this
/// one statement, one round trip and one commit, is the whole decision.
const RECORD_NEW: &str = "\
    INSERT INTO processed_events (event_id, topic, \"partition\", \"offset\", payload_hash) \
    SELECT event_id, $2, $3, \"offset\", payload_hash FROM unnest($1::uuid[], $4::bigint[], $5::text[]) AS t(event_id, \"offset\", payload_hash) \
    ON CONFLICT (event_id) DO NOTHING \
    RETURNING event_id";

/// Records the first invalidation of each id, before or after its first sighting,
/// unless its content is not the first sighting's (that is a conflict), and lists the id
/// in `retracted_events`, where the Postgres writer looks.
const RECORD_INVALIDATIONS: &str = "\
    WITH recorded AS ( \
    INSERT INTO processed_events (event_id, invalidated_topic, invalidated_partition, invalidated_offset, invalidated_hash, invalidated_at) \
    SELECT event_id, $2, $3, \"offset\", payload_hash, now() FROM unnest($1::uuid[], $4::bigint[], $5::text[]) AS t(event_id, \"offset\", payload_hash) \
    ON CONFLICT (event_id) DO UPDATE SET invalidated_topic = excluded.invalidated_topic, \
        invalidated_partition = excluded.invalidated_partition, invalidated_offset = excluded.invalidated_offset, \
        invalidated_hash = excluded.invalidated_hash, invalidated_at = excluded.invalidated_at \
    WHERE processed_events.invalidated_topic IS NULL \
      AND (processed_events.payload_hash IS NULL OR processed_events.payload_hash = excluded.invalidated_hash) \
    RETURNING event_id) \
    INSERT INTO retracted_events (event_id) SELECT event_id FROM recorded ON CONFLICT DO NOTHING";

/// Records the first deletion of each id, before or after its first sighting, and lists
/// the id in `retracted_events`.
const RECORD_DELETIONS: &str = "\
    WITH recorded AS ( \
    INSERT INTO processed_events (event_id, deleted_topic, deleted_partition, deleted_offset, deleted_at) \
    SELECT event_id, $2, $3, \"offset\", now() FROM unnest($1::uuid[], $4::bigint[]) AS t(event_id, \"offset\") \
    ON CONFLICT (event_id) DO UPDATE SET deleted_topic = excluded.deleted_topic, \
        deleted_partition = excluded.deleted_partition, deleted_offset = excluded.deleted_offset, \
        deleted_at = excluded.deleted_at \
    WHERE processed_events.deleted_topic IS NULL \
    RETURNING event_id) \
    INSERT INTO retracted_events (event_id) SELECT event_id FROM recorded ON CONFLICT DO NOTHING";

/// Gives a first sighting to ids an invalidation or a deletion recorded before the
/// event itself arrived.
const FILL_FIRST: &str = "\
    UPDATE processed_events p SET topic = $2, \"partition\" = $3, \"offset\" = t.\"offset\", payload_hash = t.payload_hash, first_seen_at = now() \
    FROM unnest($1::uuid[], $4::bigint[], $5::text[]) AS t(event_id, \"offset\", payload_hash) \
    WHERE p.event_id = t.event_id AND p.topic IS NULL";

/// Reads what is known of ids recorded before (duplicates, conflicts, replays,
/// invalidations, deletions). The statements above waited for any concurrent writer of
/// these ids, so a new snapshot sees them all.
const READ: &str = "\
    SELECT event_id, topic, \"partition\", \"offset\", payload_hash, sink_rejected, \
           invalidated_topic, invalidated_partition, invalidated_offset, \
           deleted_topic, deleted_partition, deleted_offset \
    FROM processed_events WHERE event_id = ANY($1)";

/// One row per id, the lowest offset of each (the candidate first record), sorted by
/// id so concurrent writers take row locks in the same order.
struct Rows<'a> {
    ids: Vec<Uuid>,
    offsets: Vec<i64>,
    hashes: Vec<&'a str>,
}

impl<'a> Rows<'a> {
    fn of(records: impl Iterator<Item = (Uuid, i64, &'a str)>) -> Rows<'a> {
        let mut lowest: BTreeMap<Uuid, (i64, &str)> = BTreeMap::new();
        for (id, offset, hash) in records {
            let entry = lowest.entry(id).or_insert((offset, hash));
            if offset < entry.0 {
                *entry = (offset, hash);
            }
        }
        Rows {
            ids: lowest.keys().copied().collect(),
            offsets: lowest.values().map(|(o, _)| *o).collect(),
            hashes: lowest.values().map(|(_, h)| *h).collect(),
        }
    }

    /// Runs `statement` with `$1` ids, `$2` topic, `$3` partition, `$4` offsets and,
    /// when `with_hashes`, `$5` hashes.
    fn run(
        &self,
        conn: &mut PgConnection,
        statement: &str,
        topic: &str,
        partition: i32,
        with_hashes: bool,
    ) -> QueryResult<usize> {
        if self.ids.is_empty() {
            return Ok(0);
        }
        let query = prepared(statement)
            .bind::<Array<SqlUuid>, _>(&self.ids)
            .bind::<Text, _>(topic)
            .bind::<Integer, _>(partition)
            .bind::<Array<BigInt>, _>(&self.offsets);
        match with_hashes {
            true => query.bind::<Array<Text>, _>(&self.hashes).execute(conn),
            false => query.execute(conn),
        }
    }
}

fn read_states(conn: &mut PgConnection, ids: &[Uuid]) -> QueryResult<Vec<(Uuid, IdState)>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = prepared(READ).bind::<Array<SqlUuid>, _>(ids).load::<Sighting>(conn)?;
    Ok(rows.into_iter().map(|s| (s.event_id, IdState::from(s))).collect())
}

/// Records first sightings, invalidations and deletions, and reads back what is known
/// of every id of the batch.
fn id_states(
    conn: &mut PgConnection,
    topic: &str,
    partition: i32,
    items: &[Checked],
) -> Result<HashMap<Uuid, IdState>, DbError> {
    let valid = items.iter().filter_map(|i| match i {
        Checked::Valid(e) if e.is_valid => Some(e),
        _ => None,
    });
    let events = Rows::of(valid.map(|e| (e.event_id, e.coords.offset, e.payload_hash.as_str())));
    let invalidating = items.iter().filter_map(|i| match i {
        Checked::Valid(e) if !e.is_valid => Some(e),
        _ => None,
    });
    let invalidations =
        Rows::of(invalidating.map(|e| (e.event_id, e.coords.offset, e.payload_hash.as_str())));
    let deleting = items.iter().filter_map(|i| match i {
        Checked::Delete(r) => Some((r.event_id, r.coords.offset, "")),
        _ => None,
    });
    let deletions = Rows::of(deleting);

    let recorded: HashSet<Uuid> = if events.ids.is_empty() {
        HashSet::new()
    } else {
        prepared(RECORD_NEW)
            .bind::<Array<SqlUuid>, _>(&events.ids)
            .bind::<Text, _>(topic)
            .bind::<Integer, _>(partition)
            .bind::<Array<BigInt>, _>(&events.offsets)
            .bind::<Array<Text>, _>(&events.hashes)
            .load::<NewId>(conn)?
            .into_iter()
            .map(|row| row.event_id)
            .collect()
    };
    invalidations.run(conn, RECORD_INVALIDATIONS, topic, partition, true)?;
    deletions.run(conn, RECORD_DELETIONS, topic, partition, false)?;

    let retracted: HashSet<Uuid> =
        invalidations.ids.iter().chain(&deletions.ids).copied().collect();
    let mut states: HashMap<Uuid, IdState> = HashMap::new();
    let mut to_read: Vec<Uuid> = Vec::new();
    for (i, id) in events.ids.iter().enumerate() {
        if recorded.contains(id) && !retracted.contains(id) {
            let first = Coords { topic: topic.into(), partition, offset: events.offsets[i] };
            states.insert(*id, IdState::first_seen(first, events.hashes[i].to_string()));
        } else {
            to_read.push(*id);
        }
    }
    to_read.extend(retracted.iter().filter(|id| !states.contains_key(id)));
    to_read.sort();
    to_read.dedup();
    let read = read_states(conn, &to_read)?;
    // Events whose id an invalidation or a deletion recorded first get their first
    // sighting now (rare: a retraction that overtook its event).
    let unseen: HashSet<Uuid> =
        read.iter().filter(|(_, s)| s.first.is_none()).map(|(id, _)| *id).collect();
    states.extend(read);
    if events.ids.iter().any(|id| unseen.contains(id)) {
        let keep: Vec<usize> =
            (0..events.ids.len()).filter(|i| unseen.contains(&events.ids[*i])).collect();
        let fill = Rows {
            ids: keep.iter().map(|i| events.ids[*i]).collect(),
            offsets: keep.iter().map(|i| events.offsets[*i]).collect(),
            hashes: keep.iter().map(|i| events.hashes[*i]).collect(),
        };
        fill.run(conn, FILL_FIRST, topic, partition, true)?;
        states.extend(read_states(conn, &fill.ids)?);
    }
    Ok(states)
}

/// Applies the decision to every record of the batch.
pub fn assemble(batch: CheckedBatch, states: &HashMap<Uuid, IdState>) -> DecidedBatch {
    let mut out = DecidedBatch {
        topic: batch.topic,
        partition: batch.partition,
        first_offset: batch.first_offset,
        next_offset: batch.next_offset,
        ..DecidedBatch::default()
    };
    let unknown = IdState::default();
    for item in batch.items {
        match item {
            Checked::Dead(dead) => out.dead.push(dead),
            // Stored by its coordinates: a replayed one lands on the same row.
            Checked::DeleteEntity(deletion) => out.entity_deletions.push(deletion),
            Checked::Delete(mut deletion) => {
                let state = states.get(&deletion.event_id).unwrap_or(&unknown);
                match decide_tombstone(&deletion.coords, state) {
                    Decision::Duplicate => out.duplicates.push(deletion.coords),
                    _ => {
                        deletion.target = state.first.as_ref().map(|f| f.coords.clone());
                        out.deletions.push(deletion);
                    }
                }
            }
            Checked::Valid(event) => {
                let Some(state) = states.get(&event.event_id) else {
                    // Cannot happen: the id was inserted or found above. Accepting keeps
                    // the record (the sinks' primary keys still prevent a second copy).
                    log::error!("No state for {}; accepting", event.event_id);
                    out.accepted.push(event);
                    continue;
                };
                let first = state.first.as_ref().map(|f| f.coords.clone());
                match decide(&event.coords, &event.payload_hash, event.is_valid, state) {
                    Decision::Accepted => out.accepted.push(event),
                    Decision::Duplicate => out.duplicates.push(event.coords),
                    Decision::Conflict => out.conflicts.push(Conflict {
                        first_seen: first.unwrap_or_else(|| event.coords.clone()),
                        event,
                    }),
                    Decision::SinkRejected => {
                        let reason = state
                            .first
                            .as_ref()
                            .and_then(|f| f.sink_rejected.clone())
                            .unwrap_or_default();
                        out.dead.push(DeadLetter::sink_rejected(&event, reason));
                    }
                    Decision::Invalidated => {
                        out.invalidations.push(Retraction::invalidating(&event, first))
                    }
                    Decision::Deleted => out.deleted_copies.push(event.coords),
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
        if batch.items.iter().all(|i| matches!(i, Checked::Dead(_))) {
            return Ok(assemble(batch, &HashMap::new()));
        }
        let fault = self.faults.lock().unwrap_or_else(|p| p.into_inner()).take_next();
        let first = catch_unwind(AssertUnwindSafe(|| {
            if fault == Some(Fault::Panic) {
                panic!("injected panic in the deduplicator");
            }
            db::kept_or_new(&mut self.conn, &self.pool).and_then(|mut conn| {
                let first = id_states(&mut conn, &batch.topic, batch.partition, &batch.items)?;
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
