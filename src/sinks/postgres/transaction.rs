//! One write's transaction, as named steps: lock the partitions, copy the accepted
//! events, store dead letters and conflicts, remember refusals, keep the current-state
//! keys and entity tombstones, then one bookkeeping statement (outcome counts,
//! progress by compare-and-set, retractions) and the fold of the touched keys.

use super::bookkeeping::{Bookkeeping, Plan};
use super::outcomes::count_outcomes;
use super::refusal::{Refusal, Slice};
use super::rows::{
    EventColumns, EventRow, InsertMode, NewConflict, NewDeadLetter, NewEntityTombstone,
    ROWS_PER_STATEMENT,
};
use crate::db::prepared::prepared;
use crate::db::schema::{conflicts, dead_letters, entity_tombstones, events};
use crate::projections::refresh::{Projections, Touched};
use crate::record::{
    Conflict, Coords, DeadLetter, DecidedBatch, EntityDeletion, Event, Retraction,
};
use crate::storable::StorableText;
use crate::telemetry::faults::TransactionPause;
use diesel::prelude::*;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Why a transaction did not commit.
#[derive(Debug, thiserror::Error)]
pub(super) enum TxError {
    /// Postgres refused a statement, or the connection failed.
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    /// These partitions' progress had moved under another writer.
    #[error("progress moved under another writer on partitions {0:?}")]
    Fenced(Vec<i32>),
}

/// What one transaction stores: the slices of the batches, each partition's progress
/// from and to, and the records stored as dead letters instead of their own rows.
pub(super) struct Write<'a> {
    pub(super) slices: &'a [Slice<'a>],
    pub(super) plan: &'a Plan,
    pub(super) refused: &'a [Refusal<'a>],
    pub(super) mode: InsertMode,
}

impl<'a> Write<'a> {
    /// Whether the record at `c` has its own rows in this write: inside the slice, and
    /// not refused (its dead letter stands in for them).
    fn keeps(&self, s: &Slice, c: &Coords) -> bool {
        s.holds(c.offset) && !self.refused.iter().any(|r| r.coords == *c)
    }

    /// The rows of one kind (`rows`, located by `at`) this write stores.
    fn kept<T>(
        &self,
        rows: fn(&'a DecidedBatch) -> &'a [T],
        at: fn(&T) -> &Coords,
    ) -> impl Iterator<Item = &'a T> + '_ {
        let slices: &'a [Slice<'a>] = self.slices;
        slices.iter().flat_map(move |s| rows(s.batch).iter().filter(move |x| self.keeps(s, at(x))))
    }

    fn accepted(&self) -> impl Iterator<Item = &'a Event> + '_ {
        self.kept(|b| &b.accepted, |e| &e.coords)
    }

    fn invalidations(&self) -> impl Iterator<Item = &'a Retraction> + '_ {
        self.kept(|b| &b.invalidations, |r| &r.coords)
    }

    fn deletions(&self) -> impl Iterator<Item = &'a Retraction> + '_ {
        self.kept(|b| &b.deletions, |r| &r.coords)
    }

    /// The dead letters, the refused records' among them.
    fn dead_letters(&self) -> impl Iterator<Item = &'a DeadLetter> + '_ {
        let refused: &'a [Refusal<'a>] = self.refused;
        self.kept(|b| &b.dead, |d| &d.record.coords).chain(refused.iter().map(|r| &r.dead))
    }

    fn conflicts(&self) -> impl Iterator<Item = &'a Conflict> + '_ {
        self.kept(|b| &b.conflicts, |x| &x.event.coords)
    }

    fn entity_deletions(&self) -> impl Iterator<Item = &'a EntityDeletion> + '_ {
        self.kept(|b| &b.entity_deletions, |d| &d.coords)
    }

    /// Every id this write stores or retracts: the bookkeeping statement applies the
    /// invalidations and deletions recorded for them, whichever came first.
    fn touched(&self) -> Vec<Uuid> {
        let retracted = self.invalidations().chain(self.deletions()).map(|r| r.event_id);
        self.accepted().map(|e| e.event_id).chain(retracted).collect()
    }
}

/// One transaction for the whole write. `pause` is fault injection: a wait while the
/// transaction holds its locks.
pub(super) fn store(
    conn: &mut PgConnection,
    write: &Write,
    projections: &Projections,
    pause: TransactionPause,
) -> Result<(), TxError> {
    conn.transaction(|c| {
        lock_partitions(c, write.plan, write.slices)?;
        copy_events(c, write)?;
        store_dead_letters(c, write)?;
        store_conflicts(c, write)?;
        if write.refused.iter().any(|r| r.event.is_some()) {
            mark_refused(c, write.refused)?;
        }
        pause.inside_transaction();
        let keys = touch_current_state(c, write, projections)?;
        let counts = count_outcomes(write.slices, write.refused);
        let fenced = Bookkeeping::of(write.plan, &counts, write.touched()).store(c)?;
        if !fenced.is_empty() {
            return Err(TxError::Fenced(fenced));
        }
        projections.refresh(c, &keys)?;
        Ok(())
    })
}

/// The accepted events: by binary COPY, or skipping ids already stored.
fn copy_events(c: &mut PgConnection, write: &Write) -> QueryResult<()> {
    match write.mode {
        InsertMode::New => {
            let rows: Vec<EventRow> = write.accepted().map(EventRow::from).collect();
            if !rows.is_empty() {
                diesel::copy_from(events::table).from_insertable(rows).execute(c)?;
            }
        }
        InsertMode::SkipExisting => {
            let mut columns = EventColumns::default();
            write.accepted().for_each(|e| columns.push(e));
            columns.insert_skipping_existing(c)?;
        }
    }
    Ok(())
}

/// The dead letters, the refused records' among them.
fn store_dead_letters(c: &mut PgConnection, write: &Write) -> QueryResult<()> {
    let rows: Vec<NewDeadLetter> = write.dead_letters().map(NewDeadLetter::from).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        diesel::insert_into(dead_letters::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(c)?;
    }
    Ok(())
}

/// Same id, different content: kept beside the first version.
fn store_conflicts(c: &mut PgConnection, write: &Write) -> QueryResult<()> {
    let rows: Vec<NewConflict> = write.conflicts().map(NewConflict::from).collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        diesel::insert_into(conflicts::table).values(chunk).on_conflict_do_nothing().execute(c)?;
    }
    Ok(())
}

/// The current-state keys this write changes, read before the bookkeeping statement
/// deletes any event; entity tombstones are stored here, as only the fold reads them.
fn touch_current_state(
    c: &mut PgConnection,
    write: &Write,
    projections: &Projections,
) -> QueryResult<Touched> {
    let mut keys = projections.touched();
    if projections.is_empty() {
        return Ok(keys);
    }
    for e in write.accepted() {
        projections.touch_new(&mut keys, &e.event_type, e.entity_key.as_deref(), e.event_id);
    }
    for r in write.invalidations() {
        let event_type = r.event_type.as_deref().unwrap_or_default();
        projections.touch(&mut keys, event_type, r.entity_key.as_deref());
    }
    let deleted: Vec<Uuid> = write.deletions().map(|r| r.event_id).collect();
    projections.touch_stored(c, &mut keys, &deleted)?;
    let tombstones: Vec<NewEntityTombstone> =
        write.entity_deletions().map(NewEntityTombstone::from).collect();
    for t in &tombstones {
        projections.touch_entity(&mut keys, t.entity, t.entity_key.as_str());
    }
    for chunk in tombstones.chunks(ROWS_PER_STATEMENT) {
        diesel::insert_into(entity_tombstones::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(c)?;
    }
    Ok(keys)
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
