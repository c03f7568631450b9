//! Reads back what the lake published (only `event_type=*/…/*.parquet`, never staged
//! files), for drills and reconciliation, the way the README's query does: deleted
//! events left out, invalidated ones marked.

use crate::sinks::lake::layout::RETRACTIONS_DIR;
use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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

/// Reads every retraction file under `root/_retractions/`.
pub fn read_retractions(root: &Path) -> Result<Retracted, ParquetError> {
    let dir = root.join(RETRACTIONS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Retracted::default()),
        Err(e) => return Err(ParquetError::External(Box::new(e))),
    };
    let mut retracted = Retracted::default();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_none_or(|e| e != "retractions") {
            continue;
        }
        for batch in read_columns(&path, &["event_id", "action"])? {
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
pub fn read_columns(path: &Path, columns: &[&str]) -> Result<Vec<RecordBatch>, ParquetError> {
    let handle = std::fs::File::open(path).map_err(|e| ParquetError::External(Box::new(e)))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(handle)?;
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

/// Every published data file under `root`, sorted.
pub fn data_files(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "_eventline") {
                continue;
            }
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &mut out);
    out.sort();
    out
}

fn hive_value(path: &Path, key: &str) -> String {
    path.components()
        .filter_map(|c| c.as_os_str().to_str())
        .find_map(|c| c.strip_prefix(&format!("{key}=")).map(String::from))
        .unwrap_or_default()
}

/// The source topic of a data file, from its name `{topic}-{partition}-{first}-{last}.parquet`.
pub fn file_topic(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let mut parts = stem.rsplitn(4, '-');
    let (_last, _first, _partition) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next().map(String::from)
}

/// Reads `event_id` and `occurred_at` of every published row of `topic` (all topics
/// when `None`) that was not deleted, and whether it was invalidated.
pub fn read_rows(root: &Path, topic: Option<&str>) -> Result<Vec<LakeRow>, ParquetError> {
    let retracted = read_retractions(root)?;
    let mut rows = Vec::new();
    for file in data_files(root)
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
        for batch in read_columns(&file, &["event_id", "occurred_at"])? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_comes_from_the_file_name_even_with_dashes() {
        let name = Path::new("event_type=x/year=2026/month=01/day=01/crm-events.raw-2-00000000000000000010-00000000000000000019.parquet");
        assert_eq!(file_topic(name).as_deref(), Some("crm-events.raw"));
        assert_eq!(file_topic(Path::new("junk.parquet")), None);
    }
}
