//! The lake sink. Accepted events are buffered per partition and flushed into Parquet
//! files when a size or age limit is reached. A flush writes its files under their
//! final Hive names, then commits them to the lake's Delta tables with the partition's
//! new progress as a `txn` action ([`table`](crate::sinks::lake::table)): first the
//! retractions table (invalidations and deletions), then the events table.
//!
//! Before each commit the table's txn version of the partition must equal the progress
//! this writer believes it has (read when it took the partition, moved only by its own
//! commits): another value means another writer moved the partition on (fenced: its
//! files are deleted and that partition's buffer dropped), or that the table went back
//! (the lake was deleted or replaced under a running process: fatal, a restart replays
//! from the table's progress). So a commit starts exactly where the partition's last
//! committed range ended.
//!
//! A range is flushed only once Postgres has stored it, leaving out the records
//! Postgres refused ([`PostgresVerdicts`]), so both sinks hold the same events.
//!
//! The buffer is in [`buffer`](super::buffer), the files a flush writes in
//! [`flush_files`](super::flush_files), the commit and its check in
//! [`commit`](super::commit), and start-up recovery in [`recovery`](super::recovery).

use crate::offsets::progress::write_start;
use crate::record::{SharedBatch, SinkId};
use crate::sinks::lake::buffer::{PartitionBuffer, RollLimits};
use crate::sinks::lake::commit::{
    check_commit, commit_checked, describe, lake_error, CommitCheck, LakeTables,
};
use crate::sinks::lake::files::FileFormat;
use crate::sinks::lake::flush_files::{FileMaker, Written};
use crate::sinks::lake::payload_columns::PayloadColumns;
use crate::sinks::lake::recovery::{ensure_empty_retractions, Orphans};
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::TableKind;
use crate::sinks::verdicts::PostgresVerdicts;
use crate::sinks::worker::{Fencing, SinkError, SinkWriter, WriteReport};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stores decided batches in the lake.
pub struct ParquetWriter {
    store: LakeStore,
    limits: RollLimits,
    format: FileFormat,
    writer_id: String,
    tables: Option<LakeTables>,
    partitions: HashMap<(Arc<str>, i32), PartitionBuffer>,
    verdicts: Arc<PostgresVerdicts>,
    /// Files found at start that no table holds but that might still be committed (a
    /// flush in progress elsewhere, or one that crashed at the partition's progress):
    /// removed once this writer's own commits pass their first offset.
    orphans: Orphans,
    /// When a flush waiting on Postgres last re-read the tables: a full queue asks for
    /// such flushes every 100 ms, and each re-read lists three Delta logs.
    overtaken_checked: Option<Instant>,
    /// Each event type's typed payload columns.
    columns: Arc<PayloadColumns>,
}

/// What flushing one partition's buffer did.
#[derive(Debug)]
enum Flushed {
    /// Nothing to flush, or Postgres has not stored the whole range yet.
    Nothing,
    /// Committed: the partition's new durable progress.
    Durable(i64),
    /// Another writer committed first: the buffer was dropped and the partition's
    /// progress re-read from the tables.
    Fenced(Fencing, Option<i64>),
}

impl ParquetWriter {
    /// A writer for the lake in `store`, following what Postgres decided (`verdicts`).
    pub fn new(
        store: LakeStore,
        limits: RollLimits,
        format: FileFormat,
        verdicts: Arc<PostgresVerdicts>,
    ) -> Self {
        let writer_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        ParquetWriter {
            store,
            limits,
            format,
            writer_id,
            tables: None,
            partitions: HashMap::new(),
            verdicts,
            orphans: Orphans::default(),
            overtaken_checked: None,
            columns: Arc::default(),
        }
    }

    /// Writes each event type's payload fields as typed columns too.
    pub fn with_columns(mut self, columns: Arc<PayloadColumns>) -> Self {
        self.columns = columns;
        self
    }

    fn tables(&mut self) -> Result<&mut LakeTables, SinkError> {
        if self.tables.is_none() {
            self.tables = Some(LakeTables::open(&self.store).map_err(lake_error)?);
        }
        Ok(self.tables.as_mut().expect("opened above"))
    }

    fn buffer(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<&mut PartitionBuffer, SinkError> {
        let key = (topic.clone(), partition);
        if !self.partitions.contains_key(&key) {
            let tables = self.tables()?;
            tables.refresh().map_err(lake_error)?;
            let durable = tables.progress(topic, partition).map_err(lake_error)?;
            let buffer = PartitionBuffer::new(topic.clone(), partition, durable);
            self.partitions.insert(key.clone(), buffer);
        }
        Ok(self.partitions.get_mut(&key).expect("inserted above"))
    }

    fn write_files(
        &self,
        kind: TableKind,
        buf: &PartitionBuffer,
        range: (i64, i64),
        refused: &BTreeSet<i64>,
    ) -> Result<Written, SinkError> {
        let maker = FileMaker {
            store: &self.store,
            format: self.format,
            writer_id: &self.writer_id,
            columns: &self.columns,
        };
        maker.write_files(kind, buf, range, refused)
    }

    /// Flushes one partition's buffer. `forced` (a drain or a stop, not a roll
    /// limit): when Postgres has not decided the range yet, the tables are read again
    /// so that a buffer another writer overtook is fenced now rather than kept.
    fn flush_buffer(&mut self, key: &(Arc<str>, i32), forced: bool) -> Result<Flushed, SinkError> {
        let buf = self.partitions.get(key).expect("a buffered partition");
        let Some((first, next)) = buf.range else { return Ok(Flushed::Nothing) };
        let (topic, partition) = (buf.topic.clone(), buf.partition);
        let Some(refused) = self.verdicts.refused_in(partition, first, next) else {
            log::debug!(
                "lake flush of {topic}/{partition} [{first}, {next}) waits for Postgres to store it"
            );
            // A zombie's Postgres writer was fenced and may never decide this range;
            // without this check its lake buffer would linger until the process ends.
            let recently = self.overtaken_checked.is_some_and(|t| t.elapsed() < OVERTAKEN_RECHECK);
            if forced && !recently {
                self.overtaken_checked = Some(Instant::now());
                return self.fence_if_overtaken(key);
            }
            return Ok(Flushed::Nothing);
        };
        let mut durable = buf.durable;
        let m = crate::telemetry::metrics::metrics();
        for kind in TableKind::COMMIT_ORDER {
            let believed = durable.of(kind);
            if believed.is_some_and(|b| b >= next) {
                continue;
            }
            let buf = self.partitions.get(key).expect("a buffered partition");
            let from = believed.map_or(first, |b| b.max(first));
            if kind == TableKind::DeadLetters && buf.dead_letters(from).is_empty() {
                // Only ranges with dead letters get a commit there (one commit less per
                // flush); committed first, so none below the lake's progress is missing.
                continue;
            }
            let gap_confirmed = buf.gap_confirmed;
            // The dead letters' table lags by design: a range starting above it is fine.
            let lagging = kind == TableKind::DeadLetters;
            if believed.is_some_and(|b| b < first) && !gap_confirmed && !lagging {
                // The buffer starts above what this table holds: committing it would
                // mark offsets [believed, first) stored without their rows. Drop the
                // buffer and read the progress again; the batches are sent again.
                let tables = self.tables()?;
                tables.refresh().map_err(lake_error)?;
                let fresh = tables.progress(&topic, partition).map_err(lake_error)?;
                let reason = format!(
                    "the buffer starts at offset {first} but the lake's {} table holds \
                     partition {partition} only up to {}",
                    kind.name(),
                    describe(believed),
                );
                let buf = self.partitions.get_mut(key).expect("a buffered partition");
                buf.reset(fresh);
                return Ok(Flushed::Fenced(Fencing { partition, reason }, fresh.lake()));
            }
            let buf = self.partitions.get(key).expect("a buffered partition");
            let written = self.write_files(kind, buf, (from, next), &refused)?;
            let tables = self.tables()?;
            let table = tables.table(kind);
            let committed =
                commit_checked(table, written.adds.clone(), (&topic, partition), believed, next);
            match committed {
                Ok(None) => {}
                Ok(Some(now)) => {
                    written.discard(&self.store);
                    // Another writer moved the partition on: drop this partition's
                    // buffer and take the tables' progress; the supervisor sends the
                    // batches again and what the other writer stored is skipped.
                    let tables = self.tables()?;
                    let fresh = tables.progress(&topic, partition).map_err(lake_error)?;
                    let reason = format!(
                        "the lake's {} table holds partition {partition} up to {} (this writer \
                         believed {}); another writer committed first",
                        kind.name(),
                        describe(now),
                        describe(believed),
                    );
                    let buf = self.partitions.get_mut(key).expect("a buffered partition");
                    buf.reset(fresh);
                    return Ok(Flushed::Fenced(Fencing { partition, reason }, fresh.lake()));
                }
                Err(e) => {
                    written.discard(&self.store);
                    return Err(e);
                }
            }
            durable.set(kind, Some(next));
            let table = self.tables.as_mut().expect("committed above").table(kind);
            self.orphans.remove_passed(&self.store, table, (&topic, partition), next)?;
            for _ in &written.adds {
                m.lake_files.inc();
            }
            m.lake_bytes.inc_by(written.bytes);
        }
        self.verdicts.passed(partition, next);
        let buf = self.partitions.get_mut(key).expect("a buffered partition");
        buf.reset(durable);
        Ok(Flushed::Durable(next))
    }

    /// Reads the tables again; if another writer moved the partition past what this
    /// writer believes, drops the buffer (the batches are sent again, and what the other
    /// writer stored is skipped) and reports the fencing.
    fn fence_if_overtaken(&mut self, key: &(Arc<str>, i32)) -> Result<Flushed, SinkError> {
        let partition = key.1;
        let tables = self.tables()?;
        tables.refresh().map_err(lake_error)?;
        let fresh = tables.progress(&key.0, partition).map_err(lake_error)?;
        let buf = self.partitions.get_mut(key).expect("a buffered partition");
        let believed = buf.durable;
        // A table that went back is left to the commit, which stops the process.
        let overtaken = TableKind::COMMIT_ORDER
            .iter()
            .any(|&k| check_commit(believed.of(k), fresh.of(k)) == CommitCheck::Fenced);
        if !overtaken {
            return Ok(Flushed::Nothing);
        }
        let reason = format!(
            "the lake holds partition {partition} up to {} (this writer believed {});              another writer committed it while this one held a buffer",
            describe(fresh.lake()),
            describe(believed.lake()),
        );
        buf.reset(fresh);
        Ok(Flushed::Fenced(Fencing { partition, reason }, fresh.lake()))
    }
}

/// How often a flush waiting on Postgres may re-read the tables to find out whether
/// another writer overtook its buffer.
const OVERTAKEN_RECHECK: Duration = Duration::from_secs(1);

impl SinkWriter for ParquetWriter {
    const ID: SinkId = SinkId::Lake;

    fn open(&mut self) -> Result<(), SinkError> {
        let store = self.store.clone();
        let format = self.format;
        ensure_empty_retractions(&store, format, &mut self.tables()?.retractions)?;
        let tables = self.tables.as_mut().expect("opened above");
        let removed = self.orphans.sweep(&store, tables)?;
        if removed > 0 {
            log::info!("lake: removed {removed} files of flushes that never committed");
        }
        Ok(())
    }

    fn write(&mut self, batches: &[SharedBatch], _failures: u32) -> Result<WriteReport, SinkError> {
        let mut report = WriteReport::default();
        for batch in batches {
            self.write_one(batch, &mut report)?;
        }
        Ok(report)
    }

    fn flush(&mut self, only_if_due: bool) -> Result<WriteReport, SinkError> {
        let mut report = WriteReport::default();
        self.flush_due(only_if_due, &mut report)?;
        Ok(report)
    }
}

impl ParquetWriter {
    fn write_one(
        &mut self,
        batch: &SharedBatch,
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        let limits = self.limits;
        let buf = self.buffer(&batch.topic, batch.partition)?;
        let stale =
            buf.range.is_none() && buf.durable.lake().is_some_and(|d| d < batch.first_offset);
        if stale {
            // A batch that starts above what this writer believes the lake holds, with
            // nothing buffered: the partition was probably owned by another process in
            // between (a rebalance), which moved it on. Read the tables again rather
            // than take the difference for records Kafka no longer has.
            let tables = self.tables()?;
            tables.refresh().map_err(lake_error)?;
            let fresh = tables.progress(&batch.topic, batch.partition).map_err(lake_error)?;
            let buf = self.buffer(&batch.topic, batch.partition)?;
            buf.durable = fresh;
            buf.gap_confirmed = fresh.lake().is_some_and(|d| d < batch.first_offset);
        }
        let buf = self.buffer(&batch.topic, batch.partition)?;
        if buf.range.is_some_and(|(_, next)| next < batch.first_offset) {
            // The batch leaves a gap after what is buffered: the partition was revoked
            // and assigned again, and another process may have moved it meanwhile.
            let key = (batch.topic.clone(), batch.partition);
            self.fence_if_overtaken(&key)?.report(batch.partition, report);
        }
        let buf = self.buffer(&batch.topic, batch.partition)?;
        let span = (batch.first_offset, batch.next_offset);
        let at = (&*batch.topic, batch.partition);
        let Some(from) = write_start("Parquet", at, buf.expected(), span) else {
            report.progress.extend(buf.durable.lake().map(|d| (batch.partition, d)));
            return Ok(());
        };
        for event in batch.accepted.iter().filter(|e| e.coords.offset >= from) {
            buf.bytes += 160 + event.payload.len();
            buf.rows += 1;
        }
        let retractions = batch.invalidations.iter().chain(&batch.deletions);
        buf.rows += retractions.filter(|r| r.coords.offset >= from).count();
        buf.rows += batch.dead.iter().filter(|d| d.record.coords.offset >= from).count();
        buf.batches.push((batch.clone(), from));
        buf.range = Some((buf.range.map_or(from, |(first, _)| first), batch.next_offset));
        buf.since.get_or_insert_with(Instant::now);
        buf.last_batch = Some(Instant::now());
        if buf.due(&limits) {
            let key = (batch.topic.clone(), batch.partition);
            let flushed = self.flush_buffer(&key, false)?;
            flushed.report(batch.partition, report);
        }
        Ok(())
    }

    fn flush_due(&mut self, only_if_due: bool, report: &mut WriteReport) -> Result<(), SinkError> {
        let keys: Vec<(Arc<str>, i32)> = self
            .partitions
            .iter()
            .filter(|(_, buf)| buf.range.is_some() && (!only_if_due || buf.due(&self.limits)))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            let flushed = self.flush_buffer(&key, !only_if_due)?;
            flushed.report(key.1, report);
        }
        Ok(())
    }
}

impl Flushed {
    fn report(self, partition: i32, report: &mut WriteReport) {
        match self {
            Flushed::Nothing => {}
            Flushed::Durable(next) => report.progress.push((partition, next)),
            Flushed::Fenced(fencing, durable) => {
                report.progress.extend(durable.map(|d| (partition, d)));
                report.fenced.push(fencing);
            }
        }
    }
}
