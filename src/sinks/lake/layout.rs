//! Names and paths inside the lake, kept pure.
//!
//! ```text
//! lake/_delta_log/00000000000000000007.json        the events table's Delta log
//! lake/event_type=account_created/year=2026/month=11/day=22/crm.events.raw-1-00000000000000000100-00000000000000000199-3f9a0c1d2e4b.parquet
//! lake/_retractions/_delta_log/…                    the retractions table's Delta log
//! lake/_retractions/crm.events.raw-1-00000000000000000100-00000000000000000199-3f9a0c1d2e4b.retractions
//! ```
//!
//! A file is named by its source topic and partition, the inclusive offset range of the
//! flush, and a tag of the writer that made it (or of the purge that rewrote it): two
//! writers racing for the same range (a zombie and the partition's new owner) never
//! write the same name, so the loser deletes only its own files.
//!
//! Retraction files (invalidations and deletions) are Parquet too, but named
//! `.retractions`, so the events glob `lake/event_type=*/year=*/month=*/day=*/*.parquet`
//! never mixes them in.

use chrono::{Datelike, NaiveDate};
use std::path::PathBuf;

/// The retractions table's folder under the lake root.
pub const RETRACTIONS_TABLE: &str = "_retractions";

/// The dead letters' table, under the lake root.
pub const DEAD_LETTERS_TABLE: &str = "_dead_letters";

/// The Hive partition columns of the events table, in folder order.
pub const PARTITION_COLUMNS: [&str; 4] = ["event_type", "year", "month", "day"];

/// Which of the lake's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Accepted events.
    Events,
    /// Invalidations and deletions.
    Retractions,
    /// Records refused by the contracts (the DLQ as a table).
    DeadLetters,
}

impl TableKind {
    /// All three, in the order a flush commits them: dead letters first (their table
    /// gets a commit only when a range has some, so its progress may lag the others';
    /// committing it first means every dead letter below the lake's progress is in it),
    /// then retractions, so a reader never sees an event without the retractions that
    /// arrived with it.
    pub const COMMIT_ORDER: [TableKind; 3] =
        [TableKind::DeadLetters, TableKind::Retractions, TableKind::Events];

    /// Folder under the lake root ("" for the root itself).
    pub fn dir(self) -> &'static str {
        match self {
            TableKind::Events => "",
            TableKind::Retractions => RETRACTIONS_TABLE,
            TableKind::DeadLetters => DEAD_LETTERS_TABLE,
        }
    }

    /// A path relative to this table's root, as a path relative to the lake root.
    pub fn in_lake(self, relative: &str) -> String {
        match self.dir() {
            "" => relative.to_string(),
            dir => format!("{dir}/{relative}"),
        }
    }

    /// The table's name in its metadata and in messages.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Events => "events",
            TableKind::Retractions => "retractions",
            TableKind::DeadLetters => "dead_letters",
        }
    }
}

/// The Hive partition folder for an event type and a UTC day.
pub fn partition_dir(event_type: &str, at: NaiveDate) -> PathBuf {
    PathBuf::from(format!("event_type={event_type}"))
        .join(format!("year={:04}", at.year()))
        .join(format!("month={:02}", at.month()))
        .join(format!("day={:02}", at.day()))
}

/// A file's name: topic, partition, the inclusive offset range and the writer's tag
/// (no dashes), with `extension`.
pub fn file_name(
    topic: &str,
    partition: i32,
    (first, last): (i64, i64),
    tag: &str,
    extension: &str,
) -> String {
    format!("{topic}-{partition}-{first:020}-{last:020}-{tag}.{extension}")
}

/// A data file's name.
pub fn data_file_name(topic: &str, partition: i32, first: i64, last: i64, tag: &str) -> String {
    file_name(topic, partition, (first, last), tag, "parquet")
}

/// A retraction file's name (at the retractions table's root).
pub fn retraction_file_name(
    topic: &str,
    partition: i32,
    first: i64,
    last: i64,
    tag: &str,
) -> String {
    file_name(topic, partition, (first, last), tag, "retractions")
}

/// What a file name says of its contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOrigin {
    /// Source topic (may contain dashes).
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// First offset of the flush.
    pub first: i64,
    /// Last offset of the flush.
    pub last: i64,
}

/// Parses a name made by [`file_name`] (the extension is ignored).
pub fn parse_file_name(name: &str) -> Option<FileOrigin> {
    let stem = name.rsplit_once('.')?.0;
    let mut parts = stem.rsplitn(5, '-');
    let _tag = parts.next()?;
    let last = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let partition = parts.next()?.parse().ok()?;
    let topic = parts.next()?.to_string();
    Some(FileOrigin { topic, partition, first, last })
}

/// The partition values a data file of this event type and day has in the Delta log
/// (the folder names' values, the numbers unpadded).
pub fn partition_values(
    event_type: &str,
    at: NaiveDate,
) -> std::collections::HashMap<String, Option<String>> {
    [
        ("event_type", event_type.to_string()),
        ("year", at.year().to_string()),
        ("month", at.month().to_string()),
        ("day", at.day().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Some(v)))
    .collect()
}

/// The name of the retractions table's empty file, so that the documented query over
/// `_retractions/*.retractions` works on a lake that has none yet.
pub const EMPTY_RETRACTIONS: &str = "empty.retractions";

/// The tag of files a compaction writes (no dashes: it ends a file name).
pub const COMPACT_TAG: &str = "compact";

/// The tag of files a purge writes (no dashes: it ends a file name).
pub const PURGE_TAG: &str = "purge";

/// The tag that ends a file name's stem (`...-{tag}`), if any.
fn tag_of(name: &str) -> Option<&str> {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    stem.rsplit('-').next()
}

/// Whether a file name is one a compaction wrote.
pub fn is_compaction_file(name: &str) -> bool {
    tag_of(name).is_some_and(|tag| tag.starts_with(COMPACT_TAG))
}

/// Whether a file name is a purge's rewrite rather than a flush's file.
pub fn is_rewrite(name: &str) -> bool {
    tag_of(name).is_some_and(|tag| tag.starts_with(PURGE_TAG))
}

/// Whether `path` (relative to the lake root) is a file the table of `kind` could hold
/// (data files of the events table in its Hive folders, retraction and dead-letter files
/// at their table's root), or a writer's temporary file beside them; never a Delta log.
pub fn is_table_file(kind: TableKind, path: &str) -> bool {
    match kind {
        TableKind::Events => {
            path.starts_with("event_type=")
                && (path.ends_with(".parquet") || path.ends_with(".tmp"))
        }
        TableKind::Retractions | TableKind::DeadLetters => {
            let rest = path.strip_prefix(&format!("{}/", kind.dir())).unwrap_or("/");
            let ext = if kind == TableKind::Retractions { ".retractions" } else { ".parquet" };
            !rest.contains('/') && (rest.ends_with(ext) || rest.ends_with(".tmp"))
        }
    }
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
        let values = partition_values("account_created", day);
        assert_eq!(values["month"].as_deref(), Some("1"));
    }

    #[test]
    fn file_names_sort_by_offset_and_parse_back_even_with_dashes_in_the_topic() {
        let a = data_file_name("crm-events.raw", 1, 100, 199, "w1");
        let b = data_file_name("crm-events.raw", 1, 200, 1_000, "w1");
        assert_eq!(a, "crm-events.raw-1-00000000000000000100-00000000000000000199-w1.parquet");
        assert!(a < b);
        let origin = parse_file_name(&a).unwrap();
        assert_eq!(
            origin,
            FileOrigin { topic: "crm-events.raw".into(), partition: 1, first: 100, last: 199 }
        );
        assert_eq!(parse_file_name("junk.parquet"), None);
        assert_eq!(parse_file_name(EMPTY_RETRACTIONS), None);
    }

    #[test]
    fn a_purge_rewrite_is_told_from_a_flush_file() {
        assert!(is_rewrite("t-0-00000000000000000000-00000000000000000004-purge1a2b3c4d.parquet"));
        assert!(!is_rewrite("t-0-00000000000000000000-00000000000000000004-3f9a0c1d2e4b.parquet"));
    }
}
