//! The deduplicator actor: records the first sighting of each new `event_id` in
//! `processed_events` and decides every valid record of a batch (see [`crate::dedup`]).
//! It runs on a `SyncArbiter` because diesel blocks. The table, not any cache, is the
//! authority, so replaying any range of the log gives the same outcomes.

use crate::db::{self, DbError, PgPool};
use crate::dedup::{decide, Decision, FirstSeen};
use crate::record::{Checked, CheckedBatch, Conflict, Coords, DecidedBatch, Event};
use crate::schema::sightings_staging;
use actix::prelude::*;
use diesel::prelude::*;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Decide a checked batch.
#[derive(Message)]
#[rtype(result = "Result<DecidedBatch, DedupFailed>")]
pub struct Decide(pub CheckedBatch);

/// The decision could not be made (Postgres unavailable); the batch comes back so the
/// caller can retry it.
#[derive(Debug)]
pub struct DedupFailed {
    /// The untouched batch.
    pub batch: CheckedBatch,
    /// Why.
    pub error: DbError,
}

/// The deduplicator actor.
pub struct Deduplicator {
    pool: PgPool,
}

impl Deduplicator {
    /// A deduplicator over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Deduplicator { pool }
    }
}

#[derive(Insertable)]
#[diesel(table_name = sightings_staging, treat_none_as_default_value = false)]
struct NewSighting<'a> {
    event_id: Uuid,
    topic: &'a str,
    partition: i32,
    offset: i64,
    payload_hash: &'a str,
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
}

/// Records first sightings (COPY into a staging table, then one INSERT ... SELECT) and
/// reads back the authoritative one for every id, in one transaction.
fn first_sightings(conn: &mut PgConnection, events: &[&Event]) -> Result<HashMap<Uuid, FirstSeen>, DbError> {
    // The lowest offset of each id within the batch is its candidate first sighting;
    // sorted by id so concurrent writers take row locks in the same order.
    let mut seen = HashSet::new();
    let mut rows: Vec<NewSighting> = events
        .iter()
        .filter(|e| seen.insert(e.event_id))
        .map(|e| NewSighting { event_id: e.event_id, topic: &e.coords.topic, partition: e.coords.partition, offset: e.coords.offset, payload_hash: &e.payload_hash })
        .collect();
    rows.sort_by_key(|r| r.event_id);
    let stored: Vec<Sighting> = conn.transaction(|c| {
        db::ensure_staging_tables(c)?;
        diesel::copy_from(sightings_staging::table).from_insertable(&rows).execute(c)?;
        diesel::sql_query(
            "INSERT INTO processed_events (event_id, topic, \"partition\", \"offset\", payload_hash) \
             SELECT event_id, topic, \"partition\", \"offset\", payload_hash FROM sightings_staging ORDER BY event_id \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .execute(c)?;
        diesel::sql_query(
            "SELECT p.event_id, p.topic, p.\"partition\", p.\"offset\", p.payload_hash FROM processed_events p JOIN sightings_staging s USING (event_id)",
        )
        .load::<Sighting>(c)
    })?;
    Ok(stored
        .into_iter()
        .map(|s| (s.event_id, FirstSeen { coords: Coords { topic: s.topic.into(), partition: s.partition, offset: s.offset }, payload_hash: s.payload_hash }))
        .collect())
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
                    Decision::Conflict => out.conflicts.push(Conflict { first_seen: first_seen.coords.clone(), event }),
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
        let events: Vec<&Event> = batch.items.iter().filter_map(|i| if let Checked::Valid(e) = i { Some(e) } else { None }).collect();
        if events.is_empty() {
            return Ok(assemble(batch, &HashMap::new()));
        }
        let first = db::conn(&self.pool).and_then(|mut conn| first_sightings(&mut conn, &events));
        match first {
            Ok(first) => Ok(assemble(batch, &first)),
            Err(error) => Err(DedupFailed { batch, error }),
        }
    }
}
