//! The SQL of one entity's current-state table: its DDL, and the statement that folds
//! the touched keys' events into their state rows again.
//!
//! The state of a key is the fold of the events that count (stored, still valid, after
//! the key's latest entity tombstone). New events newer than a key's row are applied
//! to the row ([`apply_new`]: latest, first, sum, min, max and the count are all
//! incremental), so a write costs the same however long the key's history. Anything
//! else recomputes the key from its events ([`refresh`]): an invalidation or deletion
//! leaves the state as if that event had never arrived, a late event lands where its
//! time puts it, and a replay rebuilds the same rows. Pure logic: strings in, strings
//! out.

use crate::payload_fields::FieldType;
use crate::projections::declaration::{Entity, Fold, StateField};

/// `name` as a quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The Postgres type of a field type.
pub fn pg_type(field_type: FieldType) -> &'static str {
    match field_type {
        FieldType::Text => "text",
        FieldType::Integer => "bigint",
        FieldType::Double => "double precision",
        // Unconstrained: a value too large for the contract's scale must not fail a write.
        FieldType::Decimal { .. } => "numeric",
        FieldType::Boolean => "boolean",
        FieldType::Timestamp => "timestamptz",
        FieldType::Date => "date",
        FieldType::Json => "jsonb",
    }
}

/// The fields of an event as stored: normalised when transforms made them.
const FIELDS: &str = "coalesce(normalized, payload)";

/// Newest first; ties by offset, then partition and id, so the order is total.
const NEWEST_FIRST: &str = "occurred_at DESC, \"offset\" DESC, \"partition\" DESC, event_id DESC";

/// What one entity's state needs in the database: its table, its columns, and the index
/// the fold reads events by, each with the statement that makes it (safe to run again).
#[derive(Debug, Clone, PartialEq)]
pub struct Ddl {
    /// The state table's name.
    pub table: String,
    /// `CREATE TABLE IF NOT EXISTS ...` with the key and bookkeeping columns.
    pub create_table: String,
    /// (column, `ALTER TABLE ... ADD COLUMN IF NOT EXISTS ...`) per field.
    pub columns: Vec<(String, String)>,
    /// The index's name.
    pub index: String,
    /// `CREATE INDEX IF NOT EXISTS ...` on `events`.
    pub create_index: String,
}

/// The DDL of `entity`'s state.
pub fn ddl(entity: &Entity) -> Ddl {
    let name = entity.table();
    let table = ident(&name);
    let key = ident(&entity.key);
    let index = format!("events_{}_key", entity.name);
    Ddl {
        create_table: format!(
            "CREATE TABLE IF NOT EXISTS {table} ({key} text PRIMARY KEY, \
             last_event_at timestamptz NOT NULL, last_event_id uuid NOT NULL, \
             last_event_type text NOT NULL, event_count integer NOT NULL)"
        ),
        columns: entity
            .fields
            .iter()
            .map(|f| {
                let sql = format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {}",
                    ident(&f.column),
                    pg_type(f.field_type)
                );
                (f.column.clone(), sql)
            })
            .collect(),
        create_index: format!(
            "CREATE INDEX IF NOT EXISTS {} ON events (({FIELDS}->>{})) WHERE event_type IN ({})",
            ident(&index),
            literal(&entity.key),
            event_type_list(entity)
        ),
        index,
        table: name,
    }
}

fn event_type_list(entity: &Entity) -> String {
    entity.event_types.iter().map(|t| literal(t)).collect::<Vec<_>>().join(", ")
}

/// `jsonb` -> the column's type.
fn cast(json: &str, field_type: FieldType) -> String {
    match field_type {
        FieldType::Json => json.to_string(),
        FieldType::Text => format!("({json} #>> '{{}}')"),
        other => format!("({json} #>> '{{}}')::{}", pg_type(other)),
    }
}

/// The aggregate that folds one field over a key's events (`f` is their fields), which
/// arrive newest first.
fn fold_expression(field: &StateField) -> String {
    let value = format!("f->{}", literal(&field.field));
    let present = format!("coalesce(jsonb_typeof({value}), 'null') <> 'null'");
    let typed = cast(&value, field.field_type);
    let picked = format!("array_agg({value}) FILTER (WHERE {present})");
    match field.fold {
        Fold::Latest => cast(&format!("({picked})[1]"), field.field_type),
        // The oldest present value is the last one: index by how many are present.
        Fold::First => cast(
            &format!("({picked})[(count(*) FILTER (WHERE {present}))::integer]"),
            field.field_type,
        ),
        Fold::Sum => format!("sum({typed}) FILTER (WHERE {present})"),
        Fold::Max => format!("max({typed}) FILTER (WHERE {present})"),
        Fold::Min => format!("min({typed}) FILTER (WHERE {present})"),
        Fold::Ignore => "NULL".into(),
    }
}

/// The state columns in table order, and what folds each over a key's events (newest
/// first): the key, the bookkeeping columns, then one per field.
fn folded_columns(entity: &Entity) -> (Vec<String>, Vec<String>) {
    let mut columns = vec![
        ident(&entity.key),
        "last_event_at".into(),
        "last_event_id".into(),
        "last_event_type".into(),
        "event_count".into(),
    ];
    let mut folded = vec![
        "max(occurred_at)".to_string(),
        "(array_agg(event_id))[1]".into(),
        "(array_agg(event_type))[1]".into(),
        "count(*)::integer AS event_count".into(),
    ];
    for f in &entity.fields {
        columns.push(ident(&f.column));
        folded.push(fold_expression(f));
    }
    (columns, folded)
}

/// One statement, bound to `$1` (the touched keys, `text[]`), that recomputes those
/// keys' state rows from their events and deletes the rows of keys none of whose
/// events count any more.
pub fn refresh(entity: &Entity) -> String {
    recompute(entity, "SELECT DISTINCT k FROM unnest($1::text[]) AS t(k)")
}

/// One statement, bound to nothing, that recomputes the state of every key the events
/// hold: at start, once, when an entity or a field is new, so that from then on a state
/// row exists exactly when its key has events that count (what [`apply_new`] relies on).
pub fn backfill(entity: &Entity) -> String {
    let key_of = format!("{FIELDS}->>{}", literal(&entity.key));
    let types = event_type_list(entity);
    recompute(
        entity,
        &format!(
            "SELECT DISTINCT {key_of} AS k FROM events \
             WHERE event_type IN ({types}) AND {key_of} IS NOT NULL"
        ),
    )
}

/// The fold from all the events of the keys `touched` (a query of one column, `k`).
fn recompute(entity: &Entity, touched: &str) -> String {
    let table = ident(&entity.table());
    let key = ident(&entity.key);
    let key_of = format!("{FIELDS}->>{}", literal(&entity.key));
    let (columns, folded) = folded_columns(entity);
    let updates: Vec<String> =
        columns.iter().skip(1).map(|c| format!("{c} = EXCLUDED.{c}")).collect();
    format!(
        // Per touched key (a lateral subquery, so each is one index lookup): the key's
        // tombstone cut, then its events sorted newest first once and folded by
        // aggregates that take them in that order. The aggregates carry no ORDER BY of
        // their own: Postgres 15 sorts for each such aggregate apart (ten sorts per key
        // for accounts). An aggregate reading a sorted subquery gets its rows in that
        // order (the subquery is not flattened: it has an ORDER BY); the current-state
        // tests check ties by offset, first and latest against a fold of their own.
        // A key none of whose events count folds to zero events: its row is deleted.
        "WITH touched AS ({touched}), \
         folded AS ( \
             SELECT t.k, s.* FROM touched t \
             CROSS JOIN LATERAL (SELECT max(deleted_at) AS cut FROM entity_tombstones \
                                 WHERE entity_key = t.k AND (entity IS NULL OR entity = {name})) c \
             CROSS JOIN LATERAL ( \
                 SELECT {folded} FROM ( \
                     SELECT {FIELDS} AS f, occurred_at, event_id, event_type FROM events \
                     WHERE event_type IN ({types}) AND {key_of} = t.k AND is_valid \
                       AND occurred_at > coalesce(c.cut, '-infinity') \
                     ORDER BY {NEWEST_FIRST} \
                 ) e \
             ) s \
             WHERE s.event_count > 0 \
         ), \
         gone AS ( \
             DELETE FROM {table} s USING touched t \
             WHERE s.{key} = t.k AND NOT EXISTS (SELECT 1 FROM folded WHERE folded.k = t.k) \
             RETURNING 1 \
         ) \
         INSERT INTO {table} ({columns}) SELECT * FROM folded ORDER BY k \
         ON CONFLICT ({key}) DO UPDATE SET {updates}",
        types = event_type_list(entity),
        name = literal(&entity.name),
        folded = folded.join(", "),
        columns = columns.join(", "),
        updates = updates.join(", "),
    )
}

/// How a field's stored value and the value folded from newer events combine (`s` is
/// the stored row, `EXCLUDED` the new events' fold). Every fold is incremental when the
/// new events are all newer than the row's: the latest present value wins, the first
/// stays, sums add (NULL when no event had the field), `greatest` and `least` skip NULL.
fn merge_expression(field: &StateField) -> String {
    let c = ident(&field.column);
    match field.fold {
        Fold::Latest => format!("coalesce(EXCLUDED.{c}, s.{c})"),
        Fold::First => format!("coalesce(s.{c}, EXCLUDED.{c})"),
        Fold::Sum => format!(
            "CASE WHEN s.{c} IS NULL THEN EXCLUDED.{c} WHEN EXCLUDED.{c} IS NULL THEN s.{c} \
             ELSE s.{c} + EXCLUDED.{c} END"
        ),
        Fold::Max => format!("greatest(s.{c}, EXCLUDED.{c})"),
        Fold::Min => format!("least(s.{c}, EXCLUDED.{c})"),
        Fold::Ignore => "NULL".into(),
    }
}

/// One statement that applies a write's new events to their keys' state rows without
/// reading the keys' history, so its cost does not grow with it. Bound to `$1` (the
/// write's accepted event ids, `uuid[]`) and `$2` (keys the write recomputes anyway,
/// `text[]`, left out). It reads the new events back from `events` after the write's
/// bookkeeping, so one invalidated or deleted before it arrived does not count, and
/// drops those at or before the key's tombstone cut. A key whose row is not older than
/// every new event (a late event, or a tie in time) cannot take the shortcut: its key
/// is returned (`stale`) for [`refresh`]. A key with no row has no counted events
/// (what [`backfill`] keeps true), so its new events alone are its state.
pub fn apply_new(entity: &Entity) -> String {
    let table = ident(&entity.table());
    let key = ident(&entity.key);
    let key_of = format!("{FIELDS}->>{}", literal(&entity.key));
    let (columns, folded) = folded_columns(entity);
    let mut merges = vec![
        "last_event_at = EXCLUDED.last_event_at".to_string(),
        "last_event_id = EXCLUDED.last_event_id".into(),
        "last_event_type = EXCLUDED.last_event_type".into(),
        "event_count = s.event_count + EXCLUDED.event_count".into(),
    ];
    for f in &entity.fields {
        merges.push(format!("{} = {}", ident(&f.column), merge_expression(f)));
    }
    format!(
        "WITH counted AS MATERIALIZED ( \
             SELECT {key_of} AS k, {FIELDS} AS f, occurred_at, \"offset\", \"partition\", event_id, event_type \
             FROM events \
             WHERE event_id = ANY($1::uuid[]) AND is_valid AND event_type IN ({types}) \
               AND {key_of} IS NOT NULL AND NOT ({key_of} = ANY($2::text[])) \
               AND occurred_at > coalesce((SELECT max(t.deleted_at) FROM entity_tombstones t \
                   WHERE t.entity_key = {key_of} AND (t.entity IS NULL OR t.entity = {name})), '-infinity') \
         ), \
         stale AS ( \
             SELECT c.k FROM counted c JOIN {table} s ON s.{key} = c.k \
             GROUP BY c.k, s.last_event_at HAVING min(c.occurred_at) <= s.last_event_at \
         ), \
         folded AS ( \
             SELECT k, {folded} FROM ( \
                 SELECT * FROM counted WHERE k NOT IN (SELECT k FROM stale) \
                 ORDER BY k, {NEWEST_FIRST} \
             ) e GROUP BY k \
         ), \
         merged AS ( \
             INSERT INTO {table} AS s ({columns}) SELECT * FROM folded ORDER BY k \
             ON CONFLICT ({key}) DO UPDATE SET {merges} \
         ) \
         SELECT array(SELECT k FROM stale ORDER BY k) AS stale",
        types = event_type_list(entity),
        name = literal(&entity.name),
        folded = folded.join(", "),
        columns = columns.join(", "),
        merges = merges.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> Entity {
        Entity {
            name: "order".into(),
            key: "order_id".into(),
            event_types: vec!["order_created".into(), "order_paid".into()],
            fields: vec![
                StateField {
                    field: "amount_paid".into(),
                    column: "amount_paid".into(),
                    field_type: FieldType::Decimal { scale: 2 },
                    fold: Fold::Sum,
                },
                StateField {
                    field: "status".into(),
                    column: "status".into(),
                    field_type: FieldType::Text,
                    fold: Fold::Latest,
                },
            ],
        }
    }

    #[test]
    fn the_table_has_the_key_bookkeeping_and_one_typed_column_per_field() {
        let ddl = ddl(&order());
        assert!(ddl.create_table.starts_with(
            "CREATE TABLE IF NOT EXISTS \"order_states\" (\"order_id\" text PRIMARY KEY"
        ));
        assert_eq!(
            ddl.columns[0].1,
            "ALTER TABLE \"order_states\" ADD COLUMN IF NOT EXISTS \"amount_paid\" numeric"
        );
        let index = &ddl.create_index;
        assert!(index.contains("WHERE event_type IN ('order_created', 'order_paid')"), "{index}");
        assert_eq!(ddl.index, "events_order_key");
    }

    #[test]
    fn folds_read_the_newest_the_sum_and_skip_absent_values() {
        let sql = refresh(&order());
        assert!(sql.contains("sum((f->'amount_paid' #>> '{}')::numeric) FILTER"), "{sql}");
        assert!(sql.contains(
            "((array_agg(f->'status') FILTER (WHERE coalesce(jsonb_typeof(f->'status'), 'null') <> 'null'))[1] #>> '{}')"
        ), "{sql}");
        assert!(
            sql.contains(
                "ORDER BY occurred_at DESC, \"offset\" DESC, \"partition\" DESC, event_id DESC ) e"
            ),
            "{sql}"
        );
        assert!(sql.contains(
            "ON CONFLICT (\"order_id\") DO UPDATE SET last_event_at = EXCLUDED.last_event_at"
        ));
    }

    #[test]
    fn new_events_merge_into_the_row_without_reading_the_history() {
        let sql = apply_new(&order());
        assert!(sql.contains("WHERE event_id = ANY($1::uuid[]) AND is_valid"), "{sql}");
        assert!(!sql.contains("= t.k AND is_valid"), "no read of the key's events: {sql}");
        assert!(sql.contains("event_count = s.event_count + EXCLUDED.event_count"), "{sql}");
        assert!(sql.contains("\"status\" = coalesce(EXCLUDED.\"status\", s.\"status\")"), "{sql}");
        assert!(sql.contains("ELSE s.\"amount_paid\" + EXCLUDED.\"amount_paid\" END"), "{sql}");
        assert!(sql.contains("HAVING min(c.occurred_at) <= s.last_event_at"), "late: {sql}");
    }

    #[test]
    fn each_fold_has_its_merge() {
        let field = |fold| StateField {
            field: "x".into(),
            column: "x".into(),
            field_type: FieldType::Integer,
            fold,
        };
        assert_eq!(merge_expression(&field(Fold::First)), "coalesce(s.\"x\", EXCLUDED.\"x\")");
        assert_eq!(merge_expression(&field(Fold::Max)), "greatest(s.\"x\", EXCLUDED.\"x\")");
        assert_eq!(merge_expression(&field(Fold::Min)), "least(s.\"x\", EXCLUDED.\"x\")");
        assert_eq!(merge_expression(&field(Fold::Ignore)), "NULL");
    }

    #[test]
    fn a_backfill_recomputes_every_key_the_events_hold() {
        let all = backfill(&order());
        assert!(all.starts_with(
            "WITH touched AS (SELECT DISTINCT coalesce(normalized, payload)->>'order_id' AS k FROM events"
        ), "{all}");
        let given = refresh(&order());
        let fold = |sql: &str| sql.split_once("), folded AS").unwrap().1.to_string();
        assert_eq!(fold(&all), fold(&given), "the same fold, over other keys");
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
