//! The `eventline` binary: maps the command line onto the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use eventline::settings::Settings;
use eventline::supervision_log::{format_table, read_entries, Entry};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "eventline", version, about = "Kafka -> contracts -> dedup -> PostgreSQL + Parquet lake, exactly once")]
struct Cli {
    /// Folder with default.toml and {EVENTLINE_ENV}.toml.
    #[arg(long, global = true, env = "EVENTLINE_SETTINGS_DIR", default_value = "settings")]
    settings_dir: PathBuf,
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
    /// Print the supervision log (writer starts, failures, restarts, recoveries).
    Supervision {
        /// Only entries newer than this: an RFC 3339 time or an age like 30s, 10m, 2h, 1d.
        #[arg(long)]
        since: Option<String>,
        /// Only this actor, e.g. postgres_writer or parquet_writer.
        #[arg(long)]
        actor: Option<String>,
        /// Keep printing new entries as they are appended.
        #[arg(long)]
        follow: bool,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        /// Read this file instead of `supervision.log_path`.
        #[arg(long)]
        file: Option<PathBuf>,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).format_timestamp_millis().init();
    let cli = Cli::parse();
    match execute(cli) {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("eventline: {error:#}");
            std::process::exit(1);
        }
    }
}

fn load(dir: &std::path::Path) -> Result<Settings> {
    Settings::load(dir).with_context(|| format!("loading settings from {}", dir.display()))
}

fn execute(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run => {
            let settings = load(&cli.settings_dir)?;
            let exit = eventline::pipeline::run(settings).context("starting the pipeline")?;
            Ok(exit.code())
        }
        Command::Config => {
            let settings = load(&cli.settings_dir)?;
            println!("{}", serde_json::to_string_pretty(&settings)?);
            Ok(0)
        }
        Command::Migrate => {
            let settings = load(&cli.settings_dir)?;
            eventline::pipeline::prepare(&settings).context("migrating")?;
            println!("migrations applied");
            Ok(0)
        }
        Command::Supervision { since, actor, follow, json, file } => {
            let path = match file {
                Some(path) => path,
                None => load(&cli.settings_dir)?.supervision.log_path,
            };
            let since = since.as_deref().map(parse_since).transpose()?;
            print_supervision(&path, since, actor.as_deref(), follow, json)
        }
    }
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = digits.parse().with_context(|| format!("--since {text:?}: expected an RFC 3339 time or an age like 10m"))?;
    let seconds = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("--since {text:?}: unit must be s, m, h or d"),
    };
    Ok(chrono::Utc::now() - chrono::Duration::seconds(seconds))
}

fn print_supervision(path: &std::path::Path, since: Option<chrono::DateTime<chrono::Utc>>, actor: Option<&str>, follow: bool, json: bool) -> Result<i32> {
    let keep = |e: &Entry| since.is_none_or(|s| e.at >= s) && actor.is_none_or(|a| e.actor == a);
    let mut shown = 0usize;
    loop {
        let entries = if path.exists() { read_entries(path).with_context(|| format!("reading {}", path.display()))? } else { Vec::new() };
        let fresh: Vec<Entry> = entries.iter().skip(shown).filter(|e| keep(e)).cloned().collect();
        let first_page = shown == 0;
        shown = entries.len();
        if json {
            for e in &fresh {
                println!("{}", serde_json::to_string(e)?);
            }
        } else if first_page {
            print!("{}", format_table(&fresh));
        } else if !fresh.is_empty() {
            print!("{}", format_table(&fresh).split_once('\n').map(|(_, rows)| rows).unwrap_or(""));
        }
        if !follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
