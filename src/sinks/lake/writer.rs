//! The lake sink. Accepted events are buffered per partition and flushed into Parquet
//! files when a size or age limit is reached. A flush stages files under `_eventline/`
//! (invisible to `**/*.parquet` readers), commits by creating the next log entry
//! (create-new: failing means another writer moved the partition on, i.e. fenced), then
//! publishes the files by renaming them into their Hive folders.
//!
//! Invalidations and deletions go into a retraction file of the same commit
//! (`_retractions/`), which the documented lake queries anti-join.
//!
//! A range is flushed only once Postgres has stored it, leaving out the records
//! Postgres refused ([`PostgresVerdicts`]), so both sinks hold the same events. A
//! fenced flush drops that partition's buffer only and reports it; the writer stays up.

use crate::error::class::Classified;
use crate::offsets::progress::write_start;
use crate::record::Retraction;
use crate::record::SharedBatch;
use crate::record::SinkId;
use crate::sinks::lake::commit_log::{self, LakeLogError, LogEntry, LoggedFile};
use crate::sinks::lake::files::{
    group_by_folder, retractions_to_record_batch, to_record_batch, write_parquet, Action,
    FileFormat,
};
use crate::sinks::lake::layout::{
    data_file_name, empty_retraction_file, retraction_file, staging_dir,
};
use crate::sinks::verdicts::PostgresVerdicts;
use crate::sinks::worker::{Fencing, SinkError, SinkWriter, WriteReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// When a partition's buffer becomes a file.
#[derive(Debug, Clone, Copy)]
pub struct RollLimits {
    /// Rows.
    pub max_rows: usize,
    /// Approximate bytes of payloads.
    pub max_bytes: usize,
    /// Age of the oldest buffered record.
    pub max_age: Duration,
    /// Time since the last batch for the partition arrived (`None`: never idle-flushed).
    /// A backlog or burst that has ended lands now rather than after `max_age`, while a
    /// steady trickle, which keeps arriving, still fills files up to `max_age`.
    pub max_idle: Option<Duration>,
}

impl From<&crate::settings::Settings> for RollLimits {
    fn from(s: &crate::settings::Settings) -> Self {
        RollLimits {
            max_rows: s.lake.max_rows_per_file,
            max_bytes: s.lake.max_bytes_per_file,
            max_age: Duration::from_millis(s.lake.max_file_age_ms),
            max_idle: (s.lake.idle_flush_ms > 0)
                .then(|| Duration::from_millis(s.lake.idle_flush_ms)),
        }
    }
}

/// How long a buffer has been filling, and since when it has been still.
#[derive(Debug, Clone, Copy)]
pub struct BufferAge {
    /// Since its oldest record arrived.
    pub oldest: Duration,
    /// Since its latest batch arrived.
    pub idle: Duration,
}

/// A partition's buffered, not yet durable, range and rows.
#[derive(Debug)]
struct PartitionBuffer {
    topic: Arc<str>,
    partition: i32,
    /// Latest committed log version (0: none).
    version: u64,
    /// Durable progress: `next_offset` of the latest entry.
    durable: Option<i64>,
    /// Offsets covered by the buffer: `[first, next)`; `None` while empty.
    range: Option<(i64, i64)>,
    /// The buffered batches and the offset each is stored from. The supervisor holds
    /// the same batches until they are durable, so buffering copies nothing.
    batches: Vec<(SharedBatch, i64)>,
    rows: usize,
    bytes: usize,
    since: Option<Instant>,
    last_batch: Option<Instant>,
}

impl PartitionBuffer {
    /// Empty, at this log version and durable progress.
    fn reset(&mut self, version: u64, durable: Option<i64>) {
        self.version = version;
        self.durable = durable;
        self.range = None;
        self.batches.clear();
        self.rows = 0;
        self.bytes = 0;
        self.since = None;
        self.last_batch = None;
    }

    fn expected(&self) -> Option<i64> {
        self.range.map(|(_, next)| next).or(self.durable)
    }

    fn due(&self, limits: &RollLimits) -> bool {
        let age = self
            .since
            .zip(self.last_batch)
            .map(|(since, last)| BufferAge { oldest: since.elapsed(), idle: last.elapsed() });
        should_flush(self.rows, self.bytes, age, limits)
    }
}

/// Whether a buffer must become files now (a named predicate, unit-tested).
pub fn should_flush(
    rows: usize,
    bytes: usize,
    age: Option<BufferAge>,
    limits: &RollLimits,
) -> bool {
    rows >= limits.max_rows
        || bytes >= limits.max_bytes
        || age.is_some_and(|a| {
            a.oldest >= limits.max_age || limits.max_idle.is_some_and(|idle| a.idle >= idle)
        })
}

/// Stores decided batches in the Parquet lake.
pub struct ParquetWriter {
    root: PathBuf,
    limits: RollLimits,
    format: FileFormat,
    writer_id: String,
    partitions: HashMap<(Arc<str>, i32), PartitionBuffer>,
    verdicts: Arc<PostgresVerdicts>,
}

/// What flushing one partition's buffer did.
#[derive(Debug)]
enum Flushed {
    /// Nothing to flush, or Postgres has not stored the whole range yet.
    Nothing,
    /// Committed and published: the partition's new durable progress.
    Durable(i64),
    /// Another writer committed first: the buffer was dropped and the partition's
    /// progress re-read from the log.
    Fenced(Fencing, Option<i64>),
}

fn lake_error(e: impl Classified + std::fmt::Display) -> SinkError {
    SinkError::classified(&e)
}

/// A file system error on `path`, classified (a path that is not a writable folder is
/// fatal, see [`crate::error::class::io_class`]).
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
    move |source| lake_error(LakeLogError::Io { path: path.to_path_buf(), source })
}

impl ParquetWriter {
    /// A writer for the lake at `root`, following what Postgres decided (`verdicts`).
    pub fn new(
        root: PathBuf,
        limits: RollLimits,
        format: FileFormat,
        verdicts: Arc<PostgresVerdicts>,
    ) -> Self {
        let writer_id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        ParquetWriter { root, limits, format, writer_id, partitions: HashMap::new(), verdicts }
    }

    /// Checks at start that `root` is a folder this process can write: makes it, then
    /// creates and removes a probe file in it.
    pub fn check_root(root: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        let probe = root.join(format!(".eventline-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)
    }

    /// The lake's durable progress on a partition, finishing an interrupted publish
    /// and removing stale staged files on the way.
    pub fn recover_partition(
        root: &Path,
        topic: &str,
        partition: i32,
    ) -> Result<(u64, Option<i64>), LakeLogError> {
        match commit_log::latest(root, topic, partition)? {
            Some(entry) => {
                commit_log::publish(root, &entry)?;
                commit_log::remove_stale_staging(root, topic, partition, entry.version)?;
                Ok((entry.version, Some(entry.next_offset)))
            }
            None => Ok((0, None)),
        }
    }

    fn buffer(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<&mut PartitionBuffer, SinkError> {
        let key = (topic.clone(), partition);
        if !self.partitions.contains_key(&key) {
            let (version, durable) =
                Self::recover_partition(&self.root, topic, partition).map_err(lake_error)?;
            let buffer = PartitionBuffer {
                topic: topic.clone(),
                partition,
                version,
                durable,
                range: None,
                batches: Vec::new(),
                rows: 0,
                bytes: 0,
                since: None,
                last_batch: None,
            };
            self.partitions.insert(key.clone(), buffer);
        }
        Ok(self.partitions.get_mut(&key).expect("inserted above"))
    }

    fn flush_buffer(
        root: &Path,
        writer_id: &str,
        format: FileFormat,
        verdicts: &PostgresVerdicts,
        buf: &mut PartitionBuffer,
    ) -> Result<Flushed, SinkError> {
        let Some((first, next)) = buf.range else { return Ok(Flushed::Nothing) };
        let Some(refused) = verdicts.refused_in(buf.partition, first, next) else {
            log::debug!(
                "lake flush of {}/{} [{first}, {next}) waits for Postgres to store it",
                buf.topic,
                buf.partition
            );
            return Ok(Flushed::Nothing);
        };
        let version = buf.version + 1;
        let staging = staging_dir(&buf.topic, buf.partition, version, writer_id);
        let groups = group_by_folder(buf.batches.iter().flat_map(|(batch, from)| {
            let refused = &refused;
            batch
                .accepted
                .iter()
                .filter(move |e| e.coords.offset >= *from && !refused.contains(&e.coords.offset))
        }));
        let retractions: Vec<(&Retraction, Action)> = buf
            .batches
            .iter()
            .flat_map(|(batch, from)| {
                let invalidations = batch.invalidations.iter().map(|r| (r, Action::Invalidated));
                let deletions = batch.deletions.iter().map(|r| (r, Action::Deleted));
                invalidations.chain(deletions).filter(move |(r, _)| r.coords.offset >= *from)
            })
            .collect();
        let name = data_file_name(&buf.topic, buf.partition, first, next - 1);
        let ingested_at = chrono::Utc::now().timestamp_micros();
        let mut files = Vec::new();
        if !groups.is_empty() || !retractions.is_empty() {
            std::fs::create_dir_all(root.join(&staging)).map_err(io_error(&root.join(&staging)))?;
        }
        if !retractions.is_empty() {
            // In the same commit as the events of the range, so a reader never sees an
            // event without the retractions that came with it.
            let staged = staging.join("retractions.staged");
            let batch = retractions_to_record_batch(&retractions).map_err(lake_error)?;
            write_parquet(&root.join(&staged), &batch, format).map_err(lake_error)?;
            let path = retraction_file(&buf.topic, buf.partition, first, next - 1);
            files.push(LoggedFile { staged, path, rows: retractions.len() as u64 });
        }
        for (index, (dir, events)) in groups.iter().enumerate() {
            let staged = staging.join(format!("{index}.staged"));
            let batch = to_record_batch(events, ingested_at).map_err(lake_error)?;
            write_parquet(&root.join(&staged), &batch, format).map_err(lake_error)?;
            files.push(LoggedFile { staged, path: dir.join(&name), rows: events.len() as u64 });
        }
        if !files.is_empty() {
            commit_log::sync_dir(&root.join(&staging)).map_err(lake_error)?;
        }
        let entry = LogEntry {
            version,
            topic: buf.topic.to_string(),
            partition: buf.partition,
            first_offset: first,
            next_offset: next,
            files,
            committed_at: chrono::Utc::now(),
        };
        match commit_log::create(root, &entry) {
            Ok(()) => {}
            Err(LakeLogError::Fenced(taken)) => {
                let _ = std::fs::remove_dir_all(root.join(&staging));
                // Another writer committed this version: drop this partition's buffer
                // and take the log's progress; the supervisor sends the batches again
                // and what the other writer stored is skipped.
                let (version, durable) =
                    Self::recover_partition(root, &buf.topic, buf.partition).map_err(lake_error)?;
                let reason = format!(
                    "log entry {taken} was committed by another writer; the lake now stands at {}",
                    durable.map_or("nothing".to_string(), |d| format!("offset {d}"))
                );
                buf.reset(version, durable);
                return Ok(Flushed::Fenced(Fencing { partition: buf.partition, reason }, durable));
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(root.join(&staging));
                return Err(lake_error(e));
            }
        }
        commit_log::publish(root, &entry).map_err(lake_error)?;
        let m = crate::ops::metrics::metrics();
        for file in &entry.files {
            m.lake_files.inc();
            m.lake_bytes
                .inc_by(std::fs::metadata(root.join(&file.path)).map(|md| md.len()).unwrap_or(0));
        }
        commit_log::remove_stale_staging(root, &buf.topic, buf.partition, version)
            .map_err(lake_error)?;
        verdicts.passed(buf.partition, next);
        buf.reset(version, Some(next));
        Ok(Flushed::Durable(next))
    }
}

impl SinkWriter for ParquetWriter {
    const ID: SinkId = SinkId::Lake;

    fn open(&mut self) -> Result<(), SinkError> {
        std::fs::create_dir_all(&self.root).map_err(io_error(&self.root))?;
        ensure_empty_retraction_file(&self.root, self.format)
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

/// Writes the lake's empty retraction file unless it exists (atomically: a reader never
/// sees a half-written one).
fn ensure_empty_retraction_file(root: &Path, format: FileFormat) -> Result<(), SinkError> {
    let path = root.join(empty_retraction_file());
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().expect("in the retractions folder");
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let tmp = dir.join(format!(".empty.{}.tmp", uuid::Uuid::new_v4().simple()));
    let batch = retractions_to_record_batch(&[]).map_err(lake_error)?;
    write_parquet(&tmp, &batch, format).map_err(lake_error)?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))
}

impl ParquetWriter {
    fn write_one(
        &mut self,
        batch: &SharedBatch,
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        let (root, writer_id, format, limits) =
            (self.root.clone(), self.writer_id.clone(), self.format, self.limits);
        let verdicts = self.verdicts.clone();
        let buf = self.buffer(&batch.topic, batch.partition)?;
        let span = (batch.first_offset, batch.next_offset);
        let at = (&*batch.topic, batch.partition);
        let Some(from) = write_start("Parquet", at, buf.expected(), span) else {
            report.progress.extend(buf.durable.map(|d| (batch.partition, d)));
            return Ok(());
        };
        for event in batch.accepted.iter().filter(|e| e.coords.offset >= from) {
            buf.bytes += 160 + event.payload.len();
            buf.rows += 1;
        }
        let retractions = batch.invalidations.iter().chain(&batch.deletions);
        buf.rows += retractions.filter(|r| r.coords.offset >= from).count();
        buf.batches.push((batch.clone(), from));
        buf.range = Some((buf.range.map_or(from, |(first, _)| first), batch.next_offset));
        buf.since.get_or_insert_with(Instant::now);
        buf.last_batch = Some(Instant::now());
        if buf.due(&limits) {
            let flushed = Self::flush_buffer(&root, &writer_id, format, &verdicts, buf)?;
            flushed.report(buf.partition, report);
        }
        Ok(())
    }

    fn flush_due(&mut self, only_if_due: bool, report: &mut WriteReport) -> Result<(), SinkError> {
        for buf in self.partitions.values_mut() {
            if buf.range.is_some() && (!only_if_due || buf.due(&self.limits)) {
                let (root, id, format) = (&self.root, &self.writer_id, self.format);
                let flushed = Self::flush_buffer(root, id, format, &self.verdicts, buf)?;
                flushed.report(buf.partition, report);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RollLimits = RollLimits {
        max_rows: 100,
        max_bytes: 1000,
        max_age: Duration::from_secs(5),
        max_idle: Some(Duration::from_secs(1)),
    };

    fn age(oldest_ms: u64, idle_ms: u64) -> Option<BufferAge> {
        Some(BufferAge {
            oldest: Duration::from_millis(oldest_ms),
            idle: Duration::from_millis(idle_ms),
        })
    }

    #[test]
    fn flushes_at_whichever_limit_comes_first() {
        assert!(!should_flush(99, 999, age(4_000, 10), &LIMITS));
        assert!(should_flush(100, 0, None, &LIMITS));
        assert!(should_flush(1, 1000, None, &LIMITS));
        assert!(should_flush(1, 1, age(5_000, 10), &LIMITS));
        assert!(!should_flush(0, 0, None, &LIMITS));
    }

    #[test]
    fn a_still_buffer_flushes_before_its_age_unless_idle_flushing_is_off() {
        assert!(should_flush(1, 1, age(1_200, 1_000), &LIMITS));
        assert!(!should_flush(1, 1, age(1_200, 999), &LIMITS));
        let no_idle = RollLimits { max_idle: None, ..LIMITS };
        assert!(!should_flush(1, 1, age(4_999, 4_000), &no_idle));
    }
}
