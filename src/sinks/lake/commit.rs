//! The Delta commit of a flush and the progress it carries: each table's `txn` version
//! per partition ([`TablesProgress`]), the rule a commit is checked by
//! ([`check_commit`]), and the commit itself, retried when another writer's lands
//! first ([`commit_checked`]).

use crate::failure::Classified;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::{
    append_operation, CommitAttempt, LakeTable, LakeTableError, TableKind,
};
use crate::sinks::worker::SinkError;
use std::time::Duration;

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

    pub(super) fn of(&self, kind: TableKind) -> Option<i64> {
        match kind {
            TableKind::Events => self.events,
            TableKind::Retractions => self.retractions,
            TableKind::DeadLetters => self.dead_letters,
        }
    }

    pub(super) fn set(&mut self, kind: TableKind, next: Option<i64>) {
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

/// A lake error as the sink supervisor classes it.
pub(super) fn lake_error(e: impl Classified + std::fmt::Display) -> SinkError {
    SinkError::classified(&e)
}

/// A partition's progress as a reader of a fencing message wants it.
pub(super) fn describe(progress: Option<i64>) -> String {
    progress.map_or("nothing".to_string(), |p| format!("offset {p}"))
}

/// Commits `adds` and the partition's new progress `next` to `table`, if the table's
/// progress is still `believed`. A commit that loses the race to another writer is
/// checked again on the newer snapshot and retried. `Ok(None)`: committed;
/// `Ok(Some(now))`: fenced, the table holds `now`.
pub(super) fn commit_checked(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
