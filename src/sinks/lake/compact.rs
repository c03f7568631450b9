//! `eventline lake compact` and `eventline lake vacuum`: fewer, larger files, and the
//! replaced ones deleted once no reader can need them.
//!
//! A busy lake gets one file per flush, per partition and per Hive folder: small files
//! that slow every reader down. Compaction merges, per Hive folder and per Kafka
//! partition, runs of consecutive small files (in offset order) into one file per run,
//! and swaps them in one Delta commit of removes and adds, both marked
//! `dataChange: false` and recorded as an `OPTIMIZE` (what delta-rs's own optimize
//! writes; its optimize needs DataFusion, which eventline does not build).
//!
//! Why this keeps the properties:
//! - the rows are the same rows: a merged file holds exactly the rows of the files it
//!   replaces, and the commit carries no `txn`, so each partition's progress stays;
//! - the commit lands on the snapshot it was planned on or not at all; when a writer
//!   committed first, the swap is planned again on the newer snapshot, and a run whose
//!   files a purge removed meanwhile is dropped (its merged file deleted);
//! - a reader in progress keeps reading the version it started on: the replaced files
//!   stay on storage as the table's tombstones until `lake vacuum` deletes those older
//!   than the retention (7 days by default, as in Delta);
//! - a merged file is named like a flush file of its whole range, with a `compact` tag,
//!   so a writer starting while a compaction runs does not take it for the orphan of a
//!   crashed flush (files with a maintenance tag get an hour of grace).

use crate::sinks::lake::files::{concat_by_name, encode_parquet, FileFormat, LakeFileError};
use crate::sinks::lake::layout::{file_name, parse_file_name, COMPACT_TAG};
use crate::sinks::lake::reader::read_batches;
use crate::sinks::lake::store::{LakeStore, StoreError};
use crate::sinks::lake::table::{add_action, CommitAttempt, LakeTable, LakeTableError, TableKind};
use deltalake_core::kernel::Action;
use deltalake_core::protocol::DeltaOperation;
use std::collections::BTreeMap;

/// One file of the events table as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFile {
    /// Path relative to the table root.
    pub path: String,
    /// Size in bytes.
    pub size: i64,
}

/// Groups the files to merge: per Hive folder and Kafka partition, in offset order,
/// runs of consecutive files smaller than `target_bytes`, each run closed once it
/// reaches `target_bytes`. Runs of one file are left alone, as are files whose names
/// say nothing of their partition and range.
pub fn plan(files: &[TableFile], target_bytes: i64) -> Vec<Vec<TableFile>> {
    // A stream: one Kafka partition's files in one Hive folder.
    type Stream = (String, String, i32);
    let mut by_stream: BTreeMap<Stream, Vec<(i64, &TableFile)>> = BTreeMap::new();
    for file in files {
        let (dir, name) = file.path.rsplit_once('/').unwrap_or(("", &file.path));
        let Some(origin) = parse_file_name(name) else { continue };
        let key = (dir.to_string(), origin.topic, origin.partition);
        by_stream.entry(key).or_default().push((origin.first, file));
    }
    let mut groups = Vec::new();
    for (_, mut stream) in by_stream {
        stream.sort_by_key(|(first, _)| *first);
        let mut run: Vec<TableFile> = Vec::new();
        let mut run_bytes = 0;
        let mut close = |run: &mut Vec<TableFile>, run_bytes: &mut i64| {
            if run.len() > 1 {
                groups.push(std::mem::take(run));
            }
            run.clear();
            *run_bytes = 0;
        };
        for (_, file) in stream {
            if file.size >= target_bytes {
                close(&mut run, &mut run_bytes);
                continue;
            }
            run.push(file.clone());
            run_bytes += file.size;
            if run_bytes >= target_bytes {
                close(&mut run, &mut run_bytes);
            }
        }
        close(&mut run, &mut run_bytes);
    }
    groups
}

/// The merged file's path: the run's folder, source, whole range, the compaction's tag.
pub fn merged_name(run: &[TableFile]) -> Option<String> {
    let name = |f: &TableFile| f.path.rsplit('/').next().unwrap_or_default().to_string();
    let first = parse_file_name(&name(run.first()?))?;
    let last = parse_file_name(&name(run.last()?))?;
    let dir = run[0].path.rsplit_once('/').map(|(dir, _)| dir);
    let tag = format!("{COMPACT_TAG}{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let merged =
        file_name(&first.topic, first.partition, (first.first, last.last), &tag, "parquet");
    Some(match dir {
        Some(dir) => format!("{dir}/{merged}"),
        None => merged,
    })
}

/// What a compaction did (or, dry, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CompactReport {
    /// Files of the events table before.
    pub files_before: usize,
    /// Their bytes.
    pub bytes_before: i64,
    /// Files after.
    pub files_after: usize,
    /// Their bytes.
    pub bytes_after: i64,
    /// Files replaced by merged ones.
    pub files_replaced: usize,
    /// Merged files written.
    pub files_written: usize,
    /// Runs dropped because another process removed one of their files meanwhile.
    pub runs_dropped: usize,
    /// The table version the swap landed as (none when nothing was merged).
    pub version: Option<u64>,
}

/// What a vacuum did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VacuumReport {
    /// Files deleted (or, dry, that would be), relative to the lake root.
    pub files_deleted: Vec<String>,
}

/// Why a compaction or a vacuum stopped. Nothing is half done: a swap lands whole or
/// not at all, and merged files of a swap that did not land are deleted.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// Reading a file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: parquet::errors::ParquetError,
    },
    /// Files of one run type a column differently.
    #[error("merging {path}: {source}")]
    Merge {
        /// The run's first file.
        path: String,
        /// The cause.
        source: crate::sinks::lake::files::LakeFileError,
    },
    /// Writing the merged file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The merged file.
        path: String,
        /// The cause.
        source: LakeFileError,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The table could not be read or committed to.
    #[error("{0}")]
    Table(#[from] LakeTableError),
    /// Other writers kept committing first.
    #[error("the events table kept changing under the compaction; run it again")]
    Contended,
}

/// A run merged into one file, not committed yet.
struct Merged {
    replaced: Vec<TableFile>,
    add: deltalake_core::kernel::Add,
    path: String,
}

/// Merges the events table's small files (below `target_bytes`) under `store`.
pub fn compact(
    store: &LakeStore,
    format: FileFormat,
    target_bytes: i64,
    dry_run: bool,
) -> Result<CompactReport, CompactError> {
    let mut report = CompactReport::default();
    if !store.may_hold_table(TableKind::Events) {
        return Ok(report);
    }
    let mut table = LakeTable::open(store, TableKind::Events)?;
    let files: Vec<TableFile> =
        table.file_sizes()?.into_iter().map(|(path, size)| TableFile { path, size }).collect();
    report.files_before = files.len();
    report.bytes_before = files.iter().map(|f| f.size).sum();
    let runs = plan(&files, target_bytes);
    if dry_run {
        let replaced: usize = runs.iter().map(Vec::len).sum();
        report.files_replaced = replaced;
        report.files_written = runs.len();
        report.files_after = files.len() - replaced + runs.len();
        report.bytes_after = report.bytes_before;
        return Ok(report);
    }
    let mut merged = Vec::new();
    for run in runs {
        match merge(store, &table, format, run) {
            Ok(Some(m)) => merged.push(m),
            Ok(None) => {}
            Err(e) => {
                discard(store, &merged);
                return Err(e);
            }
        }
    }
    if !merged.is_empty() {
        match swap(&mut table, &mut merged, target_bytes) {
            Ok((version, dropped)) => {
                report.version = Some(version);
                for m in &dropped {
                    let _ = store.delete(&m.path);
                }
                report.runs_dropped = dropped.len();
            }
            Err(e) => {
                discard(store, &merged);
                return Err(e);
            }
        }
    }
    report.files_replaced = merged.iter().map(|m| m.replaced.len()).sum();
    report.files_written = merged.len();
    let after = table.file_sizes()?;
    report.files_after = after.len();
    report.bytes_after = after.iter().map(|(_, size)| size).sum();
    Ok(report)
}

fn discard(store: &LakeStore, merged: &[Merged]) {
    for m in merged {
        let _ = store.delete(&m.path);
    }
}

/// Reads a run's files in offset order and writes them as one file (not committed).
fn merge(
    store: &LakeStore,
    table: &LakeTable,
    format: FileFormat,
    run: Vec<TableFile>,
) -> Result<Option<Merged>, CompactError> {
    let Some(path) = merged_name(&run) else { return Ok(None) };
    let mut batches = Vec::new();
    for file in &run {
        let read = |source| CompactError::Read { path: file.path.clone(), source };
        batches.extend(read_batches(store, &file.path, None).map_err(read)?);
    }
    if batches.is_empty() {
        return Ok(None);
    }
    // Files written under different contract versions merge by column name.
    let all = match concat_by_name(&batches) {
        Ok(all) => all,
        Err(e) => {
            // Columns that share a name but not a type: left as they are.
            log::warn!(
                "lake compact: {}",
                CompactError::Merge { path: run[0].path.clone(), source: e }
            );
            return Ok(None);
        }
    };
    let bytes = encode_parquet(&all, format)
        .map_err(|source| CompactError::Write { path: path.clone(), source })?;
    let size = store.put(&path, bytes)?;
    let values = table.partition_values(&run[0].path)?.unwrap_or_default();
    let mut add = add_action(path.clone(), values, size, all.num_rows());
    add.data_change = false;
    Ok(Some(Merged { replaced: run, add, path }))
}

/// Swaps every run for its merged file in one commit. When another writer commits
/// first, the swap is tried again on the newer snapshot, without the runs a file of
/// which is gone (returned, for their merged files to be deleted).
fn swap(
    table: &mut LakeTable,
    merged: &mut Vec<Merged>,
    target_bytes: i64,
) -> Result<(u64, Vec<Merged>), CompactError> {
    let mut dropped = Vec::new();
    for _ in 0..50 {
        let mut actions: Vec<Action> = Vec::new();
        let mut kept = Vec::new();
        for m in merged.drain(..) {
            let mut removes = Vec::new();
            for file in &m.replaced {
                match table.remove_action_with(&file.path, false)? {
                    Some(remove) => removes.push(remove),
                    None => break,
                }
            }
            if removes.len() < m.replaced.len() {
                dropped.push(m);
                continue;
            }
            actions.extend(removes.into_iter().map(Action::from));
            actions.push(m.add.clone().into());
            kept.push(m);
        }
        *merged = kept;
        if merged.is_empty() {
            return Ok((table.version(), dropped));
        }
        let operation = DeltaOperation::Optimize { predicate: None, target_size: target_bytes };
        if let CommitAttempt::Landed(version) = table.try_commit(actions, &[], operation)? {
            return Ok((version, dropped));
        }
        table.refresh()?;
    }
    Err(CompactError::Contended)
}

/// Deletes the files commits removed (compactions, purges) more than `retention` ago,
/// in both tables.
pub fn vacuum(
    store: &LakeStore,
    retention: chrono::Duration,
    dry_run: bool,
) -> Result<VacuumReport, CompactError> {
    let mut report = VacuumReport::default();
    for kind in TableKind::COMMIT_ORDER {
        if !store.may_hold_table(kind) {
            continue;
        }
        let mut table = LakeTable::open(store, kind)?;
        let deleted = table.vacuum(retention, dry_run)?;
        report.files_deleted.extend(deleted.into_iter().map(|p| kind.in_lake(&p)));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::lake::layout::is_compaction_file;

    fn file(path: &str, size: i64) -> TableFile {
        TableFile { path: path.into(), size }
    }

    fn flush(dir: &str, partition: i32, first: i64, last: i64, size: i64) -> TableFile {
        let name = file_name("t", partition, (first, last), "abc", "parquet");
        file(&format!("{dir}/{name}"), size)
    }

    #[test]
    fn runs_of_small_files_merge_per_folder_and_partition_in_offset_order() {
        let a = "event_type=x/year=2026/month=1/day=1";
        let b = "event_type=y/year=2026/month=1/day=1";
        let files = vec![
            flush(a, 0, 20, 29, 10),
            flush(a, 0, 0, 9, 10),
            flush(a, 0, 10, 19, 10),
            flush(a, 1, 0, 9, 10),
            flush(b, 0, 0, 9, 10),
            flush(b, 0, 10, 19, 10),
        ];
        let groups = plan(&files, 1000);
        let firsts: Vec<Vec<i64>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|f| parse_file_name(f.path.rsplit('/').next().unwrap()).unwrap().first)
                    .collect()
            })
            .collect();
        assert_eq!(firsts, vec![vec![0, 10, 20], vec![0, 10]], "partition 1 has one file only");
        let merged = merged_name(&groups[0]).unwrap();
        let origin = parse_file_name(merged.rsplit('/').next().unwrap()).unwrap();
        assert_eq!((origin.partition, origin.first, origin.last), (0, 0, 29));
        assert!(merged.starts_with(a) && is_compaction_file(&merged));
    }

    #[test]
    fn a_large_file_breaks_a_run_and_a_run_closes_at_the_target() {
        let a = "event_type=x/year=2026/month=1/day=1";
        let files = vec![
            flush(a, 0, 0, 9, 40),
            flush(a, 0, 10, 19, 40),
            flush(a, 0, 20, 29, 500),
            flush(a, 0, 30, 39, 60),
            flush(a, 0, 40, 49, 60),
            flush(a, 0, 50, 59, 10),
        ];
        let groups = plan(&files, 100);
        let sizes: Vec<Vec<i64>> =
            groups.iter().map(|g| g.iter().map(|f| f.size).collect()).collect();
        assert_eq!(sizes, vec![vec![40, 40], vec![60, 60]], "the last file is alone");
    }

    #[test]
    fn only_compaction_files_carry_the_tag() {
        assert!(is_compaction_file(
            "t-0-00000000000000000000-00000000000000000009-compact1a2b3c4d.parquet"
        ));
        assert!(!is_compaction_file(
            "t-0-00000000000000000000-00000000000000000009-3f9a0c1d.parquet"
        ));
    }
}
