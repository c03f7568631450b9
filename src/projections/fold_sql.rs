//! The SQL of one entity's current-state table: its DDL, and the statement that folds
//! the touched keys' events into their state rows again.
//!
//! The state of a key is always recomputed from the events that count (stored, still
//! valid, after the key's latest entity tombstone), never patched: so an invalidation
//! or deletion leaves the state as if that event had never arrived, a late event lands
//! where its time puts it, and a replay rebuilds the same rows. Pure logic: strings in,
//! strings out.

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

/// One statement, bound to `$1` (the touched keys, `text[]`), that recomputes those
/// keys' state rows from their events and deletes the rows of keys none of whose
/// events count any more.
pub fn refresh(entity: &Entity) -> String {
    let table = ident(&entity.table());
    let key = ident(&entity.key);
    let key_of = format!("{FIELDS}->>{}", literal(&entity.key));
    let mut columns = vec![
        key.clone(),
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
        "WITH touched AS (SELECT DISTINCT k FROM unnest($1::text[]) AS t(k)), \
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
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
