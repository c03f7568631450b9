//! Keeps the current-state tables in step with `events`, inside the Postgres writer's
//! transaction, once the write's rows and retractions are in: its accepted events are
//! applied to their keys' rows ([`fold_sql::apply_new`]), and the keys it invalidates,
//! deletes or tombstones, with those whose row a late event predates, are folded again
//! from their events ([`fold_sql::refresh`]). Same transaction, so the state is
//! exactly as durable as the events: a crash rolls both back, a replay folds the same
//! events into the same rows.

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
    apply_new: Vec<String>,
}

/// What one write changes, per entity (same order as [`Entities`]).
#[derive(Debug, Default)]
pub struct Touched {
    /// Keys folded again from all their events.
    keys: Vec<BTreeSet<String>>,
    /// Accepted events, applied to their keys' rows.
    new: Vec<Vec<Uuid>>,
    /// Their keys, for the locks.
    new_keys: Vec<BTreeSet<String>>,
}

/// What [`fold_sql::apply_new`] returns.
#[derive(QueryableByName)]
struct Applied {
    /// Keys whose row a new event predates: folded again instead.
    #[diesel(sql_type = Array<Text>)]
    stale: Vec<String>,
}

impl Projections {
    /// The projections of these entities.
    pub fn new(entities: Entities) -> Self {
        let refresh = entities.0.iter().map(fold_sql::refresh).collect();
        let apply_new = entities.0.iter().map(fold_sql::apply_new).collect();
        Projections { entities, refresh, apply_new }
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
    ///
    /// An entity whose table or a column is new is backfilled from the events already
    /// stored, in the same transaction: from then on a key has a state row exactly when
    /// it has events that count, which the incremental fold relies on.
    pub fn ensure_tables(&self, conn: &mut PgConnection) -> QueryResult<()> {
        if self.missing_ddl(conn)?.iter().all(|(_, missing)| missing.is_empty()) {
            return Ok(());
        }
        conn.transaction(|c| {
            diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext('eventline state tables'))")
                .execute(c)?;
            for (entity, statements) in self.missing_ddl(c)? {
                if statements.is_empty() {
                    continue;
                }
                for statement in statements {
                    diesel::sql_query(statement).execute(c)?;
                }
                let folded = diesel::sql_query(fold_sql::backfill(entity)).execute(c)?;
                log::info!("state of {}: {folded} keys folded from the stored events", entity.name);
            }
            Ok(())
        })
    }

    /// The statements that make what the database lacks, per entity.
    fn missing_ddl(
        &self,
        conn: &mut PgConnection,
    ) -> QueryResult<Vec<(&crate::projections::declaration::Entity, Vec<String>)>> {
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
        for (entity, ddl) in self.entities.0.iter().zip(ddls) {
            let has = |column: &str| held.contains(&format!("{}.{column}", ddl.table));
            // The index first: the backfill reads the events through it.
            let mut statements = Vec::new();
            if !held.contains(&ddl.index) {
                statements.push(ddl.create_index);
            }
            if !has("event_count") {
                statements.push(ddl.create_table.clone());
            }
            let columns = ddl.columns.into_iter().filter(|(c, _)| !has(c)).map(|(_, sql)| sql);
            statements.extend(columns);
            missing.push((entity, statements));
        }
        Ok(missing)
    }

    /// An empty set of touched keys.
    pub fn touched(&self) -> Touched {
        let n = self.entities.0.len();
        Touched {
            keys: vec![BTreeSet::new(); n],
            new: vec![Vec::new(); n],
            new_keys: vec![BTreeSet::new(); n],
        }
    }

    /// The entity an event type belongs to.
    fn entity_of(&self, event_type: &str) -> Option<usize> {
        self.entities.0.iter().position(|e| e.event_types.iter().any(|t| t == event_type))
    }

    /// Notes that an event of `event_type` keyed `key` changed: its key is folded again.
    pub fn touch(&self, touched: &mut Touched, event_type: &str, key: Option<&str>) {
        let Some(key) = key else { return };
        if let Some(i) = self.entity_of(event_type) {
            touched.keys[i].insert(key.to_string());
        }
    }

    /// Notes an accepted event: applied to its key's row.
    pub fn touch_new(&self, touched: &mut Touched, event_type: &str, key: Option<&str>, id: Uuid) {
        let Some(key) = key else { return };
        if let Some(i) = self.entity_of(event_type) {
            touched.new[i].push(id);
            touched.new_keys[i].insert(key.to_string());
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

    /// Applies the new events to their keys' rows, and folds the other touched keys
    /// (with those a new event predates) again. Keys go in sorted, so two writers
    /// touching the same keys lock their rows in one order.
    pub fn refresh(&self, conn: &mut PgConnection, touched: &Touched) -> QueryResult<()> {
        // Another process's writer may be folding the same key: each waits for the
        // other's commit (a transaction-scoped lock on the key's bucket), so that its fold, a new
        // statement, sees the other's events. Without it both would fold without the
        // other's uncommitted events and the last to commit would win.
        let locks: Vec<String> = self
            .entities
            .0
            .iter()
            .zip(touched.keys.iter().zip(&touched.new_keys))
            .flat_map(|(entity, (keys, new))| {
                keys.union(new).map(move |k| format!("{}:{k}", entity.name))
            })
            .collect();
        if locks.is_empty() {
            return Ok(());
        }
        prepared(LOCK_KEYS).bind::<Array<Text>, _>(&locks).execute(conn)?;
        for (i, keys) in touched.keys.iter().enumerate() {
            let mut keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let stale = match touched.new[i].is_empty() {
                true => Vec::new(),
                false => {
                    let applied: Applied = prepared(&self.apply_new[i])
                        .bind::<Array<SqlUuid>, _>(&touched.new[i])
                        .bind::<Array<Text>, _>(&keys)
                        .get_result(conn)?;
                    applied.stale
                }
            };
            keys.extend(stale.iter().map(String::as_str));
            if !keys.is_empty() {
                keys.sort_unstable();
                prepared(&self.refresh[i]).bind::<Array<Text>, _>(&keys).execute(conn)?;
            }
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
