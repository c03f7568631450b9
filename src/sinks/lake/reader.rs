//! Reads back what the lake's Delta tables hold (their current snapshot, never a file of
//! a flush that did not commit), for drills and reconciliation, the way the README's
//! query does: deleted events left out, invalidated ones marked.

use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::{LakeTable, TableKind};
use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use std::collections::HashSet;

/// One event as the lake holds it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LakeRow {
    /// From the Hive folder.
    pub event_type: String,
    /// `YYYY-MM-DD` from the Hive folders.
    pub day: String,
    /// The event id.
    pub event_id: String,
    /// `occurred_at`, microseconds UTC.
    pub occurred_at_us: i64,
    /// Not invalidated.
    pub valid: bool,
}

/// The event ids the lake's retraction files take back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retracted {
    /// Deleted (tombstones).
    pub deleted: HashSet<String>,
    /// Invalidated (`is_valid: false`).
    pub invalidated: HashSet<String>,
}

fn external(e: impl std::error::Error + Send + Sync + 'static) -> ParquetError {
    ParquetError::External(Box::new(e))
}

/// The files a table's current snapshot holds, as paths relative to the lake root.
pub fn table_files(store: &LakeStore, kind: TableKind) -> Result<Vec<String>, ParquetError> {
    if !store.may_hold_table(kind) {
        return Ok(Vec::new());
    }
    let table = LakeTable::open(store, kind).map_err(external)?;
    Ok(table.files().map_err(external)?.into_iter().map(|(p, _)| kind.in_lake(&p)).collect())
}

/// Reads a whole file of the lake.
pub fn read_file(store: &LakeStore, path: &str) -> Result<Bytes, ParquetError> {
    store.get(path).map_err(external)
}

/// Reads every retraction the lake's retractions table holds.
pub fn read_retractions(store: &LakeStore) -> Result<Retracted, ParquetError> {
    let mut retracted = Retracted::default();
    for path in table_files(store, TableKind::Retractions)? {
        for batch in read_columns(read_file(store, &path)?, &["event_id", "action"])? {
            let column = |name| {
                batch.column_by_name(name).and_then(|c| c.as_any().downcast_ref::<StringArray>())
            };
            let (Some(ids), Some(actions)) = (column("event_id"), column("action")) else {
                continue;
            };
            for i in 0..batch.num_rows() {
                let set = match actions.value(i) {
                    "deleted" => &mut retracted.deleted,
                    _ => &mut retracted.invalidated,
                };
                set.insert(ids.value(i).to_string());
            }
        }
    }
    Ok(retracted)
}

/// The record batches of one Parquet file, only `columns` of them.
pub fn read_columns(file: Bytes, columns: &[&str]) -> Result<Vec<RecordBatch>, ParquetError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.parquet_schema();
    let wanted: Vec<usize> =
        (0..schema.num_columns()).filter(|i| columns.contains(&schema.column(*i).name())).collect();
    let mask = ProjectionMask::leaves(schema, wanted);
    builder
        .with_projection(mask)
        .build()?
        .map(|b| b.map_err(|e| ParquetError::External(Box::new(e))))
        .collect()
}

/// Every data file the events table holds, relative to the lake root, sorted (none
/// when there is no lake yet).
pub fn data_files(store: &LakeStore) -> Result<Vec<String>, ParquetError> {
    let mut files = table_files(store, TableKind::Events)?;
    files.sort();
    Ok(files)
}

fn hive_value(path: &str, key: &str) -> String {
    path.split('/')
        .find_map(|c| c.strip_prefix(&format!("{key}=")).map(String::from))
        .unwrap_or_default()
}

/// The source topic of a data file, from its name.
pub fn file_topic(path: &str) -> Option<String> {
    let name = path.rsplit('/').next()?;
    crate::sinks::lake::layout::parse_file_name(name).map(|origin| origin.topic)
}

/// Reads `event_id` and `occurred_at` of every published row of `topic` (all topics
/// when `None`) that was not deleted, and whether it was invalidated.
pub fn read_rows(store: &LakeStore, topic: Option<&str>) -> Result<Vec<LakeRow>, ParquetError> {
    let retracted = read_retractions(store)?;
    let mut rows = Vec::new();
    for file in data_files(store)?
        .into_iter()
        .filter(|f| topic.is_none() || file_topic(f).as_deref() == topic)
    {
        let event_type = hive_value(&file, "event_type");
        let day = format!(
            "{}-{}-{}",
            hive_value(&file, "year"),
            hive_value(&file, "month"),
            hive_value(&file, "day")
        );
        if !store.exists(&file).map_err(external)? {
            // The table names a file someone deleted behind its back: its rows are
            // missing, which is what reconciliation is there to say, not a reason to
            // stop reading the rest.
            log::warn!("the lake's events table names {file}, which is not in the store");
            continue;
        }
        for batch in read_columns(read_file(store, &file)?, &["event_id", "occurred_at"])? {
            let ids = batch
                .column_by_name("event_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let times = batch
                .column_by_name("occurred_at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>().cloned());
            let (Some(ids), Some(times)) = (ids, times) else { continue };
            for i in 0..ids.len() {
                let event_id = ids.value(i);
                if retracted.deleted.contains(event_id) {
                    continue;
                }
                rows.push(LakeRow {
                    event_type: event_type.clone(),
                    day: day.clone(),
                    event_id: event_id.to_string(),
                    occurred_at_us: times.value(i),
                    valid: !retracted.invalidated.contains(event_id),
                });
            }
        }
    }
    Ok(rows)
}

/// The record batches of one lake file (only `columns`, when given).
pub fn read_batches(
    store: &LakeStore,
    path: &str,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    let file = read_file(store, path)?;
    match columns {
        Some(columns) => read_columns(file, columns),
        None => ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?
            .map(|b| b.map_err(|e| parquet::errors::ParquetError::External(Box::new(e))))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_comes_from_the_file_name_even_with_dashes() {
        let name = "event_type=x/year=2026/month=01/day=01/crm-events.raw-2-00000000000000000010-00000000000000000019-w1.parquet";
        assert_eq!(file_topic(name).as_deref(), Some("crm-events.raw"));
        assert_eq!(file_topic("junk.parquet"), None);
    }
}
