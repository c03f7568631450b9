//! The transforms' lookup tables kept in Postgres (`postgres:SCHEMA.TABLE`), read once
//! at start: a lookup never waits on the database, and the same record gives the same
//! output for the whole run.

use crate::stages::transform::ReferenceTable;
use diesel::prelude::*;

/// Why a Postgres reference table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceTableError {
    /// No such table, or one without columns.
    #[error("no table {schema}.{table} (or it has no columns)")]
    Missing {
        /// Its schema.
        schema: String,
        /// Its name.
        table: String,
    },
    /// Postgres refused a query.
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// The rows did not come back as JSON objects.
    #[error("rows not readable: {0}")]
    Rows(#[from] serde_json::Error),
}

/// Reads a Postgres reference table for the transforms' lookups
/// (`postgres:SCHEMA.TABLE`): every row, values as text, keyed by its first column.
pub fn read(conn: &mut PgConnection, name: &str) -> Result<ReferenceTable, ReferenceTableError> {
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Column {
        #[diesel(sql_type = Text)]
        column_name: String,
    }
    #[derive(QueryableByName)]
    struct Rows {
        #[diesel(sql_type = Text)]
        rows: String,
    }
    let qualified = name.strip_prefix("postgres:").unwrap_or(name);
    let (schema, table) = qualified.split_once('.').unwrap_or(("public", qualified));
    let columns: Vec<Column> = diesel::sql_query(
        "SELECT column_name::text AS column_name FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
    )
    .bind::<Text, _>(schema)
    .bind::<Text, _>(table)
    .load(conn)?;
    if columns.is_empty() {
        return Err(ReferenceTableError::Missing { schema: schema.into(), table: table.into() });
    }
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let rows: Rows = diesel::sql_query(format!(
        "SELECT coalesce(json_agg(to_jsonb(t)), '[]')::text AS rows FROM {}.{} t",
        quote(schema),
        quote(table)
    ))
    .get_result(conn)?;
    let parsed: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&rows.rows)?;
    let columns: Vec<String> = columns.into_iter().map(|c| c.column_name).collect();
    let mut table_rows = std::collections::HashMap::new();
    for row in parsed {
        let values: Vec<String> = columns
            .iter()
            .map(|c| match row.get(c) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            })
            .collect();
        table_rows.entry(values[0].clone()).or_insert(values);
    }
    Ok(ReferenceTable { name: name.into(), columns, rows: table_rows })
}
