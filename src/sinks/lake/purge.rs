//! `eventline lake purge`: erases deleted events from the lake files, for erasure
//! requests. The retractions table says which events were deleted; every data file
//! holding one is rewritten without it, as a new file beside it, and the events table
//! swaps the two in one Delta commit (remove + add). The replaced file is then deleted,
//! so the erased rows are gone from the disk, not only from the table's current
//! version (a reader still reading that old version at that moment fails, rather than
//! reading rows the purge was asked to erase).
//!
//! Nothing else changes: the partitions' progress (txn) and every other row stay as
//! they were, so exactly-once holds while a processor runs. Events deleted later need
//! a later purge. Run one purge at a time.

use crate::sinks::lake::files::{encode_parquet, FileFormat, LakeFileError};
use crate::sinks::lake::layout::{file_name, is_rewrite, parse_file_name, PURGE_TAG};
use crate::sinks::lake::reader::{read_batches, read_retractions};
use crate::sinks::lake::store::{LakeStore, StoreError};
use crate::sinks::lake::table::{add_action, CommitAttempt, LakeTable, LakeTableError, TableKind};
use arrow::array::{Array, BooleanArray, StringArray};
use arrow::record_batch::RecordBatch;
use deltalake_core::kernel::Action;
use deltalake_core::protocol::DeltaOperation;
use std::collections::HashSet;
use std::path::PathBuf;

/// What a purge did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PurgeReport {
    /// Event ids the retractions table records as deleted.
    pub deleted_ids: usize,
    /// Data files read.
    pub files_scanned: usize,
    /// Data files rewritten without their deleted rows.
    pub files_rewritten: Vec<PathBuf>,
    /// Rows erased.
    pub rows_removed: u64,
    /// Files of an interrupted purge (never committed), removed.
    pub leftovers_removed: usize,
}

/// Why a purge stopped. Files it had already swapped stay swapped: running it again
/// finishes the work.
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
    /// Removing a replaced file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The events table could not be read or committed to.
    #[error("{0}")]
    Table(#[from] LakeTableError),
    /// Other writers kept changing the files being swapped.
    #[error("the events table kept changing under the purge; run it again")]
    Contended,
}

/// Erases every deleted event's rows from the lake under `root`.
pub fn purge(
    store: &LakeStore,
    format: FileFormat,
    dry_run: bool,
) -> Result<PurgeReport, PurgeError> {
    let deleted = read_retractions(store)
        .map_err(|source| PurgeError::Read { path: TableKind::Retractions.dir().into(), source })?
        .deleted;
    let mut report = PurgeReport { deleted_ids: deleted.len(), ..PurgeReport::default() };
    if !store.may_hold_table(TableKind::Events) {
        return Ok(report);
    }
    let mut table = LakeTable::open(store, TableKind::Events)?;
    let held: Vec<String> = table.files()?.into_iter().map(|(p, _)| p).collect();
    if !dry_run {
        report.leftovers_removed = remove_leftovers(store, &held)?;
    }
    if deleted.is_empty() {
        return Ok(report);
    }
    let mut swaps: Vec<(String, deltalake_core::kernel::Add, String)> = Vec::new();
    for relative in &held {
        let file = PathBuf::from(relative);
        report.files_scanned += 1;
        let read = |source| PurgeError::Read { path: file.clone(), source };
        let batches = read_batches(store, relative, None).map_err(read)?;
        let keep: Vec<BooleanArray> = batches.iter().map(|b| keep_mask(b, &deleted)).collect();
        let removed: usize = keep.iter().map(|m| m.len() - m.true_count()).sum();
        if removed == 0 {
            continue;
        }
        report.rows_removed += removed as u64;
        report.files_rewritten.push(PathBuf::from(relative));
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
        let new_relative = rewritten_name(relative);
        let bytes = encode_parquet(&all, format)
            .map_err(|source| PurgeError::Write { path: file.clone(), source })?;
        let size = store.put(&new_relative, bytes)?;
        let values = table.partition_values(relative)?.unwrap_or_default();
        let add = add_action(new_relative.clone(), values, size, all.num_rows());
        swaps.push((relative.clone(), add, new_relative));
    }
    if swaps.is_empty() {
        return Ok(report);
    }
    if let Err(e) = swap(&mut table, &swaps) {
        for (_, _, new_path) in &swaps {
            let _ = store.delete(new_path);
        }
        return Err(e);
    }
    for (old, _, _) in &swaps {
        store.delete(old)?;
    }
    Ok(report)
}

/// The rewritten file's path: the same folder, source and range, the purge's tag.
fn rewritten_name(relative: &str) -> String {
    let (dir, name) = relative.rsplit_once('/').unwrap_or(("", relative));
    let tag = format!("{PURGE_TAG}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let new_name = match parse_file_name(name) {
        Some(o) => file_name(&o.topic, o.partition, (o.first, o.last), &tag, "parquet"),
        None => format!("{}-{tag}.parquet", name.trim_end_matches(".parquet")),
    };
    match dir {
        "" => new_name,
        dir => format!("{dir}/{new_name}"),
    }
}

/// Swaps each old file for its rewrite in one commit, retried on a newer snapshot while
/// every old file is still there (a processor only adds files meanwhile).
fn swap(
    table: &mut LakeTable,
    swaps: &[(String, deltalake_core::kernel::Add, String)],
) -> Result<(), PurgeError> {
    for _ in 0..50 {
        let mut actions: Vec<Action> = Vec::new();
        for (old, add, _) in swaps {
            let Some(remove) = table.remove_action(old)? else { return Err(PurgeError::Contended) };
            actions.push(remove.into());
            actions.push(add.clone().into());
        }
        let operation = DeltaOperation::Delete { predicate: None };
        if let CommitAttempt::Landed(_) = table.try_commit(actions, &[], operation)? {
            return Ok(());
        }
        table.refresh()?;
    }
    Err(PurgeError::Contended)
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

/// Removes the files of an interrupted purge: written, never committed.
fn remove_leftovers(store: &LakeStore, held: &[String]) -> Result<usize, PurgeError> {
    let held: HashSet<&str> = held.iter().map(String::as_str).collect();
    let mut removed = 0;
    for file in store.table_files(TableKind::Events)? {
        let name = file.path.rsplit('/').next().unwrap_or_default();
        let purge_file = is_rewrite(name);
        if purge_file && !held.contains(file.path.as_str()) {
            store.delete(&file.path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Coords, Event, Retraction};
    use crate::sinks::lake::files::{retractions_to_record_batch, to_record_batch, Action};

    const FORMAT: FileFormat = FileFormat { row_group_rows: 2, zstd_level: 1 };

    fn event(offset: i64) -> Event {
        Event::fixture(Coords { topic: "t".into(), partition: 0, offset }, "{}")
    }

    fn retraction(event: &Event, offset: i64) -> Retraction {
        Retraction {
            event_id: event.event_id,
            coords: Coords { topic: "t".into(), partition: 1, offset },
            kafka_timestamp_ms: None,
            received_at_ms: 0,
            event_type: None,
            target: None,
            entity_key: None,
        }
    }

    fn ids_in(store: &LakeStore, path: &str) -> Vec<String> {
        read_batches(store, path, Some(&["event_id"]))
            .unwrap()
            .iter()
            .flat_map(|b| {
                let ids = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                (0..ids.len()).map(move |i| ids.value(i).to_string())
            })
            .collect()
    }

    /// Writes `batch` as `relative` under the table's root and commits it.
    fn commit_file(store: &LakeStore, kind: TableKind, relative: &str, batch: &RecordBatch) {
        let mut table = LakeTable::open(store, kind).unwrap();
        let size =
            store.put(&kind.in_lake(relative), encode_parquet(batch, FORMAT).unwrap()).unwrap();
        let values = match kind {
            TableKind::Events => crate::sinks::lake::layout::partition_values(
                "account_created",
                chrono::NaiveDate::from_ymd_opt(2025, 11, 22).unwrap(),
            ),
            TableKind::Retractions | TableKind::DeadLetters => Default::default(),
        };
        let add = add_action(relative.to_string(), values, size, batch.num_rows());
        let operation = crate::sinks::lake::table::append_operation(kind);
        let landed = table.try_commit(vec![add.into()], &[("t", 0, 9)], operation).unwrap();
        assert!(matches!(landed, CommitAttempt::Landed(_)));
    }

    #[test]
    fn only_deleted_rows_are_erased_and_a_second_purge_finds_nothing() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let store = &LakeStore::local(root).unwrap();
        let events: Vec<Event> = (0..5).map(event).collect();
        let relative = "event_type=account_created/year=2025/month=11/day=22/t-0-00000000000000000000-00000000000000000004-w1.parquet";
        let refs: Vec<&Event> = events.iter().collect();
        commit_file(
            store,
            TableKind::Events,
            relative,
            &to_record_batch(&refs, 0, &Default::default()).unwrap(),
        );
        let (gone, invalid) = (retraction(&events[1], 7), retraction(&events[3], 8));
        let rows = [(&gone, Action::Deleted), (&invalid, Action::Invalidated)];
        let name = crate::sinks::lake::layout::retraction_file_name("t", 1, 7, 8, "w1");
        commit_file(
            store,
            TableKind::Retractions,
            &name,
            &retractions_to_record_batch(&rows).unwrap(),
        );
        let leftover = root.join("event_type=account_created/year=2025/month=11/day=22/t-0-00000000000000000000-00000000000000000004-purge0000.parquet");
        std::fs::write(&leftover, b"half").unwrap();

        let dry = purge(store, FORMAT, true).unwrap();
        assert_eq!((dry.rows_removed, dry.leftovers_removed), (1, 0));
        assert_eq!(ids_in(store, relative).len(), 5, "a dry run changes nothing");

        let report = purge(store, FORMAT, false).unwrap();
        assert_eq!((report.deleted_ids, report.rows_removed, report.leftovers_removed), (1, 1, 1));
        assert!(!root.join(relative).exists(), "the replaced file is erased from the disk");
        let files = crate::sinks::lake::reader::data_files(store).unwrap();
        assert_eq!(files.len(), 1, "{files:?}");
        let expected: Vec<String> =
            [0, 2, 3, 4].iter().map(|i| events[*i].event_id.to_string()).collect();
        assert_eq!(
            ids_in(store, &files[0]),
            expected,
            "the invalidated event stays, the deleted one goes"
        );
        assert_eq!(purge(store, FORMAT, false).unwrap().rows_removed, 0);
    }
}
