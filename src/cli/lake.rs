//! `eventline lake purge`: erases deleted events from the lake files
//! ([`crate::sinks::lake::purge`]) and says what it did.

use crate::cli::console::out;
use crate::settings::Settings;
use crate::sinks::lake::files::FileFormat;
use crate::sinks::lake::purge::{purge, PurgeError};
use crate::sinks::lake::store::LakeStore;
use std::path::PathBuf;

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
}

/// Runs a lake command; the exit code is 0 when it did what it was asked.
pub fn run(settings: &Settings, command: LakeCommand) -> Result<i32, LakeCliError> {
    match command {
        LakeCommand::Purge { dry_run, root, json } => {
            let mut lake = settings.lake.clone();
            if let Some(root) = root {
                lake.root = root;
            }
            let root = lake.root.clone();
            let store = LakeStore::from_settings(&lake).map_err(PurgeError::from)?;
            let report = purge(&store, FileFormat::from(settings), dry_run)?;
            let text = if json {
                format!("{}\n", serde_json::to_string(&report).expect("a report serialises"))
            } else {
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
            };
            out(&text).map_err(LakeCliError::Output)?;
            Ok(0)
        }
    }
}

/// Why a lake command failed.
#[derive(Debug, thiserror::Error)]
pub enum LakeCliError {
    /// The purge stopped; what it rewrote stays rewritten, run it again.
    #[error("purge stopped (files already rewritten stay so; run it again to finish): {0}")]
    Purge(#[from] PurgeError),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(std::io::Error),
}
