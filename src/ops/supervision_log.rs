//! The supervision log: an append-only JSON lines file of every start, failure,
//! restart, recovery and give-up of a supervised writer. It is a plain file, not a
//! database table, so it keeps working through a Postgres outage.

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

/// The open log file, shared by the supervisors.
#[derive(Debug)]
pub struct SupervisionLog {
    path: PathBuf,
    file: Mutex<Option<File>>,
}

impl SupervisionLog {
    /// Opens (creating folders) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<SupervisionLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(SupervisionLog { path: path.to_path_buf(), file: Mutex::new(Some(file)) })
    }

    /// Appends one entry and flushes it; also logs it. A failing log file is reported
    /// through `log` but never stops the pipeline.
    pub fn append(&self, entry: &Entry) {
        // A cause quotes error messages, which may quote a URL or a setting.
        let scrubbed;
        let entry = match &entry.cause {
            Some(cause) => {
                scrubbed =
                    Entry { cause: Some(crate::settings::secrets::scrub(cause)), ..entry.clone() };
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
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = guard.as_mut() {
            if let Err(error) = writeln!(file, "{line}").and_then(|_| file.flush()) {
                log::error!("Cannot append to supervision log {}: {error}", self.path.display());
            }
        }
    }
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
        let log = SupervisionLog::open(&path).unwrap();
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
}
