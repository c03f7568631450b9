//! `eventline state ENTITY ID`: one entity's current state and the events that made it,
//! oldest first, with the ones that no longer count marked (invalidated, or before the
//! entity's latest tombstone).

use crate::db;
use crate::projections::fold_sql::{ident, literal};
use crate::settings::Settings;
use crate::stages::contract::Contracts;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};

/// Why `eventline state` failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The contracts did not load.
    #[error(transparent)]
    Contracts(#[from] crate::stages::contract::ContractLoadError),
    /// No contract declares that entity.
    #[error("no contract declares the entity '{name}' (x-entity); known: {known}")]
    UnknownEntity {
        /// The name asked for.
        name: String,
        /// The names the contracts declare.
        known: String,
    },
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// A query failed.
    #[error("reading the state: {0}")]
    Query(#[from] diesel::result::Error),
    /// Standard output failed.
    #[error("writing the output: {0}")]
    Output(#[from] std::io::Error),
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
}

#[derive(QueryableByName)]
struct EventLine {
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = Text)]
    event_type: String,
    #[diesel(sql_type = Timestamptz)]
    occurred_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
    #[diesel(sql_type = Bool)]
    is_valid: bool,
    #[diesel(sql_type = Bool)]
    before_tombstone: bool,
    #[diesel(sql_type = Text)]
    fields: String,
}

#[derive(QueryableByName)]
struct Tombstone {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    deleted_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Prints the state of `entity` `id` (as JSON with `json`); exit code 0 when it has a
/// state row, 1 when not.
pub fn run(settings: &Settings, entity: &str, id: &str, json: bool) -> Result<i32, StateError> {
    let contracts = Contracts::load(&settings.pipeline.contracts_dir, settings.into())?;
    let entities = contracts.entities();
    let Some(entity) = entities.named(entity) else {
        let known: Vec<&str> = entities.0.iter().map(|e| e.name.as_str()).collect();
        return Err(StateError::UnknownEntity { name: entity.into(), known: known.join(", ") });
    };
    let pool = db::pool(&settings.postgres);
    let mut conn = db::conn(&pool)?;
    let state: Option<String> = diesel::sql_query(format!(
        "SELECT to_jsonb(s)::text AS state FROM {} s WHERE {} = $1",
        ident(&entity.table()),
        ident(&entity.key)
    ))
    .bind::<Text, _>(id)
    .get_result::<StateRow>(&mut conn)
    .optional()?
    .map(|r| r.state);
    let tombstone: Tombstone = diesel::sql_query(
        "SELECT max(deleted_at) AS deleted_at FROM entity_tombstones WHERE entity_key = $1",
    )
    .bind::<Text, _>(id)
    .get_result(&mut conn)?;
    let types: Vec<String> = entity.event_types.iter().map(|t| literal(t)).collect();
    let events: Vec<EventLine> = diesel::sql_query(format!(
        "SELECT event_id::text, event_type, occurred_at, \"partition\", \"offset\", is_valid, \
                occurred_at <= coalesce($2, '-infinity') AS before_tombstone, \
                coalesce(normalized, payload)::text AS fields \
         FROM events WHERE event_type IN ({}) AND coalesce(normalized, payload)->>{} = $1 \
         ORDER BY occurred_at, \"offset\", \"partition\", event_id",
        types.join(", "),
        literal(&entity.key)
    ))
    .bind::<Text, _>(id)
    .bind::<Nullable<Timestamptz>, _>(tombstone.deleted_at)
    .load(&mut conn)?;

    let mut out = String::new();
    if json {
        let state: serde_json::Value =
            state.as_deref().and_then(|s| serde_json::from_str(s).ok()).unwrap_or_default();
        let events: Vec<serde_json::Value> = events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "event_id": e.event_id, "event_type": e.event_type,
                    "occurred_at": e.occurred_at.to_rfc3339(), "partition": e.partition,
                    "offset": e.offset, "counts": e.is_valid && !e.before_tombstone,
                    "fields": serde_json::from_str::<serde_json::Value>(&e.fields).unwrap_or_default(),
                })
            })
            .collect();
        let doc =
            serde_json::json!({"entity": entity.name, "key": id, "state": state, "events": events});
        out.push_str(&format!("{doc}\n"));
    } else {
        out.push_str(&format!("{} {id} ({})\n", entity.name, entity.table()));
        match &state {
            Some(state) => {
                let fields: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(state).unwrap_or_default();
                let width = fields.keys().map(String::len).max().unwrap_or(0);
                for (name, value) in &fields {
                    let shown = match value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    out.push_str(&format!("  {name:width$}  {shown}\n"));
                }
            }
            None => out.push_str("  no state (no event of it counts)\n"),
        }
        if let Some(at) = tombstone.deleted_at {
            out.push_str(&format!(
                "  tombstone at {}: earlier events no longer count\n",
                at.to_rfc3339()
            ));
        }
        out.push_str(&format!("events ({}, oldest first):\n", events.len()));
        for e in &events {
            let mark = match (e.is_valid, e.before_tombstone) {
                (false, _) => "  [invalidated]",
                (true, true) => "  [before tombstone]",
                _ => "",
            };
            out.push_str(&format!(
                "  {}  {:<26} {}  p{}@{}{mark}\n    {}\n",
                e.occurred_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                e.event_type,
                e.event_id,
                e.partition,
                e.offset,
                e.fields
            ));
        }
    }
    crate::cli::console::out(&out)?;
    Ok(if state.is_some() { 0 } else { 1 })
}
