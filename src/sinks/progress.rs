//! Reads both sinks' durable progress for a partition: `sink_progress` in Postgres and
//! the latest commit log entry in the lake, whose files it finishes publishing. The
//! source resumes from the lower one.

use crate::db::{self, PgPool};
use crate::error::class::{Classified, FailureClass};
use crate::record::SinkId;
use crate::sinks::lake::writer::ParquetWriter;
use std::path::PathBuf;

/// Where the sinks keep their progress.
#[derive(Clone)]
pub struct ProgressStore {
    /// Postgres pool.
    pub pool: PgPool,
    /// Lake root.
    pub lake_root: PathBuf,
    /// Topic.
    pub topic: String,
}

/// Both sinks' progress on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SinkProgress {
    /// Next offset Postgres has not stored.
    pub postgres: Option<i64>,
    /// Next offset the lake has not stored.
    pub lake: Option<i64>,
}

impl ProgressStore {
    /// Reads both (blocking).
    pub fn read(&self, partition: i32) -> Result<SinkProgress, ProgressError> {
        let mut conn = db::conn(&self.pool)?;
        let postgres =
            db::read_progress(&mut conn, SinkId::Postgres.as_str(), &self.topic, partition)?;
        // The latest entry's publish is finished here, on assignment, and not only when
        // the lake writer next gets a batch for the partition: a process killed between
        // committing an entry and renaming its files left them staged, and a partition
        // with no new records kept them invisible to readers while its progress counted
        // them. Renames are idempotent, and only staging at or below the committed
        // version is removed, so a flush in flight elsewhere is not disturbed.
        let (_, lake) = ParquetWriter::recover_partition(&self.lake_root, &self.topic, partition)?;
        Ok(SinkProgress { postgres, lake })
    }
}

impl ProgressStore {
    /// Reads both without finishing any publish (blocking): for partitions this process
    /// may not own, looked at by the group watchdog.
    pub fn peek(&self, partition: i32) -> Result<SinkProgress, ProgressError> {
        let mut conn = db::conn(&self.pool)?;
        let postgres =
            db::read_progress(&mut conn, SinkId::Postgres.as_str(), &self.topic, partition)?;
        let lake = crate::sinks::lake::commit_log::latest(&self.lake_root, &self.topic, partition)?
            .map(|entry| entry.next_offset);
        Ok(SinkProgress { postgres, lake })
    }
}

/// Why a sink's progress could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// Postgres progress could not be read.
    #[error("reading postgres progress: {0}")]
    Db(#[from] crate::db::DbError),
    /// The lake's commit log could not be read.
    #[error("reading the lake's progress: {0}")]
    LakeLog(#[from] crate::sinks::lake::commit_log::LakeLogError),
}

impl Classified for ProgressError {
    fn class(&self) -> FailureClass {
        match self {
            ProgressError::Db(e) => e.class(),
            ProgressError::LakeLog(e) => e.class(),
        }
    }
}
