//! `eventline lake purge`: erases deleted events from the lake files, for erasure
//! requests. The lake's own retraction files say which events were deleted; every data
//! file holding one is rewritten without it, atomically (written beside the original,
//! fsynced, renamed over it), so a reader sees the old file or the new one, never half.
//!
//! Nothing else changes: the commit log, the lake's progress and every other row stay
//! as they were, so exactly-once holds. A file whose rows were all deleted stays, empty,
//! because its commit-log entry names it. Events deleted later need a later purge.

use crate::sinks::lake::commit_log::sync_dir;
use crate::sinks::lake::files::{write_parquet, FileFormat, LakeFileError};
use crate::sinks::lake::layout::RETRACTIONS_DIR;
use crate::sinks::lake::reader::{data_files, read_columns, read_retractions};
use arrow::array::{Array, BooleanArray, StringArray};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What a purge did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Event ids the retraction files record as deleted.
    pub deleted_ids: usize,
    /// Data files read.
    pub files_scanned: usize,
    /// Data files rewritten without their deleted rows.
    pub files_rewritten: Vec<PathBuf>,
    /// Rows erased.
    pub rows_removed: u64,
    /// Temporary files of an interrupted purge, removed.
    pub leftovers_removed: usize,
}

/// Why a purge stopped. Files it had already rewritten stay rewritten: running it
/// again finishes the work.
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// Writing the rewritten file failed.
    #[error("rewriting {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: LakeFileError,
    },
    /// Renaming or listing failed.
    #[error("lake I/O on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

const TMP_MARK: &str = ".purge-";

/// Erases every deleted event's rows from the lake under `root`.
pub fn purge(root: &Path, format: FileFormat, dry_run: bool) -> Result<PurgeReport, PurgeError> {
    let deleted = read_retractions(root)
        .map_err(|source| PurgeError::Read { path: root.join(RETRACTIONS_DIR), source })?
        .deleted;
    let mut report = PurgeReport { deleted_ids: deleted.len(), ..PurgeReport::default() };
    if !dry_run {
        report.leftovers_removed = remove_leftovers(root)?;
    }
    if deleted.is_empty() {
        return Ok(report);
    }
    for file in data_files(root) {
        report.files_scanned += 1;
        let read = |source| PurgeError::Read { path: file.clone(), source };
        let batches = read_batches(&file, None).map_err(read)?;
        let keep: Vec<BooleanArray> = batches.iter().map(|b| keep_mask(b, &deleted)).collect();
        let removed: usize = keep.iter().map(|m| m.len() - m.true_count()).sum();
        if removed == 0 {
            continue;
        }
        report.rows_removed += removed as u64;
        report.files_rewritten.push(file.strip_prefix(root).unwrap_or(&file).to_path_buf());
        if dry_run {
            continue;
        }
        let kept = batches
            .iter()
            .zip(&keep)
            .map(|(b, m)| arrow::compute::filter_record_batch(b, m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read(e.into()))?;
        let schema = batches[0].schema();
        let all = arrow::compute::concat_batches(&schema, &kept).map_err(|e| read(e.into()))?;
        rewrite(&file, &all, format)?;
    }
    Ok(report)
}

/// True for the rows to keep: those whose event was not deleted.
pub fn keep_mask(batch: &RecordBatch, deleted: &HashSet<String>) -> BooleanArray {
    let ids =
        batch.column_by_name("event_id").and_then(|c| c.as_any().downcast_ref::<StringArray>());
    match ids {
        Some(ids) => {
            ids.iter().map(|id| Some(!id.is_some_and(|id| deleted.contains(id)))).collect()
        }
        None => BooleanArray::from(vec![true; batch.num_rows()]),
    }
}

fn read_batches(
    path: &Path,
    columns: Option<&[&str]>,
) -> Result<Vec<RecordBatch>, parquet::errors::ParquetError> {
    match columns {
        Some(columns) => read_columns(path, columns),
        None => {
            let file = std::fs::File::open(path)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))?;
            ParquetRecordBatchReaderBuilder::try_new(file)?
                .build()?
                .map(|b| b.map_err(|e| parquet::errors::ParquetError::External(Box::new(e))))
                .collect()
        }
    }
}

/// Writes `batch` beside `path`, fsyncs it, renames it over `path`, fsyncs the folder.
fn rewrite(path: &Path, batch: &RecordBatch, format: FileFormat) -> Result<(), PurgeError> {
    let dir = path.parent().expect("data files live in a partition folder");
    let name = path.file_name().expect("a file").to_string_lossy();
    let tmp = dir.join(format!(".{name}{TMP_MARK}{}.tmp", uuid::Uuid::new_v4().simple()));
    if let Err(source) = write_parquet(&tmp, batch, format) {
        let _ = std::fs::remove_file(&tmp);
        return Err(PurgeError::Write { path: path.to_path_buf(), source });
    }
    std::fs::rename(&tmp, path)
        .map_err(|source| PurgeError::Io { path: path.to_path_buf(), source })?;
    sync_dir(dir).map_err(|e| PurgeError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Removes the temporary files an interrupted purge left (never `*.parquet`, so no
/// reader ever saw them).
fn remove_leftovers(root: &Path) -> Result<usize, PurgeError> {
    fn walk(dir: &Path, removed: &mut usize) -> Result<(), PurgeError> {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|n| n == "_eventline") {
                continue;
            }
            if path.is_dir() {
                walk(&path, removed)?;
            } else if path.to_string_lossy().contains(TMP_MARK) {
                std::fs::remove_file(&path)
                    .map_err(|source| PurgeError::Io { path: path.clone(), source })?;
                *removed += 1;
            }
        }
        Ok(())
    }
    let mut removed = 0;
    walk(root, &mut removed)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Coords, Event, Retraction};
    use crate::sinks::lake::files::{retractions_to_record_batch, to_record_batch, Action};
    use crate::sinks::lake::layout::retraction_file;

    const FORMAT: FileFormat = FileFormat { row_group_rows: 2, zstd_level: 1 };

    fn event(offset: i64) -> Event {
        Event {
            event_id: uuid::Uuid::new_v4(),
            event_type: "account_created".into(),
            schema_version: 1,
            source: "crm".into(),
            occurred_at: chrono::DateTime::from_timestamp(1_763_800_000, 0).unwrap(),
            payload: "{}".into(),
            payload_hash: "h".into(),
            coords: Coords { topic: "t".into(), partition: 0, offset },
            kafka_timestamp_ms: None,
            received_at_ms: 0,
            lateness_ms: 0,
            late: false,
            is_valid: true,
            headers: None,
            correlation_id: None,
        }
    }

    fn retraction(event: &Event, offset: i64) -> Retraction {
        Retraction {
            event_id: event.event_id,
            coords: Coords { topic: "t".into(), partition: 1, offset },
            kafka_timestamp_ms: None,
            received_at_ms: 0,
            event_type: None,
            target: None,
        }
    }

    fn ids_in(path: &Path) -> Vec<String> {
        read_batches(path, Some(&["event_id"]))
            .unwrap()
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                (0..ids.len()).map(move |i| ids.value(i).to_string())
            })
            .collect()
    }

    #[test]
    fn only_deleted_rows_are_erased_and_a_second_purge_finds_nothing() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let events: Vec<Event> = (0..5).map(event).collect();
        let dir = root.join("event_type=account_created/year=2025/month=11/day=22");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("t-0-00000000000000000000-00000000000000000004.parquet");
        let refs: Vec<&Event> = events.iter().collect();
        write_parquet(&file, &to_record_batch(&refs, 0).unwrap(), FORMAT).unwrap();
        let (gone, invalid) = (retraction(&events[1], 7), retraction(&events[3], 8));
        let rows = [(&gone, Action::Deleted), (&invalid, Action::Invalidated)];
        let retractions = root.join(retraction_file("t", 1, 7, 8));
        std::fs::create_dir_all(retractions.parent().unwrap()).unwrap();
        write_parquet(&retractions, &retractions_to_record_batch(&rows).unwrap(), FORMAT).unwrap();
        std::fs::write(dir.join(format!(".x{TMP_MARK}1.tmp")), b"half").unwrap();

        let dry = purge(root, FORMAT, true).unwrap();
        assert_eq!((dry.rows_removed, dry.leftovers_removed), (1, 0));
        assert_eq!(ids_in(&file).len(), 5, "a dry run changes nothing");

        let report = purge(root, FORMAT, false).unwrap();
        assert_eq!((report.deleted_ids, report.rows_removed, report.leftovers_removed), (1, 1, 1));
        let expected: Vec<String> =
            [0, 2, 3, 4].iter().map(|i| events[*i].event_id.to_string()).collect();
        assert_eq!(ids_in(&file), expected, "the invalidated event stays, the deleted one goes");
        assert_eq!(purge(root, FORMAT, false).unwrap().rows_removed, 0);
    }
}
