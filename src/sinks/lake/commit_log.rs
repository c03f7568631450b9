//! The lake's commit log, like Delta Lake's: one JSON entry per flush under
//! `_eventline/log/{topic}-{partition}/{version:020}.json`, created with create-new
//! semantics (write a temporary file, fsync, then hard-link it into place: the link
//! fails if the entry exists). The latest entry's `next_offset` is the lake's progress
//! on that partition; a writer that fails to create an entry was fenced.

use crate::sinks::lake::layout::{log_dir, log_entry_name, parse_log_entry_name};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// One published file of a flush.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedFile {
    /// Staged path, relative to the lake root.
    pub staged: PathBuf,
    /// Final Hive path, relative to the lake root.
    pub path: PathBuf,
    /// Rows in the file.
    pub rows: u64,
}

/// One commit of one partition: the offsets it covers and the files it published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Sequence number, from 1.
    pub version: u64,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// First offset covered.
    pub first_offset: i64,
    /// One past the last offset covered: the lake's progress after this commit.
    pub next_offset: i64,
    /// Files published by this commit (possibly none: offsets with no accepted event).
    pub files: Vec<LoggedFile>,
    /// When it was committed.
    pub committed_at: chrono::DateTime<chrono::Utc>,
}

/// Lake I/O errors.
#[derive(Debug, thiserror::Error)]
pub enum LakeLogError {
    /// Another writer created this version first.
    #[error("fenced: log entry {0} exists")]
    Fenced(u64),
    /// File system failure.
    #[error("lake I/O on {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An entry could not be parsed.
    #[error("lake log entry {path} unreadable: {message}")]
    Corrupt {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LakeLogError + '_ {
    move |source| LakeLogError::Io { path: path.to_path_buf(), source }
}

/// Fsyncs a folder so a rename or link inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), LakeLogError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// The latest committed entry of a partition, if any.
pub fn latest(root: &Path, topic: &str, partition: i32) -> Result<Option<LogEntry>, LakeLogError> {
    let dir = root.join(log_dir(topic, partition));
    let versions = match fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| parse_log_entry_name(&e.file_name().to_string_lossy())),
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&dir)(e)),
    };
    match versions.max() {
        Some(v) => read(root, topic, partition, v).map(Some),
        None => Ok(None),
    }
}

/// Reads entry `version`.
pub fn read(
    root: &Path,
    topic: &str,
    partition: i32,
    version: u64,
) -> Result<LogEntry, LakeLogError> {
    let path = root.join(log_dir(topic, partition)).join(log_entry_name(version));
    let text = fs::read_to_string(&path).map_err(io(&path))?;
    serde_json::from_str(&text).map_err(|e| LakeLogError::Corrupt { path, message: e.to_string() })
}

/// Creates `entry` unless its version exists (then: [`LakeLogError::Fenced`]).
pub fn create(root: &Path, entry: &LogEntry) -> Result<(), LakeLogError> {
    let dir = root.join(log_dir(&entry.topic, entry.partition));
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(log_entry_name(entry.version));
    let tmp = dir.join(format!(".{}.tmp-{}", log_entry_name(entry.version), uuid::Uuid::new_v4()));
    let body = serde_json::to_vec_pretty(entry).expect("log entries serialise");
    let written =
        File::create(&tmp).and_then(|mut f| f.write_all(&body).and_then(|_| f.sync_all()));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io(&tmp)(e));
    }
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&dir),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(LakeLogError::Fenced(entry.version)),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Moves each staged file of `entry` to its final path. Idempotent: a file already in
/// place (published by an earlier attempt or another process) counts as done.
pub fn publish(root: &Path, entry: &LogEntry) -> Result<(), LakeLogError> {
    let mut dirs = Vec::new();
    for file in &entry.files {
        let (staged, target) = (root.join(&file.staged), root.join(&file.path));
        let dir = target.parent().expect("data files live in a partition folder").to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        match fs::rename(&staged, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound && target.exists() => {}
            Err(e) => return Err(io(&staged)(e)),
        }
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.iter().try_for_each(|d| sync_dir(d))
}

/// Removes staging folders of this partition that can no longer be committed: those
/// at or below the latest version (the committed one's files are already published).
/// Folders above it may belong to a flush in progress elsewhere and are left alone.
pub fn remove_stale_staging(
    root: &Path,
    topic: &str,
    partition: i32,
    latest_version: u64,
) -> Result<usize, LakeLogError> {
    let dir = root.join(crate::sinks::lake::layout::staging_root(topic, partition));
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let version = name.split('-').next().and_then(|v| v.parse::<u64>().ok());
        if version.is_some_and(|v| v <= latest_version) {
            fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl crate::error::class::Classified for LakeLogError {
    fn class(&self) -> crate::error::class::FailureClass {
        match self {
            LakeLogError::Fenced(_) => crate::error::class::FailureClass::Fenced,
            LakeLogError::Io { source, .. } => crate::error::class::io_class(source),
            // Someone else's file in our log: a person must look at it.
            LakeLogError::Corrupt { .. } => crate::error::class::FailureClass::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u64, files: Vec<LoggedFile>) -> LogEntry {
        LogEntry {
            version,
            topic: "t".into(),
            partition: 0,
            first_offset: 0,
            next_offset: 10 * version as i64,
            files,
            committed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn create_is_create_new_and_latest_finds_the_highest_version() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(latest(root.path(), "t", 0).unwrap(), None);
        create(root.path(), &entry(1, vec![])).unwrap();
        create(root.path(), &entry(2, vec![])).unwrap();
        assert!(matches!(create(root.path(), &entry(2, vec![])), Err(LakeLogError::Fenced(2))));
        assert_eq!(latest(root.path(), "t", 0).unwrap().unwrap().next_offset, 20);
        // No temporary file is left behind, even after a fenced attempt.
        let names: Vec<_> = fs::read_dir(root.path().join(log_dir("t", 0)))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn publish_is_idempotent_and_stale_staging_is_removed() {
        let root = tempfile::tempdir().unwrap();
        let staged = crate::sinks::lake::layout::staging_dir("t", 0, 1, "w").join("0.staged");
        fs::create_dir_all(root.path().join(staged.parent().unwrap())).unwrap();
        fs::write(root.path().join(&staged), b"data").unwrap();
        let file = LoggedFile {
            staged,
            path: PathBuf::from("event_type=x/year=2026/month=01/day=01/f.parquet"),
            rows: 1,
        };
        let e = entry(1, vec![file.clone()]);
        publish(root.path(), &e).unwrap();
        publish(root.path(), &e).unwrap();
        assert_eq!(fs::read(root.path().join(&file.path)).unwrap(), b"data");
        let leftover =
            root.path().join(crate::sinks::lake::layout::staging_dir("t", 0, 2, "other"));
        fs::create_dir_all(&leftover).unwrap();
        assert_eq!(remove_stale_staging(root.path(), "t", 0, 1).unwrap(), 1);
        assert!(leftover.exists(), "a flush above the latest version may be in progress");
        assert_eq!(remove_stale_staging(root.path(), "t", 0, 2).unwrap(), 1);
        assert!(!leftover.exists());
    }
}
