//! Names and paths inside the lake, kept pure (DESIGN.md section 4).
//!
//! ```text
//! lake/event_type=account_created/year=2026/month=11/day=22/crm.events.raw-1-00000000000000000100-00000000000000000199.parquet
//! lake/_eventline/log/crm.events.raw-1/00000000000000000007.json     commit log entry 7
//! lake/_eventline/staging/crm.events.raw-1/00000000000000000007-{writer}/0.staged   before publishing
//! lake/_retractions/crm.events.raw-1-00000000000000000100-00000000000000000199.retractions
//! ```
//!
//! Retraction files (invalidations and deletions) are Parquet too, but named
//! `.retractions`, so the events glob `lake/**/*.parquet` never mixes them in.

use chrono::{Datelike, NaiveDate};
use std::path::PathBuf;

/// Folder of the commit log entries of one topic partition.
pub fn log_dir(topic: &str, partition: i32) -> PathBuf {
    PathBuf::from("_eventline").join("log").join(format!("{topic}-{partition}"))
}

/// File name of commit log entry `version`.
pub fn log_entry_name(version: u64) -> String {
    format!("{version:020}.json")
}

/// Parses a log entry file name back to its version.
pub fn parse_log_entry_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

/// Folder of all staged files of one topic partition.
pub fn staging_root(topic: &str, partition: i32) -> PathBuf {
    PathBuf::from("_eventline").join("staging").join(format!("{topic}-{partition}"))
}

/// Folder of the staged (not yet published) files of one flush attempt: the version it
/// hopes to commit and the writer's own id, so two writers never share a folder.
pub fn staging_dir(topic: &str, partition: i32, version: u64, writer: &str) -> PathBuf {
    staging_root(topic, partition).join(format!("{version:020}-{writer}"))
}

/// The Hive partition folder for an event type and a UTC day.
pub fn partition_dir(event_type: &str, at: NaiveDate) -> PathBuf {
    PathBuf::from(format!("event_type={event_type}"))
        .join(format!("year={:04}", at.year()))
        .join(format!("month={:02}", at.month()))
        .join(format!("day={:02}", at.day()))
}

/// The final file name: topic, partition and the inclusive offset range of the flush.
/// Offset ranges of flushes never overlap, so names never collide.
pub fn data_file_name(topic: &str, partition: i32, first: i64, last: i64) -> String {
    format!("{topic}-{partition}-{first:020}-{last:020}.parquet")
}

/// Folder of the retraction files (invalidations and deletions).
pub const RETRACTIONS_DIR: &str = "_retractions";

/// A flush's retraction file: like its data files, named by topic, partition and range.
pub fn retraction_file(topic: &str, partition: i32, first: i64, last: i64) -> PathBuf {
    PathBuf::from(RETRACTIONS_DIR)
        .join(format!("{topic}-{partition}-{first:020}-{last:020}.retractions"))
}

/// An empty retraction file, always present, so that the documented query over
/// `_retractions/*.retractions` works on a lake that has none yet.
pub fn empty_retraction_file() -> PathBuf {
    PathBuf::from(RETRACTIONS_DIR).join("empty.retractions")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_folders_are_type_then_zero_padded_date() {
        let day = NaiveDate::from_ymd_opt(2026, 1, 2).unwrap();
        assert_eq!(
            partition_dir("account_created", day),
            PathBuf::from("event_type=account_created/year=2026/month=01/day=02")
        );
    }

    #[test]
    fn file_names_sort_by_offset() {
        let a = data_file_name("crm.events.raw", 1, 100, 199);
        let b = data_file_name("crm.events.raw", 1, 200, 1_000);
        assert_eq!(a, "crm.events.raw-1-00000000000000000100-00000000000000000199.parquet");
        assert!(a < b);
    }

    #[test]
    fn log_entry_names_round_trip() {
        assert_eq!(parse_log_entry_name(&log_entry_name(42)), Some(42));
        assert_eq!(parse_log_entry_name("42.json"), None);
        assert_eq!(parse_log_entry_name("00000000000000000042.json.tmp"), None);
        assert_eq!(log_dir("t", 3), PathBuf::from("_eventline/log/t-3"));
    }
}
