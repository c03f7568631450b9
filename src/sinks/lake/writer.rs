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

use crate::failure::Classified;
use crate::offsets::progress::write_start;
use crate::record::{DeadLetter, Event, Retraction, SharedBatch, SinkId};
use crate::sinks::lake::files::{
    dead_letters_to_record_batch, encode_parquet, group_by_folder, retractions_to_record_batch,
    to_record_batch, Action, FileFormat,
};
use crate::sinks::lake::layout::{
    data_file_name, is_compaction_file, is_rewrite, parse_file_name, partition_values,
    retraction_file_name, EMPTY_RETRACTIONS,
};
use crate::sinks::lake::payload_columns::PayloadColumns;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::{
    add_action, append_operation, CommitAttempt, LakeTable, LakeTableError, TableKind,
};
use crate::sinks::verdicts::PostgresVerdicts;
use crate::sinks::worker::{Fencing, SinkError, SinkWriter, WriteReport};
use std::collections::{HashMap, HashSet};
use std::path::Path;
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

/// A partition's progress in each of the lake's tables: the next offset the table does
/// not hold (`None`: nothing yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TablesProgress {
    /// The events table.
    pub events: Option<i64>,
    /// The retractions table.
    pub retractions: Option<i64>,
    /// The dead letters' table, which gets a commit only for ranges that have dead
    /// letters: it may lag, and does not count in the lake's progress.
    pub dead_letters: Option<i64>,
}

impl TablesProgress {
    /// The lake's progress: the lower of both (a table with nothing counts lowest).
    pub fn lake(&self) -> Option<i64> {
        Some(self.events?.min(self.retractions?))
    }

    fn of(&self, kind: TableKind) -> Option<i64> {
        match kind {
            TableKind::Events => self.events,
            TableKind::Retractions => self.retractions,
            TableKind::DeadLetters => self.dead_letters,
        }
    }

    fn set(&mut self, kind: TableKind, next: Option<i64>) {
        match kind {
            TableKind::Events => self.events = next,
            TableKind::Retractions => self.retractions = next,
            TableKind::DeadLetters => self.dead_letters = next,
        }
    }
}

/// Whether a flush may commit to a table, given the progress the writer believes the
/// table has and the one the table's snapshot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitCheck {
    /// They agree: the commit starts where the last committed range ended.
    Commit,
    /// Another writer moved the partition on.
    Fenced,
    /// The table holds less than it did: it was deleted or replaced under this process.
    WentBack,
}

/// Compares believed and actual progress (a named rule, unit-tested).
pub fn check_commit(believed: Option<i64>, table: Option<i64>) -> CommitCheck {
    match (believed, table) {
        (b, t) if b == t => CommitCheck::Commit,
        // `None < Some(_)`: a table with nothing is behind any progress.
        (b, t) if t < b => CommitCheck::WentBack,
        _ => CommitCheck::Fenced,
    }
}

/// A partition's buffered, not yet durable, range and rows.
#[derive(Debug)]
struct PartitionBuffer {
    topic: Arc<str>,
    partition: i32,
    /// What this writer believes each table holds of the partition.
    durable: TablesProgress,
    /// Offsets covered by the buffer: `[first, next)`; `None` while empty.
    range: Option<(i64, i64)>,
    /// The buffered batches and the offset each is stored from. The supervisor holds
    /// the same batches until they are durable, so buffering copies nothing.
    batches: Vec<(SharedBatch, i64)>,
    rows: usize,
    bytes: usize,
    since: Option<Instant>,
    last_batch: Option<Instant>,
    /// The tables, read again, still end below the buffer's first offset: records
    /// Kafka no longer has (retention), which the buffer may skip.
    gap_confirmed: bool,
}

impl PartitionBuffer {
    /// Empty, at this durable progress.
    fn reset(&mut self, durable: TablesProgress) {
        self.durable = durable;
        self.range = None;
        self.batches.clear();
        self.rows = 0;
        self.bytes = 0;
        self.since = None;
        self.last_batch = None;
        self.gap_confirmed = false;
    }

    fn expected(&self) -> Option<i64> {
        self.range.map(|(_, next)| next).or(self.durable.lake())
    }

    fn due(&self, limits: &RollLimits) -> bool {
        let age = self
            .since
            .zip(self.last_batch)
            .map(|(since, last)| BufferAge { oldest: since.elapsed(), idle: last.elapsed() });
        should_flush(self.rows, self.bytes, age, limits)
    }

    /// The accepted events of `[from, next)` that Postgres stored.
    fn events<'a>(
        &'a self,
        from: i64,
        refused: &'a std::collections::BTreeSet<i64>,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        self.batches.iter().flat_map(move |(batch, start)| {
            batch.accepted.iter().filter(move |e| {
                e.coords.offset >= from.max(*start) && !refused.contains(&e.coords.offset)
            })
        })
    }

    /// The dead letters of `[from, next)`.
    fn dead_letters(&self, from: i64) -> Vec<&DeadLetter> {
        self.batches
            .iter()
            .flat_map(|(batch, start)| {
                batch.dead.iter().filter(move |d| d.record.coords.offset >= from.max(*start))
            })
            .collect()
    }

    /// The retractions of `[from, next)` that Postgres stored.
    fn retractions(
        &self,
        from: i64,
        refused: &std::collections::BTreeSet<i64>,
    ) -> Vec<(&Retraction, Action)> {
        self.batches
            .iter()
            .flat_map(|(batch, start)| {
                let invalidations = batch.invalidations.iter().map(|r| (r, Action::Invalidated));
                let deletions = batch.deletions.iter().map(|r| (r, Action::Deleted));
                invalidations.chain(deletions).filter(move |(r, _)| {
                    r.coords.offset >= from.max(*start) && !refused.contains(&r.coords.offset)
                })
            })
            .collect()
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

/// The lake's two tables, opened together.
pub struct LakeTables {
    /// Accepted events.
    pub events: LakeTable,
    /// Invalidations and deletions.
    pub retractions: LakeTable,
    /// Dead letters.
    pub dead_letters: LakeTable,
}

impl LakeTables {
    /// Opens (creating when missing) both tables of the lake `store`.
    pub fn open(store: &LakeStore) -> Result<Self, LakeTableError> {
        Ok(LakeTables {
            events: LakeTable::open(store, TableKind::Events)?,
            retractions: LakeTable::open(store, TableKind::Retractions)?,
            dead_letters: LakeTable::open(store, TableKind::DeadLetters)?,
        })
    }

    /// The table of `kind`.
    pub fn table(&mut self, kind: TableKind) -> &mut LakeTable {
        match kind {
            TableKind::Events => &mut self.events,
            TableKind::Retractions => &mut self.retractions,
            TableKind::DeadLetters => &mut self.dead_letters,
        }
    }

    /// Both tables' progress on a partition, as loaded.
    pub fn progress(&self, topic: &str, partition: i32) -> Result<TablesProgress, LakeTableError> {
        Ok(TablesProgress {
            events: self.events.progress(topic, partition)?,
            retractions: self.retractions.progress(topic, partition)?,
            dead_letters: self.dead_letters.progress(topic, partition)?,
        })
    }

    /// Loads what other writers committed since.
    pub fn refresh(&mut self) -> Result<(), LakeTableError> {
        self.events.refresh()?;
        self.retractions.refresh()?;
        self.dead_letters.refresh()
    }
}

/// The lake's progress on a partition, read afresh (blocking).
pub fn lake_progress(
    store: &LakeStore,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, LakeTableError> {
    Ok(LakeTables::open(store)?.progress(topic, partition)?.lake())
}

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
    suspects: Vec<Suspect>,
    /// When a flush waiting on Postgres last re-read the tables: a full queue asks for
    /// such flushes every 100 ms, and each re-read lists three Delta logs.
    overtaken_checked: Option<Instant>,
    /// Each event type's typed payload columns.
    columns: Arc<PayloadColumns>,
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

fn lake_error(e: impl Classified + std::fmt::Display) -> SinkError {
    SinkError::classified(&e)
}

/// Files a flush wrote for one table, not yet committed.
struct Written {
    adds: Vec<deltalake_core::kernel::Add>,
    paths: Vec<String>,
    bytes: u64,
}

impl Written {
    fn discard(&self, store: &LakeStore) {
        for path in &self.paths {
            let _ = store.delete(path);
        }
    }
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
            suspects: Vec::new(),
            overtaken_checked: None,
            columns: Arc::default(),
        }
    }

    /// Writes each event type's payload fields as typed columns too.
    pub fn with_columns(mut self, columns: Arc<PayloadColumns>) -> Self {
        self.columns = columns;
        self
    }

    /// Checks at start that `root` is a folder this process can write: makes it, then
    /// creates and removes a probe file in it. (An S3 lake is probed the same way by
    /// [`Self::prepare_lake`].)
    pub fn check_root(root: &Path) -> std::io::Result<()> {
        if root.to_string_lossy().contains("://") {
            return Ok(());
        }
        std::fs::create_dir_all(root)?;
        let probe = root.join(format!(".eventline-probe-{}", std::process::id()));
        std::fs::write(&probe, b"")?;
        std::fs::remove_file(&probe)
    }

    /// At start, before any writer: checks the lake can be written, creates its tables
    /// when missing and removes the files no commit can hold any more. Returns how many
    /// it removed.
    pub fn prepare_lake(
        store: &LakeStore,
        format: FileFormat,
        columns: &PayloadColumns,
    ) -> Result<usize, SinkError> {
        let probe = format!(".eventline-probe-{}", uuid::Uuid::new_v4().simple());
        store.put(&probe, Vec::new()).map_err(lake_error)?;
        store.delete(&probe).map_err(lake_error)?;
        let limits = RollLimits {
            max_rows: usize::MAX,
            max_bytes: usize::MAX,
            max_age: Duration::MAX,
            max_idle: None,
        };
        let mut writer = ParquetWriter::new(store.clone(), limits, format, Default::default());
        let wanted: Vec<_> = columns.table_columns().iter().map(|c| c.arrow_field()).collect();
        let added = writer.tables()?.events.ensure_columns(&wanted).map_err(lake_error)?;
        if added > 0 {
            log::info!("lake: added {added} typed payload columns to the events table");
        }
        writer.ensure_empty_retractions()?;
        writer.remove_orphans()
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
            let buffer = PartitionBuffer {
                topic: topic.clone(),
                partition,
                durable,
                range: None,
                batches: Vec::new(),
                rows: 0,
                bytes: 0,
                since: None,
                last_batch: None,
                gap_confirmed: false,
            };
            self.partitions.insert(key.clone(), buffer);
        }
        Ok(self.partitions.get_mut(&key).expect("inserted above"))
    }

    /// Writes the files of one table for `[from, next)` of a buffer.
    fn write_files(
        &self,
        kind: TableKind,
        buf: &PartitionBuffer,
        (from, next): (i64, i64),
        refused: &std::collections::BTreeSet<i64>,
    ) -> Result<Written, SinkError> {
        let mut written = Written { adds: Vec::new(), paths: Vec::new(), bytes: 0 };
        let result = self.write_files_into(kind, buf, (from, next), refused, &mut written);
        if result.is_err() {
            written.discard(&self.store);
        }
        result.map(|()| written)
    }

    fn write_files_into(
        &self,
        kind: TableKind,
        buf: &PartitionBuffer,
        (from, next): (i64, i64),
        refused: &std::collections::BTreeSet<i64>,
        written: &mut Written,
    ) -> Result<(), SinkError> {
        match kind {
            TableKind::DeadLetters => {
                let rows = buf.dead_letters(from);
                if rows.is_empty() {
                    return Ok(());
                }
                let name =
                    data_file_name(&buf.topic, buf.partition, from, next - 1, &self.writer_id);
                let path = kind.in_lake(&name);
                let now = chrono::Utc::now().timestamp_micros();
                let batch = dead_letters_to_record_batch(&rows, now).map_err(lake_error)?;
                let bytes = encode_parquet(&batch, self.format).map_err(lake_error)?;
                written.paths.push(path.clone());
                let size = self.store.put(&path, bytes).map_err(lake_error)?;
                written.bytes += size;
                written.adds.push(add_action(name, HashMap::new(), size, rows.len()));
            }
            TableKind::Retractions => {
                let rows = buf.retractions(from, refused);
                if rows.is_empty() {
                    return Ok(());
                }
                let name = retraction_file_name(
                    &buf.topic,
                    buf.partition,
                    from,
                    next - 1,
                    &self.writer_id,
                );
                let path = kind.in_lake(&name);
                let batch = retractions_to_record_batch(&rows).map_err(lake_error)?;
                let bytes = encode_parquet(&batch, self.format).map_err(lake_error)?;
                written.paths.push(path.clone());
                let size = self.store.put(&path, bytes).map_err(lake_error)?;
                written.bytes += size;
                written.adds.push(add_action(name, HashMap::new(), size, rows.len()));
            }
            TableKind::Events => {
                let groups = group_by_folder(buf.events(from, refused));
                let name =
                    data_file_name(&buf.topic, buf.partition, from, next - 1, &self.writer_id);
                let ingested_at = chrono::Utc::now().timestamp_micros();
                for (dir, events) in &groups {
                    let relative = dir.join(&name).to_string_lossy().replace('\\', "/");
                    let path = kind.in_lake(&relative);
                    let batch =
                        to_record_batch(events, ingested_at, &self.columns).map_err(lake_error)?;
                    let bytes = encode_parquet(&batch, self.format).map_err(lake_error)?;
                    written.paths.push(path.clone());
                    let size = self.store.put(&path, bytes).map_err(lake_error)?;
                    written.bytes += size;
                    let first = events[0];
                    let values =
                        partition_values(&first.event_type, first.occurred_at.date_naive());
                    written.adds.push(add_action(relative, values, size, events.len()));
                }
            }
        }
        Ok(())
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
            self.remove_passed_suspects(kind, (&topic, partition), next)?;
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

    /// Removes files no table holds and none can hold any more: those of a flush that
    /// wrote and then crashed or was fenced before committing. A file can still be
    /// committed only if its range starts at or above its table's progress (a flush in
    /// progress elsewhere), so only files starting below it are removed.
    fn remove_orphans(&mut self) -> Result<usize, SinkError> {
        let store = self.store.clone();
        let mut removed = 0;
        let mut found = Vec::new();
        for kind in TableKind::COMMIT_ORDER {
            // List first, then load the table: a file another process commits after the
            // listing is not listed, and every listed file that was committed by then
            // is in the snapshot. (The other way round, a file committed in between
            // would look like an orphan.)
            let listed = store.table_files(kind).map_err(lake_error)?;
            let table = self.tables()?.table(kind);
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
    fn remove_passed_suspects(
        &mut self,
        kind: TableKind,
        (topic, partition): (&str, i32),
        next: i64,
    ) -> Result<(), SinkError> {
        let passes = |s: &Suspect| {
            s.kind == kind && s.partition == partition && s.topic == topic && s.first < next
        };
        if !self.suspects.iter().any(passes) {
            return Ok(());
        }
        let store = self.store.clone();
        let held: HashSet<String> = self
            .tables()?
            .table(kind)
            .files()
            .map_err(lake_error)?
            .into_iter()
            .map(|(p, _)| kind.in_lake(&p))
            .collect();
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

    /// Gives the retractions table its empty file, so the documented glob over
    /// `_retractions/*.retractions` always finds one.
    fn ensure_empty_retractions(&mut self) -> Result<(), SinkError> {
        let path = TableKind::Retractions.in_lake(EMPTY_RETRACTIONS);
        let (format, store) = (self.format, self.store.clone());
        let table = &mut self.tables()?.retractions;
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
}

/// How often a flush waiting on Postgres may re-read the tables to find out whether
/// another writer overtook its buffer.
const OVERTAKEN_RECHECK: Duration = Duration::from_secs(1);

fn describe(progress: Option<i64>) -> String {
    progress.map_or("nothing".to_string(), |p| format!("offset {p}"))
}

/// Commits `adds` and the partition's new progress `next` to `table`, if the table's
/// progress is still `believed`. A commit that loses the race to another writer is
/// checked again on the newer snapshot and retried. `Ok(None)`: committed;
/// `Ok(Some(now))`: fenced, the table holds `now`.
fn commit_checked(
    table: &mut LakeTable,
    adds: Vec<deltalake_core::kernel::Add>,
    (topic, partition): (&str, i32),
    believed: Option<i64>,
    next: i64,
) -> Result<Option<Option<i64>>, SinkError> {
    const ATTEMPTS: u32 = 50;
    for attempt in 0..ATTEMPTS {
        let now = table.progress(topic, partition).map_err(lake_error)?;
        match check_commit(believed, now) {
            CommitCheck::Commit => {}
            CommitCheck::Fenced => return Ok(Some(now)),
            CommitCheck::WentBack => {
                return Err(SinkError::Fatal(format!(
                    "the lake's {} table at {} holds {topic}/{partition} only up to {}, less \
                     than this process stored there ({}): the lake was deleted or replaced \
                     while eventline ran; restart it to replay from the lake's progress",
                    table.kind().name(),
                    table.path(),
                    describe(now),
                    describe(believed),
                )))
            }
        }
        let actions = adds.iter().cloned().map(Into::into).collect();
        let operation = append_operation(table.kind());
        match table
            .try_commit(actions, &[(topic, partition, next)], operation)
            .map_err(lake_error)?
        {
            CommitAttempt::Landed(_) => return Ok(None),
            CommitAttempt::Lost => {
                // Several processes commit to one table: back off a little, so that
                // the same two do not keep colliding.
                let pause =
                    Duration::from_millis(2 + u64::from(attempt) * 3 + rand::random::<u64>() % 10);
                std::thread::sleep(pause);
                table.refresh().map_err(lake_error)?;
            }
        }
    }
    Err(SinkError::Retryable(format!(
        "could not commit {topic}/{partition} to the lake's {} table: {ATTEMPTS} commits by other \
         writers came first",
        table.kind().name()
    )))
}

impl SinkWriter for ParquetWriter {
    const ID: SinkId = SinkId::Lake;

    fn open(&mut self) -> Result<(), SinkError> {
        self.tables()?;
        self.ensure_empty_retractions()?;
        let removed = self.remove_orphans()?;
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
    fn a_purge_rewrite_is_told_from_a_flush_file() {
        assert!(is_rewrite("t-0-00000000000000000000-00000000000000000004-purge1a2b3c4d.parquet"));
        assert!(!is_rewrite("t-0-00000000000000000000-00000000000000000004-3f9a0c1d2e4b.parquet"));
    }

    #[test]
    fn a_commit_starts_exactly_where_the_table_stands() {
        assert_eq!(check_commit(None, None), CommitCheck::Commit);
        assert_eq!(check_commit(Some(381), Some(381)), CommitCheck::Commit);
        assert_eq!(check_commit(Some(381), Some(500)), CommitCheck::Fenced);
        assert_eq!(check_commit(None, Some(10)), CommitCheck::Fenced);
        // The incident of issue 18: a writer that believed 1133 over a table at 381.
        assert_eq!(check_commit(Some(1133), Some(381)), CommitCheck::WentBack);
        assert_eq!(check_commit(Some(1133), None), CommitCheck::WentBack);
        let p = TablesProgress { events: Some(10), retractions: Some(12), dead_letters: None };
        assert_eq!(p.lake(), Some(10));
        assert_eq!(
            TablesProgress { events: Some(10), retractions: None, dead_letters: Some(10) }.lake(),
            None
        );
    }

    #[test]
    fn a_still_buffer_flushes_before_its_age_unless_idle_flushing_is_off() {
        assert!(should_flush(1, 1, age(1_200, 1_000), &LIMITS));
        assert!(!should_flush(1, 1, age(1_200, 999), &LIMITS));
        let no_idle = RollLimits { max_idle: None, ..LIMITS };
        assert!(!should_flush(1, 1, age(4_999, 4_000), &no_idle));
    }
}
