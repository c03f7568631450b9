//! The files one flush writes for one table, under their final names, before the
//! commit that makes them part of the table. A flush that fails or is fenced deletes
//! them ([`Written::discard`]); a crash leaves them to the orphan sweep.

use crate::sinks::lake::buffer::PartitionBuffer;
use crate::sinks::lake::commit::lake_error;
use crate::sinks::lake::files::{
    dead_letters_to_record_batch, encode_parquet, group_by_folder, retractions_to_record_batch,
    to_record_batch, FileFormat,
};
use crate::sinks::lake::layout::{data_file_name, partition_values, retraction_file_name};
use crate::sinks::lake::payload_columns::PayloadColumns;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::{add_action, TableKind};
use crate::sinks::worker::SinkError;
use std::collections::{BTreeSet, HashMap};

/// Where and how a writer's files are made.
pub(super) struct FileMaker<'a> {
    pub(super) store: &'a LakeStore,
    pub(super) format: FileFormat,
    /// Ends every file name, so two writers never write the same path.
    pub(super) writer_id: &'a str,
    pub(super) columns: &'a PayloadColumns,
}

/// Files a flush wrote for one table, not yet committed.
pub(super) struct Written {
    pub(super) adds: Vec<deltalake_core::kernel::Add>,
    pub(super) paths: Vec<String>,
    pub(super) bytes: u64,
}

impl Written {
    /// Deletes the files: their commit did not land.
    pub(super) fn discard(&self, store: &LakeStore) {
        for path in &self.paths {
            let _ = store.delete(path);
        }
    }
}

impl FileMaker<'_> {
    /// Writes the files of one table for `[from, next)` of a buffer.
    pub(super) fn write_files(
        &self,
        kind: TableKind,
        buf: &PartitionBuffer,
        (from, next): (i64, i64),
        refused: &BTreeSet<i64>,
    ) -> Result<Written, SinkError> {
        let mut written = Written { adds: Vec::new(), paths: Vec::new(), bytes: 0 };
        let result = self.write_files_into(kind, buf, (from, next), refused, &mut written);
        if result.is_err() {
            written.discard(self.store);
        }
        result.map(|()| written)
    }

    fn write_files_into(
        &self,
        kind: TableKind,
        buf: &PartitionBuffer,
        (from, next): (i64, i64),
        refused: &BTreeSet<i64>,
        written: &mut Written,
    ) -> Result<(), SinkError> {
        let last = next - 1;
        match kind {
            TableKind::DeadLetters => {
                let rows = buf.dead_letters(from);
                if rows.is_empty() {
                    return Ok(());
                }
                let name = data_file_name(&buf.topic, buf.partition, from, last, self.writer_id);
                let now = chrono::Utc::now().timestamp_micros();
                let batch = dead_letters_to_record_batch(&rows, now).map_err(lake_error)?;
                self.put(kind, name, HashMap::new(), &batch, written)?;
            }
            TableKind::Retractions => {
                let rows = buf.retractions(from, refused);
                if rows.is_empty() {
                    return Ok(());
                }
                let name =
                    retraction_file_name(&buf.topic, buf.partition, from, last, self.writer_id);
                let batch = retractions_to_record_batch(&rows).map_err(lake_error)?;
                self.put(kind, name, HashMap::new(), &batch, written)?;
            }
            TableKind::Events => {
                let groups = group_by_folder(buf.events(from, refused));
                let name = data_file_name(&buf.topic, buf.partition, from, last, self.writer_id);
                let ingested_at = chrono::Utc::now().timestamp_micros();
                for (dir, events) in &groups {
                    let relative = dir.join(&name).to_string_lossy().replace('\\', "/");
                    let batch =
                        to_record_batch(events, ingested_at, self.columns).map_err(lake_error)?;
                    let first = events[0];
                    let values =
                        partition_values(&first.event_type, first.occurred_at.date_naive());
                    self.put(kind, relative, values, &batch, written)?;
                }
            }
        }
        Ok(())
    }

    /// Encodes `batch` as one Parquet file at `relative` in `kind`'s table and notes it
    /// in `written` (its path before the write, so a failed put is cleaned up too).
    fn put(
        &self,
        kind: TableKind,
        relative: String,
        values: HashMap<String, Option<String>>,
        batch: &arrow::record_batch::RecordBatch,
        written: &mut Written,
    ) -> Result<(), SinkError> {
        let path = kind.in_lake(&relative);
        let bytes = encode_parquet(batch, self.format).map_err(lake_error)?;
        written.paths.push(path.clone());
        let size = self.store.put(&path, bytes).map_err(lake_error)?;
        written.bytes += size;
        let rows = batch.num_rows();
        written.adds.push(add_action(relative, values, size, rows));
        Ok(())
    }
}
