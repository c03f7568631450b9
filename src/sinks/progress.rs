//! Reads both sinks' durable progress for a partition: `sink_progress` in Postgres and
//! the `txn` versions of the lake's Delta tables. The source resumes from the lower one.

use crate::db::{self, PgPool};
use crate::failure::{Classified, FailureClass};
use crate::record::SinkId;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::LakeTableError;

/// Where the sinks keep their progress.
#[derive(Clone)]
pub struct ProgressStore {
    /// Postgres pool.
    pub pool: PgPool,
    /// Where the lake is.
    pub lake: crate::settings::LakeSettings,
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
    /// Reads both (blocking), for the partitions this process owns and for those it
    /// may not (the group watchdog looks at every partition).
    pub fn read(&self, partition: i32) -> Result<SinkProgress, ProgressError> {
        let mut conn = db::conn(&self.pool)?;
        let postgres =
            db::read_progress(&mut conn, SinkId::Postgres.as_str(), &self.topic, partition)?;
        let lake = crate::sinks::lake::commit::lake_progress(
            &LakeStore::from_settings(&self.lake).map_err(LakeTableError::from)?,
            &self.topic,
            partition,
        )?;
        Ok(SinkProgress { postgres, lake })
    }
}

/// Why a sink's progress could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    /// Postgres progress could not be read.
    #[error("reading postgres progress: {0}")]
    Db(#[from] crate::db::DbError),
    /// The lake's tables could not be read.
    #[error("reading the lake's progress: {0}")]
    Lake(#[from] crate::sinks::lake::table::LakeTableError),
}

impl Classified for ProgressError {
    fn class(&self) -> FailureClass {
        match self {
            ProgressError::Db(e) => e.class(),
            ProgressError::Lake(e) => e.class(),
        }
    }
}
