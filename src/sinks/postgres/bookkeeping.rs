//! The last statement of every write: outcome counts, progress moved by
//! compare-and-set, and the invalidations and deletions recorded for the ids the write
//! touched, all in one round trip.

use super::outcomes::OutcomeCounts;
use crate::db::prepared::prepared;
use crate::record::SinkId;
use diesel::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// Per partition: the durable progress when the write started, and after it.
pub(super) type Plan = BTreeMap<(Arc<str>, i32), (Option<i64>, Option<i64>)>;

/// Outcome counts and progress moves of one transaction, stored by one statement
/// ([`BOOKKEEPING`]): at moderate rates a write holds a few small batches, and one round
/// trip per partition plus one for the counts was a large share of it.
#[derive(Default)]
pub(super) struct Bookkeeping<'a> {
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
    /// What a write moves: its outcome counts, each partition whose progress changes,
    /// and the ids it stored or retracted.
    pub(super) fn of(plan: &'a Plan, counts: &OutcomeCounts<'a>, touched: Vec<Uuid>) -> Self {
        let mut bookkeeping = Bookkeeping { touched, ..Bookkeeping::default() };
        for ((topic, partition, outcome), n) in counts {
            bookkeeping.count(topic, *partition, outcome, *n);
        }
        for ((topic, partition), (expected, next)) in plan {
            if let Some(next) = next.filter(|n| Some(*n) != *expected) {
                bookkeeping.advance(topic, *partition, *expected, next);
            }
        }
        bookkeeping
    }

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
    pub(super) fn store(&self, conn: &mut PgConnection) -> QueryResult<Vec<i32>> {
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
