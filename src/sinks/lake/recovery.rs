//! Start-up recovery of the lake: the probe that the lake can be written, the tables
//! created with their typed columns and the retractions table's empty file, and the
//! sweep of files no commit holds (a flush that wrote and then crashed or was fenced).
//! A file that might still be committed by a flush in progress elsewhere is a
//! [`Suspect`]: removed only once this writer's own commits pass it.

use crate::sinks::lake::commit::{lake_error, LakeTables};
use crate::sinks::lake::files::{encode_parquet, retractions_to_record_batch, FileFormat};
use crate::sinks::lake::layout::{
    is_compaction_file, is_rewrite, parse_file_name, EMPTY_RETRACTIONS,
};
use crate::sinks::lake::payload_columns::PayloadColumns;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::{
    add_action, append_operation, CommitAttempt, LakeTable, TableKind,
};
use crate::sinks::worker::SinkError;
use std::collections::{HashMap, HashSet};

/// At start, before any writer: checks the lake can be written, creates its tables
/// when missing (with every event type's typed columns) and removes the files no
/// commit can hold any more. Returns how many it removed.
pub fn prepare_lake(
    store: &LakeStore,
    format: FileFormat,
    columns: &PayloadColumns,
) -> Result<usize, SinkError> {
    let probe = format!(".eventline-probe-{}", uuid::Uuid::new_v4().simple());
    store.put(&probe, Vec::new()).map_err(lake_error)?;
    store.delete(&probe).map_err(lake_error)?;
    let mut tables = LakeTables::open(store).map_err(lake_error)?;
    let wanted: Vec<_> = columns.table_columns().iter().map(|c| c.arrow_field()).collect();
    let added = tables.events.ensure_columns(&wanted).map_err(lake_error)?;
    if added > 0 {
        log::info!("lake: added {added} typed payload columns to the events table");
    }
    ensure_empty_retractions(store, format, &mut tables.retractions)?;
    Orphans::default().sweep(store, &mut tables)
}

/// A file no table held when this writer started.
#[derive(Debug)]
struct Suspect {
    kind: TableKind,
    topic: String,
    partition: i32,
    first: i64,
    path: String,
}

/// The files a writer found at start that it may remove later.
#[derive(Debug, Default)]
pub(super) struct Orphans {
    suspects: Vec<Suspect>,
}

impl Orphans {
    /// Removes files no table holds and none can hold any more: those of a flush that
    /// wrote and then crashed or was fenced before committing. A file can still be
    /// committed only if its range starts at or above its table's progress (a flush in
    /// progress elsewhere), so only files starting below it are removed.
    pub(super) fn sweep(
        &mut self,
        store: &LakeStore,
        tables: &mut LakeTables,
    ) -> Result<usize, SinkError> {
        let mut removed = 0;
        let mut found = Vec::new();
        for kind in TableKind::COMMIT_ORDER {
            // List first, then load the table: a file another process commits after the
            // listing is not listed, and every listed file that was committed by then
            // is in the snapshot. (The other way round, a file committed in between
            // would look like an orphan.)
            let listed = store.table_files(kind).map_err(lake_error)?;
            let table = tables.table(kind);
            table.refresh().map_err(lake_error)?;
            // Files a compaction or a purge removed stay for readers of older versions
            // until a vacuum: they are no orphans.
            let tombstones = table.tombstones().map_err(lake_error)?;
            let held: HashSet<String> = table
                .files()
                .map_err(lake_error)?
                .into_iter()
                .map(|(p, _)| p)
                .chain(tombstones)
                .map(|p| kind.in_lake(&p))
                .collect();
            let mut progress: HashMap<(String, i32), Option<i64>> = HashMap::new();
            for listed in listed {
                let name = listed.path.rsplit('/').next().unwrap_or_default().to_string();
                let stray_tmp = name.starts_with('.') && name.ends_with(".tmp");
                let orphan = if stray_tmp {
                    // A temporary file older than a minute: its writer is gone.
                    let age = chrono::Utc::now() - listed.modified;
                    age > chrono::Duration::seconds(60)
                } else if held.contains(&listed.path) {
                    false
                } else if let Some(origin) = parse_file_name(&name) {
                    let key = (origin.topic.clone(), origin.partition);
                    let at = match progress.get(&key) {
                        Some(at) => *at,
                        None => {
                            let at = table
                                .progress(&origin.topic, origin.partition)
                                .map_err(lake_error)?;
                            progress.insert(key, at);
                            at
                        }
                    };
                    // A purge's rewrite or a compaction's merged file lies below the
                    // progress while its maker has yet to commit it: it is only an orphan
                    // once it is old enough that no purge or compaction can still run.
                    let rewrite = is_rewrite(&name) || is_compaction_file(&name);
                    let old = chrono::Utc::now() - listed.modified > chrono::Duration::hours(1);
                    let passed = at.is_some_and(|at| origin.first < at) && (!rewrite || old);
                    if !passed && !rewrite {
                        found.push(Suspect {
                            kind,
                            topic: origin.topic,
                            partition: origin.partition,
                            first: origin.first,
                            path: listed.path.clone(),
                        });
                    }
                    passed
                } else {
                    false
                };
                if orphan && store.delete(&listed.path).is_ok() {
                    removed += 1;
                }
            }
        }
        self.suspects = found;
        Ok(removed)
    }

    /// Removes the suspects of a partition that a commit up to `next` passed: no commit
    /// can hold them any more.
    ///
    /// A suspect may also have been committed since by the process that wrote it (it
    /// owned the partition then): the table, just committed to, is asked first.
    pub(super) fn remove_passed(
        &mut self,
        store: &LakeStore,
        table: &LakeTable,
        (topic, partition): (&str, i32),
        next: i64,
    ) -> Result<(), SinkError> {
        let kind = table.kind();
        let passes = |s: &Suspect| {
            s.kind == kind && s.partition == partition && s.topic == topic && s.first < next
        };
        if !self.suspects.iter().any(passes) {
            return Ok(());
        }
        let held: HashSet<String> =
            table.files().map_err(lake_error)?.into_iter().map(|(p, _)| kind.in_lake(&p)).collect();
        self.suspects.retain(|s| {
            if !passes(s) {
                return true;
            }
            if !held.contains(&s.path) {
                let _ = store.delete(&s.path);
            }
            false
        });
        Ok(())
    }
}

/// Gives the retractions table its empty file, so the documented glob over
/// `_retractions/*.retractions` always finds one.
pub(super) fn ensure_empty_retractions(
    store: &LakeStore,
    format: FileFormat,
    table: &mut LakeTable,
) -> Result<(), SinkError> {
    let path = TableKind::Retractions.in_lake(EMPTY_RETRACTIONS);
    if table.files().map_err(lake_error)?.iter().any(|(p, _)| p == EMPTY_RETRACTIONS) {
        return Ok(());
    }
    let batch = retractions_to_record_batch(&[]).map_err(lake_error)?;
    let bytes = encode_parquet(&batch, format).map_err(lake_error)?;
    let size = store.put(&path, bytes).map_err(lake_error)?;
    let add = add_action(EMPTY_RETRACTIONS.to_string(), HashMap::new(), size, 0);
    for _ in 0..20 {
        let attempt = table
            .try_commit(vec![add.clone().into()], &[], append_operation(TableKind::Retractions))
            .map_err(lake_error)?;
        if let CommitAttempt::Landed(_) = attempt {
            return Ok(());
        }
        table.refresh().map_err(lake_error)?;
        if table.files().map_err(lake_error)?.iter().any(|(p, _)| p == EMPTY_RETRACTIONS) {
            return Ok(());
        }
    }
    Err(SinkError::Retryable("could not add the empty retractions file".into()))
}
