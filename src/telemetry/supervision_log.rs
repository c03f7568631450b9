//! The supervision log: an append-only JSON lines file of every start, failure,
//! restart, recovery and give-up of a supervised writer. It is a plain file, not a
//! database table, so it keeps working through a Postgres outage.
//!
//! It rotates by size, as logrotate would: `supervision.jsonl` becomes
//! `supervision.jsonl.1`, `.1` becomes `.2`, and the oldest beyond `keep` goes. Several
//! processes may share one log (a group on one host, a drill), so rotation and appends
//! happen under an advisory lock on `supervision.jsonl.lock`, and each append opens the
//! file by name: a process never writes into a file another one rotated away. Crates
//! such as file-rotate keep one handle in one process, which is exactly what breaks here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// The writer started.
    Start,
    /// A write failed or panicked.
    Failure,
    /// The writer was re-created after a backoff.
    Restart,
    /// The first successful write after a failure.
    Recovered,
    /// Too many restarts in the window: the supervisor stopped trying.
    GiveUp,
    /// The writer stopped at shutdown.
    Stop,
    /// Another process moved a partition on: this writer dropped what it held for it
    /// (no restart; the partition's batches not covered yet are sent again).
    Fenced,
    /// The sink refused a record for good (poison): it was dead-lettered as
    /// `sink_rejected` and the rest of its batch stored.
    Rejected,
}

/// One line of the supervision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// When.
    pub at: DateTime<Utc>,
    /// Which actor, e.g. `postgres_writer`.
    pub actor: String,
    /// What happened.
    pub kind: EntryKind,
    /// Process id, to tell processes apart in a shared file.
    pub pid: u32,
    /// The error or panic message of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// Restart attempt number (consecutive failures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Delay before this restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Time from the first failure to recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_ms: Option<u64>,
}

impl Entry {
    /// A new entry stamped now.
    pub fn new(actor: &str, kind: EntryKind) -> Entry {
        Entry {
            at: Utc::now(),
            actor: actor.to_string(),
            kind,
            pid: std::process::id(),
            cause: None,
            attempt: None,
            backoff_ms: None,
            downtime_ms: None,
        }
    }
}

/// When the log rotates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// The live file rotates once it holds this many bytes (0: never).
    pub max_bytes: u64,
    /// Rotated files kept (`.1` newest to `.keep` oldest); 0 keeps none.
    pub keep: usize,
}

impl From<&crate::settings::SupervisionSettings> for Rotation {
    fn from(s: &crate::settings::SupervisionSettings) -> Self {
        Rotation { max_bytes: s.max_file_bytes, keep: s.keep_files }
    }
}

/// The log, shared by the supervisors of one process.
#[derive(Debug)]
pub struct SupervisionLog {
    path: PathBuf,
    rotation: Rotation,
    /// Serialises this process's appends; the lock file serialises processes.
    lock: Mutex<()>,
}

impl SupervisionLog {
    /// Opens (creating folders) the log for appending; fails now if it cannot be written.
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<SupervisionLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        OpenOptions::new().create(true).append(true).open(path)?;
        Ok(SupervisionLog { path: path.to_path_buf(), rotation, lock: Mutex::new(()) })
    }

    fn write_line(&self, line: &str) -> std::io::Result<()> {
        let _in_process = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(&self.path))?;
        lock_file.lock()?;
        let size = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        if self.rotation.max_bytes > 0 && size >= self.rotation.max_bytes {
            rotate(&self.path, self.rotation.keep)?;
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        writeln!(file, "{line}")?;
        file.flush()
        // The lock is released when lock_file closes.
    }

    /// Appends one entry and flushes it; also logs it. A failing log file is reported
    /// through `log` but never stops the pipeline.
    pub fn append(&self, entry: &Entry) {
        // A cause quotes error messages, which may quote a URL or a setting, and reasons
        // from input (bounded and made storable like every other text leaving eventline).
        let scrubbed;
        let entry = match &entry.cause {
            Some(cause) => {
                let cause =
                    crate::storable::reason(&crate::settings::secrets::scrub(cause)).into_owned();
                scrubbed = Entry { cause: Some(cause), ..entry.clone() };
                &scrubbed
            }
            None => entry,
        };
        log::info!(
            "Supervision: {} {:?}{}",
            entry.actor,
            entry.kind,
            entry.cause.as_deref().map(|c| format!(" cause={c}")).unwrap_or_default()
        );
        let line = match serde_json::to_string(entry) {
            Ok(line) => line,
            Err(error) => return log::error!("Supervision log entry not serialisable: {error}"),
        };
        if let Err(error) = self.write_line(&line) {
            log::error!("Cannot append to supervision log {}: {error}", self.path.display());
        }
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn rotated_path(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Shifts `path.1..path.(keep-1)` up by one, drops what falls beyond `keep`, and moves
/// the live file to `path.1` (or removes it when nothing is kept).
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let ignore_missing = |r: std::io::Result<()>| match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    // Everything from `.keep` up goes, including files left by a larger `keep` before.
    for (n, file) in rotated_files(path) {
        if n >= keep {
            ignore_missing(std::fs::remove_file(file))?;
        }
    }
    if keep == 0 {
        return ignore_missing(std::fs::remove_file(path));
    }
    for n in (1..keep).rev() {
        ignore_missing(std::fs::rename(rotated_path(path, n), rotated_path(path, n + 1)))?;
    }
    ignore_missing(std::fs::rename(path, rotated_path(path, 1)))
}

/// The log's files, oldest first: the rotated ones (`.N` down to `.1`), then the live one.
pub fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = rotated_files(path).into_iter().map(|(_, p)| p).collect();
    if path.exists() {
        files.push(path.to_path_buf());
    }
    files
}

/// The rotated files and their numbers, highest (oldest) first.
fn rotated_files(path: &Path) -> Vec<(usize, PathBuf)> {
    let mut rotated: Vec<(usize, PathBuf)> = Vec::new();
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    if let Ok(listing) = std::fs::read_dir(&dir) {
        for item in listing.flatten() {
            let file = item.file_name().to_string_lossy().into_owned();
            let number = file.strip_prefix(&name).and_then(|rest| rest.strip_prefix('.'));
            if let Some(n) = number.and_then(|n| n.parse::<usize>().ok()) {
                rotated.push((n, item.path()));
            }
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    rotated
}

/// Every well-formed entry of the log and its rotated files, oldest first.
pub fn read_log(path: &Path) -> std::io::Result<Vec<Entry>> {
    read_recent(path, usize::MAX)
}

/// The newest `limit` entries, oldest first, reading only the files they are in.
pub fn read_recent(path: &Path, limit: usize) -> std::io::Result<Vec<Entry>> {
    let mut newest_first: Vec<Vec<Entry>> = Vec::new();
    let mut count = 0;
    for file in log_files(path).iter().rev() {
        if count >= limit {
            break;
        }
        match read_entries(file) {
            Ok(entries) => {
                count += entries.len();
                newest_first.push(entries);
            }
            // Rotated away by a writer between the listing and the read.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let all: Vec<Entry> = newest_first.into_iter().rev().flatten().collect();
    Ok(all[all.len().saturating_sub(limit)..].to_vec())
}

/// Reads every well-formed entry of a log file; malformed lines are skipped with a warning.
pub fn read_entries(path: &Path) -> std::io::Result<Vec<Entry>> {
    let file = File::open(path)?;
    let mut entries = Vec::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(entry) => entries.push(entry),
            Err(error) => {
                log::warn!("{}:{}: not a supervision entry: {error}", path.display(), number + 1)
            }
        }
    }
    Ok(entries)
}

/// Formats entries as a readable table.
pub fn format_table(entries: &[Entry]) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<10} {:>7} {:>7} {:>10} {:>11}  {}\n",
        "time (UTC)", "actor", "event", "pid", "attempt", "backoff_ms", "downtime_ms", "cause"
    );
    for e in entries {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{:<24} {:<16} {:<10} {:>7} {:>7} {:>10} {:>11}  {}\n",
            e.at.format("%Y-%m-%d %H:%M:%S%.3f"),
            e.actor,
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            e.pid,
            opt(e.attempt.map(u64::from)),
            opt(e.backoff_ms),
            opt(e.downtime_ms),
            e.cause.as_deref().unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_the_file_and_print_as_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/supervision.jsonl");
        let log = SupervisionLog::open(&path, Rotation { max_bytes: 0, keep: 0 }).unwrap();
        let mut failure = Entry::new("parquet_writer", EntryKind::Failure);
        failure.cause = Some("disk full".into());
        log.append(&Entry::new("parquet_writer", EntryKind::Start));
        log.append(&failure);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        let entries = read_entries(&path).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], failure);
        let table = format_table(&entries);
        assert!(table.contains("failure") && table.contains("disk full"), "{table}");
    }

    #[test]
    fn the_log_rotates_by_size_keeps_n_files_and_reads_across_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervision.jsonl");
        let log = SupervisionLog::open(&path, Rotation { max_bytes: 400, keep: 2 }).unwrap();
        let mut written = Vec::new();
        for attempt in 0..40 {
            let mut entry = Entry::new("postgres_writer", EntryKind::Failure);
            entry.attempt = Some(attempt);
            log.append(&entry);
            written.push(entry);
        }
        let files = log_files(&path);
        let names: Vec<String> =
            files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into()).collect();
        assert_eq!(names, ["supervision.jsonl.2", "supervision.jsonl.1", "supervision.jsonl"]);
        for file in &files[..2] {
            let size = std::fs::metadata(file).unwrap().len();
            assert!((400..600).contains(&size), "{}: {size} bytes", file.display());
        }
        // What is left is the newest entries, whole and in order.
        let read = read_log(&path).unwrap();
        assert!(read.len() < written.len() && read.len() >= 6, "{}", read.len());
        assert_eq!(read[..], written[written.len() - read.len()..]);
        assert_eq!(read_recent(&path, 3).unwrap()[..], written[written.len() - 3..]);
    }

    #[test]
    fn writers_sharing_a_log_lose_no_entry_while_it_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("supervision.jsonl");
        let rotation = Rotation { max_bytes: 2_000, keep: 1_000 };
        // Two handles, as two processes would have.
        let logs = [
            std::sync::Arc::new(SupervisionLog::open(&path, rotation).unwrap()),
            std::sync::Arc::new(SupervisionLog::open(&path, rotation).unwrap()),
        ];
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let log = logs[t % 2].clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        log.append(&Entry::new(&format!("writer_{t}"), EntryKind::Start));
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(log_files(&path).len() > 10, "it rotated");
        assert_eq!(read_log(&path).unwrap().len(), 400);
    }
}
