//! `eventline lake purge|compact|vacuum`: erases deleted events from the lake files
//! ([`crate::sinks::lake::purge`]), merges small files and deletes replaced ones
//! ([`crate::sinks::lake::compact`]), and says what it did.

use crate::cli::console::out;
use crate::settings::Settings;
use crate::sinks::lake::compact::{compact, vacuum, CompactError, CompactReport, VacuumReport};
use crate::sinks::lake::files::FileFormat;
use crate::sinks::lake::purge::{purge, PurgeError, PurgeReport};
use crate::sinks::lake::store::LakeStore;
use std::path::{Path, PathBuf};

/// `eventline lake ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum LakeCommand {
    /// Erase deleted events (tombstoned event ids) physically from the lake files,
    /// rewriting each affected file atomically; safe while a processor runs.
    Purge {
        /// Only say which files would be rewritten and how many rows would go.
        #[arg(long)]
        dry_run: bool,
        /// The lake root (default: `lake.root` from the settings).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Merge small data files (per Hive folder and Kafka partition, in offset order)
    /// into files of about `--target-mb`, in one Delta commit; safe while processors
    /// run. The replaced files stay for readers of older versions until `vacuum`.
    Compact {
        /// Files below this size are merged, up to about this size per merged file.
        #[arg(long, default_value_t = 128)]
        target_mb: u64,
        /// Only say how many files would be merged into how many.
        #[arg(long)]
        dry_run: bool,
        /// The lake root (default: `lake.root` from the settings).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete files that commits (compactions, purges) removed longer ago than the
    /// retention; readers of table versions older than that can no longer read them.
    Vacuum {
        /// Keep removed files this long, for readers of older versions (e.g. `7d`,
        /// `12h`, `0s`). Delta's default: 7 days.
        #[arg(long, default_value = "7d", value_parser = humantime::parse_duration)]
        retention: std::time::Duration,
        /// Only list the files that would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// The lake root (default: `lake.root` from the settings).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Print the report as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn lake_store(
    settings: &Settings,
    root: Option<PathBuf>,
) -> Result<(LakeStore, PathBuf), CompactError> {
    let mut lake = settings.lake.clone();
    if let Some(root) = root {
        lake.root = root;
    }
    let store = LakeStore::from_settings(&lake).map_err(CompactError::from)?;
    Ok((store, lake.root))
}

fn to_json(report: &impl serde::Serialize) -> String {
    format!("{}\n", serde_json::to_string(report).expect("a report serialises"))
}

/// Runs a lake command; the exit code is 0 when it did what it was asked.
pub fn run(settings: &Settings, command: LakeCommand) -> Result<i32, LakeCliError> {
    let text = match command {
        LakeCommand::Purge { dry_run, root, json } => {
            let (store, root) = lake_store(settings, root)?;
            let report = purge(&store, FileFormat::from(settings), dry_run)?;
            if json {
                to_json(&report)
            } else {
                purge_text(&root, &report, dry_run)
            }
        }
        LakeCommand::Compact { target_mb, dry_run, root, json } => {
            let (store, root) = lake_store(settings, root)?;
            let target = (target_mb * 1024 * 1024) as i64;
            let r = compact(&store, FileFormat::from(settings), target, dry_run)?;
            if json {
                to_json(&r)
            } else {
                compact_text(&root, &r, dry_run)
            }
        }
        LakeCommand::Vacuum { retention, dry_run, root, json } => {
            let (store, root) = lake_store(settings, root)?;
            let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
            let r = vacuum(&store, retention, dry_run)?;
            if json {
                to_json(&r)
            } else {
                vacuum_text(&root, &r, dry_run)
            }
        }
    };
    out(&text).map_err(LakeCliError::Output)?;
    Ok(0)
}

/// What a purge did, for a reader.
fn purge_text(root: &Path, report: &PurgeReport, dry_run: bool) -> String {
    let verb = if dry_run { "would rewrite" } else { "rewrote" };
    let mut text = format!(
        "lake {}: {} deleted event ids known; {} files scanned; {verb} {} files, {} rows {}\n",
        root.display(),
        report.deleted_ids,
        report.files_scanned,
        report.files_rewritten.len(),
        report.rows_removed,
        if dry_run { "to erase" } else { "erased" },
    );
    for file in &report.files_rewritten {
        text.push_str(&format!("  {}\n", file.display()));
    }
    if report.leftovers_removed > 0 {
        text.push_str(&format!(
            "removed {} temporary files of an interrupted purge\n",
            report.leftovers_removed
        ));
    }
    text
}

/// What a compaction did, for a reader.
fn compact_text(root: &Path, r: &CompactReport, dry_run: bool) -> String {
    let verb = if dry_run { "would merge" } else { "merged" };
    let mut text = format!(
        "lake {}: {verb} {} files into {}; files {} -> {}, bytes {} -> {}\n",
        root.display(),
        r.files_replaced,
        r.files_written,
        r.files_before,
        r.files_after,
        r.bytes_before,
        r.bytes_after,
    );
    if let Some(version) = r.version {
        text.push_str(&format!("events table version {version} (OPTIMIZE)\n"));
    }
    if r.runs_dropped > 0 {
        text.push_str(&format!(
            "{} runs left as they were: another process removed one of their files\n",
            r.runs_dropped
        ));
    }
    text
}

/// What a vacuum did, for a reader.
fn vacuum_text(root: &Path, r: &VacuumReport, dry_run: bool) -> String {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let mut text =
        format!("lake {}: {verb} {} removed files\n", root.display(), r.files_deleted.len());
    for file in &r.files_deleted {
        text.push_str(&format!("  {file}\n"));
    }
    text
}

/// Why a lake command failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeCliError {
    /// The purge stopped; what it rewrote stays rewritten, run it again.
    #[error("purge stopped (files already rewritten stay so; run it again to finish): {0}")]
    Purge(#[from] PurgeError),
    /// The compaction or vacuum stopped; nothing is half done.
    #[error("lake maintenance stopped (nothing is half done; run it again): {0}")]
    Compact(#[from] CompactError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(std::io::Error),
}
