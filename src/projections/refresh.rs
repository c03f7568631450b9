//! Keeps the current-state tables in step with `events`, inside the Postgres writer's
//! transaction: the keys a write touches (its accepted events, the events it
//! invalidates or deletes, its entity tombstones) are folded again by
//! [`fold_sql::refresh`] once the write's rows and retractions are in. Same
//! transaction, so the state is exactly as durable as the events: a crash rolls both
//! back, a replay folds the same events into the same rows.

use crate::db::prepared::prepared;
use crate::projections::declaration::Entities;
use crate::projections::fold_sql;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text, Uuid as SqlUuid};
use diesel::PgConnection;
use std::collections::BTreeSet;
use uuid::Uuid;

/// The entities and their prepared statements' text.
#[derive(Debug, Default)]
pub struct Projections {
    entities: Entities,
    refresh: Vec<String>,
}

/// The keys one write touches, per entity (same order as [`Entities`]).
#[derive(Debug, Default)]
pub struct Touched {
    keys: Vec<BTreeSet<String>>,
}

impl Projections {
    /// The projections of these entities.
    pub fn new(entities: Entities) -> Self {
        let refresh = entities.0.iter().map(fold_sql::refresh).collect();
        Projections { entities, refresh }
    }

    /// The entities.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// True when no contract declares an entity: writes skip all of this.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Makes the state tables, their columns and the index on `events` (at start).
    /// Makes what is missing of the state tables, their columns and the index on
    /// `events` (at start). Only what is missing: DDL takes locks a running writer's
    /// transaction holds (a frozen process would keep a starting one waiting), and
    /// several processes starting at once make it under one lock, or two `CREATE TABLE
    /// IF NOT EXISTS` race and one fails on the catalog's unique index.
    pub fn ensure_tables(&self, conn: &mut PgConnection) -> QueryResult<()> {
        if self.missing_ddl(conn)?.is_empty() {
            return Ok(());
        }
        conn.transaction(|c| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('eventline state tables'))")
                .execute(c)?;
            for statement in self.missing_ddl(c)? {
                diesel::sql_query(statement).execute(c)?;
            }
            Ok(())
        })
    }

    /// The statements that make what the database lacks.
    fn missing_ddl(&self, conn: &mut PgConnection) -> QueryResult<Vec<String>> {
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let ddls: Vec<fold_sql::Ddl> = self.entities.0.iter().map(fold_sql::ddl).collect();
        let tables: Vec<&str> = ddls.iter().map(|d| d.table.as_str()).collect();
        let indexes: Vec<&str> = ddls.iter().map(|d| d.index.as_str()).collect();
        let held: std::collections::HashSet<String> = diesel::sql_query(
            "SELECT table_name || '.' || column_name AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ANY($1) \
             UNION ALL SELECT indexname FROM pg_indexes \
             WHERE schemaname = current_schema() AND indexname = ANY($2)",
        )
        .bind::<Array<Text>, _>(&tables)
        .bind::<Array<Text>, _>(&indexes)
        .load::<Name>(conn)?
        .into_iter()
        .map(|n| n.name)
        .collect();
        let mut missing = Vec::new();
        for ddl in ddls {
            let has = |column: &str| held.contains(&format!("{}.{column}", ddl.table));
            if !has("event_count") {
                missing.push(ddl.create_table.clone());
            }
            missing.extend(ddl.columns.into_iter().filter(|(c, _)| !has(c)).map(|(_, sql)| sql));
            if !held.contains(&ddl.index) {
                missing.push(ddl.create_index);
            }
        }
        Ok(missing)
    }

    /// An empty set of touched keys.
    pub fn touched(&self) -> Touched {
        Touched { keys: vec![BTreeSet::new(); self.entities.0.len()] }
    }

    /// Notes that an event of `event_type` keyed `key` changed.
    pub fn touch(&self, touched: &mut Touched, event_type: &str, key: Option<&str>) {
        let Some(key) = key else { return };
        if let Some(i) =
            self.entities.0.iter().position(|e| e.event_types.iter().any(|t| t == event_type))
        {
            touched.keys[i].insert(key.to_string());
        }
    }

    /// Notes an entity tombstone: `key` in `entity`, or in whichever entity has it.
    pub fn touch_entity(&self, touched: &mut Touched, entity: Option<&str>, key: &str) {
        for (e, keys) in self.entities.0.iter().zip(&mut touched.keys) {
            if entity.is_none_or(|name| name == e.name) {
                keys.insert(key.to_string());
            }
        }
    }

    /// Notes the keys of stored events (read before they are deleted).
    pub fn touch_stored(
        &self,
        conn: &mut PgConnection,
        touched: &mut Touched,
        ids: &[Uuid],
    ) -> QueryResult<()> {
        #[derive(QueryableByName)]
        struct Key {
            #[diesel(sql_type = Text)]
            k: String,
        }
        if ids.is_empty() {
            return Ok(());
        }
        for (i, entity) in self.entities.0.iter().enumerate() {
            let types: Vec<&str> = entity.event_types.iter().map(String::as_str).collect();
            let keys: Vec<Key> = prepared(
                "SELECT DISTINCT coalesce(normalized, payload)->>$3 AS k FROM events \
                 WHERE event_id = ANY($1) AND event_type = ANY($2) \
                   AND coalesce(normalized, payload)->>$3 IS NOT NULL",
            )
            .bind::<Array<SqlUuid>, _>(ids)
            .bind::<Array<Text>, _>(&types)
            .bind::<Text, _>(&entity.key)
            .load(conn)?;
            touched.keys[i].extend(keys.into_iter().map(|k| k.k));
        }
        Ok(())
    }

    /// Folds the touched keys' state again. Keys go in sorted, so two writers touching
    /// the same keys lock their rows in one order.
    pub fn refresh(&self, conn: &mut PgConnection, touched: &Touched) -> QueryResult<()> {
        // Another process's writer may be folding the same key: each waits for the
        // other's commit (a transaction-scoped lock on the key's bucket), so that its fold, a new
        // statement, sees the other's events. Without it both would fold without the
        // other's uncommitted events and the last to commit would win.
        let locks: Vec<String> = self
            .entities
            .0
            .iter()
            .zip(&touched.keys)
            .flat_map(|(entity, keys)| keys.iter().map(move |k| format!("{}:{k}", entity.name)))
            .collect();
        if locks.is_empty() {
            return Ok(());
        }
        prepared(LOCK_KEYS).bind::<Array<Text>, _>(&locks).execute(conn)?;
        for (sql, keys) in self.refresh.iter().zip(&touched.keys) {
            if keys.is_empty() {
                continue;
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            prepared(sql).bind::<Array<Text>, _>(&keys).execute(conn)?;
        }
        Ok(())
    }
}

/// Transaction-scoped advisory locks on the buckets of the `entity:key` hashes (4,096
/// buckets, in bucket order), one-key form (a key space apart from the writers' two-key
/// partition locks). A lock per key would put thousands of entries in Postgres's shared
/// lock table per write, whose default size is 64 per connection: a large batch would
/// fail with "out of shared memory". Two keys in one bucket only wait for each other.
const LOCK_KEYS: &str = "\
    SELECT count(*) FROM ( \
        SELECT pg_advisory_xact_lock(b) FROM ( \
            SELECT DISTINCT (x'5e1f0000'::bigint << 16) + (hashtext(k) & 4095) AS b \
            FROM unnest($1::text[]) AS t(k) ORDER BY 1 \
        ) AS l \
    ) AS x";
