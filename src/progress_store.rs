//! Reads both sinks' durable progress for a partition: `sink_progress` in Postgres and
//! the latest commit log entry in the lake. The source resumes from the lower one.

use crate::db::{self, PgPool};
use crate::lake_log;
use crate::sink::SinkId;
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
    pub fn read(&self, partition: i32) -> Result<SinkProgress, String> {
        let mut conn = db::conn(&self.pool).map_err(|e| e.to_string())?;
        let postgres =
            db::read_progress(&mut conn, SinkId::Postgres.as_str(), &self.topic, partition)
                .map_err(|e| e.to_string())?;
        let lake = lake_log::latest(&self.lake_root, &self.topic, partition)
            .map_err(|e| e.to_string())?
            .map(|e| e.next_offset);
        Ok(SinkProgress { postgres, lake })
    }
}
