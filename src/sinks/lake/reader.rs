//! Reads back what the lake published (only `event_type=*/…/*.parquet`, never staged
//! files), for drills and reconciliation.

use arrow::array::{Array, StringArray, TimestampMicrosecondArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
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
/// when `None`).
pub fn read_rows(
    root: &Path,
    topic: Option<&str>,
) -> Result<Vec<LakeRow>, parquet::errors::ParquetError> {
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
        let handle = std::fs::File::open(&file)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(handle)?;
        let schema = builder.parquet_schema();
        let wanted: Vec<usize> = (0..schema.num_columns())
            .filter(|i| matches!(schema.column(*i).name(), "event_id" | "occurred_at"))
            .collect();
        let mask = ProjectionMask::leaves(schema, wanted);
        for batch in builder.with_projection(mask).build()? {
            let batch = batch.map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
            let ids = batch
                .column_by_name("event_id")
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned());
            let times = batch
                .column_by_name("occurred_at")
                .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>().cloned());
            let (Some(ids), Some(times)) = (ids, times) else { continue };
            for i in 0..ids.len() {
                rows.push(LakeRow {
                    event_type: event_type.clone(),
                    day: day.clone(),
                    event_id: ids.value(i).to_string(),
                    occurred_at_us: times.value(i),
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
