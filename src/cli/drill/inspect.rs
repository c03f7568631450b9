//! What the sinks hold right now, for before/after comparisons and reconciliation.

use super::StepError;
use crate::db::{self, PgPool};
use crate::sinks::lake::reader::{read_rows, LakeRow};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A picture of both sinks and the topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Rows per Postgres table.
    pub tables: BTreeMap<String, i64>,
    /// `outcome_counts` summed over partitions.
    pub outcomes: BTreeMap<String, i64>,
    /// Events in Postgres.
    pub pg_events: i64,
    /// SHA-256 of the sorted event ids in Postgres.
    pub pg_ids_hash: String,
    /// Rows in the lake.
    pub lake_rows: i64,
    /// Distinct event ids in the lake.
    pub lake_distinct: i64,
    /// SHA-256 of the sorted distinct event ids in the lake.
    pub lake_ids_hash: String,
    /// Published lake files.
    pub lake_files: usize,
    /// The group's committed offsets per partition.
    pub committed: Vec<i64>,
    /// High watermarks per partition.
    pub high_watermarks: Vec<i64>,
}

#[derive(QueryableByName)]
struct Named {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

/// Hash of a set of ids (sorted, one per line).
pub fn ids_hash<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let mut sorted: Vec<&str> = ids.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut h = Sha256::new();
    for id in sorted {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..16].to_string()
}

/// Every event id of `topic` in Postgres `events`.
pub fn pg_ids(conn: &mut PgConnection, topic: &str) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query("SELECT event_id::text AS id FROM events WHERE topic = $1")
        .bind::<Text, _>(topic)
        .load::<Id>(conn)?
        .into_iter()
        .map(|r| r.id)
        .collect())
}

/// The event ids of `topic` Postgres holds as invalid.
pub fn pg_invalid_ids(conn: &mut PgConnection, topic: &str) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query(
        "SELECT event_id::text AS id FROM events WHERE topic = $1 AND NOT is_valid",
    )
    .bind::<Text, _>(topic)
    .load::<Id>(conn)?
    .into_iter()
    .map(|r| r.id)
    .collect())
}

/// Events first seen on `topic` and deleted since: each was counted `accepted` or
/// `deleted`, depending on whether it was decided before its tombstone.
pub fn pg_deleted_first_sightings(conn: &mut PgConnection, topic: &str) -> QueryResult<i64> {
    let row = diesel::sql_query(
        "SELECT 'deleted' AS name, count(*) AS n FROM processed_events          WHERE topic = $1 AND deleted_topic IS NOT NULL",
    )
    .bind::<Text, _>(topic)
    .get_result::<Named>(conn)?;
    Ok(row.n)
}

/// Rows per table and outcomes, for records read from `topic`.
pub fn pg_counts(
    conn: &mut PgConnection,
    topic: &str,
) -> QueryResult<(BTreeMap<String, i64>, BTreeMap<String, i64>)> {
    let tables = diesel::sql_query(
        "SELECT 'events' AS name, count(*) AS n FROM events WHERE topic = $1 \
         UNION ALL SELECT 'processed_events', count(*) FROM processed_events WHERE topic = $1 \
         UNION ALL SELECT 'dead_letters', count(*) FROM dead_letters WHERE topic = $1 \
         UNION ALL SELECT 'conflicts', count(*) FROM conflicts WHERE topic = $1",
    )
    .bind::<Text, _>(topic)
    .load::<Named>(conn)?
    .into_iter()
    .map(|r| (r.name, r.n))
    .collect();
    let outcomes = diesel::sql_query("SELECT outcome AS name, sum(count)::bigint AS n FROM outcome_counts WHERE topic = $1 GROUP BY outcome")
        .bind::<Text, _>(topic)
        .load::<Named>(conn)?
        .into_iter()
        .map(|r| (r.name, r.n))
        .collect();
    Ok((tables, outcomes))
}

/// Takes a snapshot.
pub fn snapshot(
    pool: &PgPool,
    lake: &crate::sinks::lake::store::LakeStore,
    kafka: &crate::settings::KafkaSettings,
    group: &str,
    topic: &str,
) -> Result<(Snapshot, Vec<LakeRow>), StepError> {
    let mut conn = db::conn(pool)?;
    let (tables, outcomes) = pg_counts(&mut conn, topic)?;
    let ids = pg_ids(&mut conn, topic)?;
    let rows = read_rows(lake, Some(topic))?;
    let mut distinct: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let snapshot = Snapshot {
        pg_events: ids.len() as i64,
        pg_ids_hash: ids_hash(ids.iter().map(String::as_str)),
        lake_rows: rows.len() as i64,
        lake_distinct: distinct.len() as i64,
        lake_ids_hash: ids_hash(distinct.iter().copied()),
        lake_files: crate::sinks::lake::reader::data_files(lake)?
            .iter()
            .filter(|f| crate::sinks::lake::reader::file_topic(f).as_deref() == Some(topic))
            .count(),
        tables,
        outcomes,
        committed: super::kafka_ops::committed(kafka, group, topic)?,
        high_watermarks: super::kafka_ops::watermarks(kafka, topic)?
            .into_iter()
            .map(|(_, h)| h)
            .collect(),
    };
    Ok((snapshot, rows))
}

/// Postgres events of `topic` per (event_type, UTC day).
pub fn pg_per_day(
    conn: &mut PgConnection,
    topic: &str,
) -> QueryResult<BTreeMap<(String, String), i64>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        event_type: String,
        #[diesel(sql_type = Text)]
        day: String,
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    Ok(diesel::sql_query("SELECT event_type, to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) AS n FROM events WHERE topic = $1 GROUP BY 1, 2")
        .bind::<Text, _>(topic)
        .load::<Row>(conn)?
        .into_iter()
        .map(|r| ((r.event_type, r.day), r.n))
        .collect())
}
