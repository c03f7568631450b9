//! `eventline supervision`: the supervision log as a table or JSON lines, optionally
//! filtered by age and actor, optionally followed as it grows.

use crate::cli::console::out;
use crate::telemetry::supervision_log::{format_table, read_log, Entry};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to show.
#[derive(Debug, Clone, clap::Args)]
pub struct SupervisionArgs {
    /// Only entries newer than this: an RFC 3339 time or an age like 30s, 10m, 2h, 1d.
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only this actor, e.g. postgres_writer or parquet_writer.
    #[arg(long)]
    pub actor: Option<String>,
    /// Keep printing new entries as they are appended.
    #[arg(long)]
    pub follow: bool,
    /// JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read this file instead of `supervision.log_path`.
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Why the log could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum SupervisionCliError {
    /// The file exists but could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The supervision log.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Standard output failed (a closed pipe ends the command quietly).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

/// An RFC 3339 time, or an age (`humantime`: 30s, 10m, 2h, 1d) counted back from now.
pub fn parse_since(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text)
        .map_err(|e| format!("expected an RFC 3339 time or an age like 30s, 10m, 2h, 1d: {e}"))?;
    let age = chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
    Ok(Utc::now() - age)
}

/// Prints the log at `path` as `args` ask; with `follow`, until the reader goes away.
pub fn print(path: &Path, args: &SupervisionArgs) -> Result<(), SupervisionCliError> {
    let keep = |e: &Entry| {
        args.since.is_none_or(|s| e.at >= s) && args.actor.as_deref().is_none_or(|a| e.actor == a)
    };
    // The last entry shown: with rotation the files' line counts shrink, so following
    // resumes after this entry rather than after a count.
    let mut last: Option<Entry> = None;
    let mut first_page = true;
    loop {
        let entries = read_log(path)
            .map_err(|source| SupervisionCliError::Read { path: path.into(), source })?;
        let start = match &last {
            None => 0,
            // Rotated out of reach since the last look: resume by time.
            Some(l) => entries.iter().rposition(|e| e == l).map(|i| i + 1).unwrap_or_else(|| {
                entries.iter().position(|e| e.at > l.at).unwrap_or(entries.len())
            }),
        };
        let fresh: Vec<Entry> = entries[start..].iter().filter(|e| keep(e)).cloned().collect();
        if let Some(newest) = entries.last() {
            last = Some(newest.clone());
        }
        out(&render(&fresh, first_page, args.json)).map_err(SupervisionCliError::Output)?;
        first_page = false;
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The text for `entries`: JSON lines, or a table whose header comes on the first page.
fn render(entries: &[Entry], first_page: bool, json: bool) -> String {
    if json {
        let line = |e: &Entry| serde_json::to_string(e).unwrap_or_default() + "\n";
        return entries.iter().map(line).collect();
    }
    if first_page {
        return format_table(entries);
    }
    if entries.is_empty() {
        return String::new();
    }
    let table = format_table(entries);
    table.split_once('\n').map(|(_, rows)| rows.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_an_age() {
        let at = parse_since("2026-11-23T08:00:00Z").unwrap();
        assert_eq!(at.to_rfc3339(), "2026-11-23T08:00:00+00:00");
        let ago = Utc::now() - parse_since("2h").unwrap();
        assert!((ago.num_seconds() - 7200).abs() < 5, "{ago}");
        assert!(parse_since("1d").is_ok());
        assert!(parse_since("yesterday").is_err());
    }
}
