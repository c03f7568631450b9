//! The `eventline` binary: maps the command line onto the library, and nothing else.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use eventline::cli::{bench, console, dlq, drill, lake, produce, state, status, supervision};
use eventline::ops::log_format::{self, LogFormat};
use eventline::settings::Settings;
use std::path::{Path, PathBuf};

// See Cargo.toml: faster than glibc malloc on the hot path, and a smaller peak RSS.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the same index in mimalloc v2 and v3);
/// libmimalloc-sys does not name it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory goes back to the OS at once instead of after mimalloc's default of one
/// second: batches are freed in bursts, and keeping each burst for a second stacked them
/// up. On a 500k backlog the peak RSS went from 255 to about 200 MiB at no measurable
/// CPU cost. `MIMALLOC_PURGE_DELAY` in the environment still wins.
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option; mimalloc allows this at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[derive(Parser)]
#[command(
    name = "eventline",
    version,
    about = "Kafka -> contracts -> dedup -> PostgreSQL + Parquet lake, exactly once"
)]
struct Cli {
    /// Folder with default.toml and {EVENTLINE_ENV}.toml.
    #[arg(long, global = true, env = "EVENTLINE_SETTINGS_DIR", default_value = "settings")]
    settings_dir: PathBuf,
    /// Log lines as plain text or as one JSON object per line (for log shippers).
    #[arg(long, global = true, env = "EVENTLINE_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the topic and store every accepted event in Postgres and the lake.
    Run,
    /// Print the effective settings (fails naming the key on an unknown key or bad value).
    Config,
    /// Apply the database migrations and exit.
    Migrate,
    /// Publish events: a validated JSON lines file, or generated CRM traffic.
    Produce(produce::ProduceArgs),
    /// Run a replay or fault drill against the configured stack and report PASS/FAIL.
    Drill(drill::DrillArgs),
    /// Show a running processor: sinks, lag per partition, rates, last restarts.
    Status {
        /// Admin base URL (default: http:// + admin.listen from the settings).
        #[arg(long)]
        url: Option<String>,
        /// Refresh every 2 seconds; rates over the last minute.
        #[arg(long)]
        watch: bool,
    },
    /// Single-stage limits for `make bench` (prints one JSON object).
    #[command(hide = true)]
    BenchLimit {
        /// Which stage alone.
        #[arg(value_enum)]
        stage: bench::BenchStage,
        /// kafka-latency: records to wait for.
        #[arg(long, default_value_t = 10_000)]
        records: u64,
        /// Topic to read (default: kafka.topic).
        #[arg(long)]
        topic: Option<String>,
        /// lake-only: where to write the files.
        #[arg(long, default_value = ".dev/bench/lake-limit")]
        root: PathBuf,
    },
    /// Print the supervision log (writer starts, failures, restarts, recoveries).
    Supervision(supervision::SupervisionArgs),
    /// Lake maintenance: `purge` erases deleted events, `compact` merges small files, `vacuum` deletes replaced ones.
    #[command(subcommand)]
    Lake(lake::LakeCommand),
    /// Dead letters: `replay` sends them back to their source topic once they pass.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// One entity's current state and the events that made it (exit 1 when it has none).
    State {
        /// The entity, as a contract's `x-entity` names it (account, order, ...).
        entity: String,
        /// Its key.
        id: String,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    log_format::init(cli.log_format);
    match execute(cli) {
        Ok(code) => std::process::exit(code),
        // The reader of our output went away (`eventline supervision | head`): done.
        Err(error) if error.chain().any(console::is_closed_pipe) => std::process::exit(0),
        Err(error) => {
            console::note(&eventline::settings::secrets::scrub(&format!("eventline: {error:#}")));
            std::process::exit(1);
        }
    }
}

fn load(dir: &Path) -> Result<Settings> {
    Settings::load(dir).with_context(|| format!("loading settings from {}", dir.display()))
}

fn execute(cli: Cli) -> Result<i32> {
    let settings = || load(&cli.settings_dir);
    match cli.command {
        Command::Run => {
            Ok(eventline::pipeline::run(settings()?).context("starting the pipeline")?.code())
        }
        Command::Config => {
            let settings = settings()?;
            settings.validate()?;
            console::out(&format!("{}\n", serde_json::to_string_pretty(&settings.redacted())?))?;
            Ok(0)
        }
        Command::Migrate => {
            eventline::pipeline::prepare(&settings()?).context("migrating")?;
            console::out("migrations applied\n")?;
            Ok(0)
        }
        Command::Status { url, watch } => {
            // The settings give the token (and the address unless --url gives it); a
            // status of another host without settings here reads it without a token.
            let loaded = settings().ok();
            let base = match (url, &loaded) {
                (Some(url), _) => url,
                (None, Some(s)) => format!("http://{}", s.admin.listen),
                (None, None) => format!("http://{}", settings()?.admin.listen),
            };
            let token = loaded.map(|s| s.admin.token).filter(|t| !t.is_empty());
            status::show(&base, token.as_deref(), watch)?;
            Ok(0)
        }
        Command::BenchLimit { stage, topic, root, records } => {
            let s = settings()?;
            let topic = topic.unwrap_or_else(|| s.kafka.topic.clone());
            bench::run_limit(&s, stage, &topic, records, &root)?;
            Ok(0)
        }
        Command::Drill(args) => Ok(drill::run_command(settings()?, args)?),
        Command::Produce(args) => Ok(produce::run(&settings()?, args).context("producing")?),
        Command::Lake(command) => Ok(lake::run(&settings()?, command)?),
        Command::Dlq(command) => Ok(dlq::run(&settings()?, command)?),
        Command::State { entity, id, json } => Ok(state::run(&settings()?, &entity, &id, json)?),
        Command::Supervision(args) => {
            let path = match &args.file {
                Some(path) => path.clone(),
                None => settings()?.supervision.log_path,
            };
            supervision::print(&path, &args)?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod allocator_tests {
    use super::*;

    #[test]
    fn index_15_is_mimallocs_purge_delay() {
        // Its default in mimalloc v3's options.c is 1000 (ms); no option next to it
        // defaults to that, so a wrong index would show here.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        }
        purge_freed_memory_at_once();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }, 0);
        }
    }
}
