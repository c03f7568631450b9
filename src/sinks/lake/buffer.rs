//! A partition's buffer in the lake writer: the range and rows it holds until a roll
//! limit ([`RollLimits`], [`should_flush`]) makes it files, and which of its records a
//! flush of `[from, next)` writes.

use crate::record::{DeadLetter, Event, Retraction, SharedBatch};
use crate::sinks::lake::commit::TablesProgress;
use crate::sinks::lake::files::Action;
use std::collections::BTreeSet;
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
pub(super) struct PartitionBuffer {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    /// What this writer believes each table holds of the partition.
    pub(super) durable: TablesProgress,
    /// Offsets covered by the buffer: `[first, next)`; `None` while empty.
    pub(super) range: Option<(i64, i64)>,
    /// The buffered batches and the offset each is stored from. The supervisor holds
    /// the same batches until they are durable, so buffering copies nothing.
    pub(super) batches: Vec<(SharedBatch, i64)>,
    pub(super) rows: usize,
    pub(super) bytes: usize,
    pub(super) since: Option<Instant>,
    pub(super) last_batch: Option<Instant>,
    /// The tables, read again, still end below the buffer's first offset: records
    /// Kafka no longer has (retention), which the buffer may skip.
    pub(super) gap_confirmed: bool,
}

impl PartitionBuffer {
    /// An empty buffer for a partition the tables hold up to `durable`.
    pub(super) fn new(topic: Arc<str>, partition: i32, durable: TablesProgress) -> Self {
        PartitionBuffer {
            topic,
            partition,
            durable,
            range: None,
            batches: Vec::new(),
            rows: 0,
            bytes: 0,
            since: None,
            last_batch: None,
            gap_confirmed: false,
        }
    }

    /// Empty, at this durable progress.
    pub(super) fn reset(&mut self, durable: TablesProgress) {
        self.durable = durable;
        self.range = None;
        self.batches.clear();
        self.rows = 0;
        self.bytes = 0;
        self.since = None;
        self.last_batch = None;
        self.gap_confirmed = false;
    }

    pub(super) fn expected(&self) -> Option<i64> {
        self.range.map(|(_, next)| next).or(self.durable.lake())
    }

    pub(super) fn due(&self, limits: &RollLimits) -> bool {
        let age = self
            .since
            .zip(self.last_batch)
            .map(|(since, last)| BufferAge { oldest: since.elapsed(), idle: last.elapsed() });
        should_flush(self.rows, self.bytes, age, limits)
    }

    /// The accepted events of `[from, next)` that Postgres stored.
    pub(super) fn events<'a>(
        &'a self,
        from: i64,
        refused: &'a BTreeSet<i64>,
    ) -> impl Iterator<Item = &'a Event> + 'a {
        self.batches.iter().flat_map(move |(batch, start)| {
            batch.accepted.iter().filter(move |e| {
                e.coords.offset >= from.max(*start) && !refused.contains(&e.coords.offset)
            })
        })
    }

    /// The dead letters of `[from, next)`.
    pub(super) fn dead_letters(&self, from: i64) -> Vec<&DeadLetter> {
        self.batches
            .iter()
            .flat_map(|(batch, start)| {
                batch.dead.iter().filter(move |d| d.record.coords.offset >= from.max(*start))
            })
            .collect()
    }

    /// The retractions of `[from, next)` that Postgres stored.
    pub(super) fn retractions(
        &self,
        from: i64,
        refused: &BTreeSet<i64>,
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
