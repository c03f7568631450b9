//! The `eventline` binary: maps the command line onto the library.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use eventline::console::out;
use eventline::settings::Settings;
use eventline::supervision_log::{format_table, read_entries, Entry};
use std::path::PathBuf;
use std::time::Duration;

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
    #[arg(long, global = true, env = "EVENTLINE_LOG_FORMAT", default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
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
    Produce(ProduceArgs),
    /// Run a replay or fault drill against the configured stack and report PASS/FAIL.
    Drill(DrillArgs),
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
        /// consume-only, lake-only, or kafka-latency (prints "ready" on stderr, then
        /// reads the next --records records and prints their delay percentiles).
        #[arg(value_parser = ["consume-only", "lake-only", "kafka-latency"])]
        stage: String,
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

#[derive(clap::Args)]
struct ProduceArgs {
    /// JSON lines file of events (`-` for stdin); every line is validated first.
    #[arg(long, conflicts_with = "generate", required_unless_present = "generate")]
    file: Option<PathBuf>,
    /// Send the file's lines as they are, without validation (`null` is a tombstone).
    #[arg(long, requires = "file")]
    raw: bool,
    /// Generate this many records of synthetic CRM traffic.
    #[arg(long)]
    generate: Option<u64>,
    /// Events per second (default: as fast as the broker takes them).
    #[arg(long)]
    rate: Option<f64>,
    /// How long the producer waits to fill a batch: higher sends more per request,
    /// lower delivers sooner (use 0-1 when measuring latency).
    #[arg(long, default_value_t = 10)]
    linger_ms: u64,
    /// Same seed and start time: identical records.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Time of the first generated event, RFC 3339 (default: today 08:00 UTC).
    #[arg(long)]
    start_time: Option<String>,
    /// Only these event types, comma separated.
    #[arg(long, value_delimiter = ',')]
    types: Vec<String>,
    /// Share of exact duplicates of earlier records.
    #[arg(long, default_value_t = 0.0)]
    duplicate_ratio: f64,
    /// Share of records reusing an earlier event_id with other content.
    #[arg(long, default_value_t = 0.0)]
    conflict_ratio: f64,
    /// Share of contract-breaking records, sent raw on purpose (for drills).
    #[arg(long, default_value_t = 0.0)]
    invalid_ratio: f64,
    /// Share of events with a timestamp in the past.
    #[arg(long, default_value_t = 0.0)]
    late_ratio: f64,
    /// How far in the past a late event can be: 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "1h")]
    max_lateness: String,
    /// Share of tombstones (null values).
    #[arg(long, default_value_t = 0.0)]
    tombstone_ratio: f64,
    /// Save exactly what was sent, one value per line, to replay it with --file --raw.
    #[arg(long)]
    write_jsonl: Option<PathBuf>,
    /// Exit 0 even when lines were rejected.
    #[arg(long)]
    skip_invalid: bool,
    /// Validate only; send nothing.
    #[arg(long)]
    dry_run: bool,
    /// Topic (default: kafka.topic from the settings).
    #[arg(long)]
    topic: Option<String>,
}

#[derive(clap::Args)]
struct DrillArgs {
    /// Which drill.
    #[arg(value_enum)]
    name: eventline::drill::DrillName,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Where the markdown report and the processor logs go.
    #[arg(long, default_value = "reports")]
    reports_dir: PathBuf,
    /// Records of generated traffic (kill, sink-crash, db-outage).
    #[arg(long, default_value_t = 20_000)]
    events: u64,
    /// Generator seed (default: random, printed in the report).
    #[arg(long)]
    seed: Option<u64>,
    /// kill: how many times to kill -9 the processor.
    #[arg(long, default_value_t = 3)]
    kills: u32,
    /// sink-crash: which sink fails.
    #[arg(long, default_value = "parquet", value_parser = ["postgres", "parquet"])]
    sink: String,
    /// replay: rewind to this time (RFC 3339) instead of the earliest offsets.
    #[arg(long, conflicts_with = "to_offset")]
    to_timestamp: Option<String>,
    /// replay: rewind every partition to this offset.
    #[arg(long)]
    to_offset: Option<i64>,
    /// replay: also move the lake aside and rebuild it from the log.
    #[arg(long)]
    rebuild_lake: bool,
    /// resend: how many processed events to re-publish.
    #[arg(long, default_value_t = 200)]
    resend: usize,
    /// db-outage: shell command that stops Postgres.
    #[arg(long, default_value = "scripts/stack.sh pg-stop")]
    pg_stop_cmd: String,
    /// db-outage: shell command that starts Postgres.
    #[arg(long, default_value = "scripts/stack.sh pg-start")]
    pg_start_cmd: String,
    /// db-outage: how long Postgres stays down: 5s, 1m.
    #[arg(long, default_value = "5s")]
    outage: String,
    /// Upper bound for any wait: 300s, 10m.
    #[arg(long, default_value = "10m")]
    timeout: String,
}

fn init_logging(format: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format == "json" {
        builder.format(|buf, record| {
            use std::io::Write;
            let message = record.args().to_string();
            let mut line = serde_json::json!({
                "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "level": record.level().to_string(),
                "target": record.target(),
                "message": message,
            });
            // `key=value` words (the summary line's counters) become fields of their own.
            for word in message.split_whitespace() {
                if let Some((k, v)) = word.split_once('=') {
                    if !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                        let value = v
                            .parse::<f64>()
                            .map(serde_json::Value::from)
                            .unwrap_or_else(|_| v.into());
                        line[k] = value;
                    }
                }
            }
            writeln!(buf, "{line}")
        });
    } else {
        builder.format_timestamp_millis();
    }
    builder.init();
}

fn main() {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match execute(cli) {
        Ok(code) => std::process::exit(code),
        // The reader of our output went away (`eventline supervision | head`): done.
        Err(error) if error.chain().any(eventline::console::is_closed_pipe) => {
            std::process::exit(0)
        }
        Err(error) => {
            eventline::console::note(&format!("eventline: {error:#}"));
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
            out(&format!("{}\n", serde_json::to_string_pretty(&settings)?))?;
            Ok(0)
        }
        Command::Migrate => {
            let settings = load(&cli.settings_dir)?;
            eventline::pipeline::prepare(&settings).context("migrating")?;
            out("migrations applied\n")?;
            Ok(0)
        }
        Command::Status { url, watch } => {
            let base = match url {
                Some(url) => url,
                None => format!("http://{}", load(&cli.settings_dir)?.admin.listen),
            };
            status(&base, watch)
        }
        Command::BenchLimit { stage, topic, root, records } => {
            let s = load(&cli.settings_dir)?;
            let topic = topic.unwrap_or_else(|| s.kafka.topic.clone());
            if stage == "kafka-latency" {
                let d = eventline::bench::kafka_latency(
                    &s.kafka.brokers,
                    &topic,
                    records.max(1),
                    || eventline::console::note("ready"),
                )
                .map_err(anyhow::Error::msg)?;
                let q = |p: f64| d[((d.len() as f64 * p) as usize).min(d.len() - 1)];
                out(&format!(
                    "{}\n",
                    serde_json::json!({"stage": stage, "records": d.len(), "p50": q(0.5), "p95": q(0.95), "p99": q(0.99), "max": d[d.len() - 1]})
                ))?;
                return Ok(0);
            }
            let (records, seconds) = if stage == "consume-only" {
                eventline::bench::consume_only(&s.kafka.brokers, &topic)
            } else {
                let limits = eventline::contract::Limits {
                    max_record_bytes: s.pipeline.max_record_bytes,
                    max_json_depth: s.pipeline.max_json_depth,
                };
                let contracts =
                    eventline::contract::Contracts::load(&s.pipeline.contracts_dir, limits)?;
                let format = eventline::lake_files::FileFormat {
                    row_group_rows: s.lake.row_group_rows,
                    zstd_level: s.lake.zstd_level,
                };
                eventline::bench::lake_only(
                    &s.kafka.brokers,
                    &topic,
                    &contracts,
                    &root,
                    format,
                    s.lake.max_rows_per_file,
                )
            }
            .map_err(anyhow::Error::msg)?;
            out(&format!(
                "{}\n",
                serde_json::json!({"stage": stage, "records": records, "seconds": seconds, "per_second": records as f64 / seconds.max(1e-9)})
            ))?;
            Ok(0)
        }
        Command::Drill(args) => drill(load(&cli.settings_dir)?, args),
        Command::Produce(args) => produce(&load(&cli.settings_dir)?, args),
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

fn parse_age(text: &str) -> Result<chrono::Duration> {
    let (digits, unit) =
        text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: i64 = digits
        .parse()
        .with_context(|| format!("{text:?}: expected an age like 30s, 10m, 2h or 1d"))?;
    Ok(chrono::Duration::seconds(match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("{text:?}: unit must be s, m, h or d"),
    }))
}

fn status(base: &str, watch: bool) -> Result<i32> {
    use eventline::status::{render, sample};
    let mut window = std::collections::VecDeque::new();
    window.push_back(
        sample(base)
            .map_err(anyhow::Error::msg)
            .context("is the processor running? (admin.listen)")?,
    );
    loop {
        // Rates need two samples: the first view waits one second.
        std::thread::sleep(Duration::from_secs(if watch && window.len() > 1 { 2 } else { 1 }));
        let newest = sample(base).map_err(anyhow::Error::msg)?;
        while window.len() > 1 && newest.at.duration_since(window[0].at) > Duration::from_secs(60) {
            window.pop_front();
        }
        let view = render(base, &window[0], &newest);
        window.push_back(newest);
        if !watch {
            out(&view)?;
            return Ok(0);
        }
        out(&format!("\x1b[2J\x1b[H{view}"))?;
    }
}

fn drill(settings: Settings, a: DrillArgs) -> Result<i32> {
    use eventline::drill::{kafka_ops::RewindTo, DrillContext};
    let (_, pool) = eventline::pipeline::prepare(&settings).context("connecting to Postgres")?;
    let rewind = match (&a.to_timestamp, a.to_offset) {
        (Some(t), _) => RewindTo::Timestamp(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("--to-timestamp {t:?}"))?
                .timestamp_millis(),
        ),
        (None, Some(o)) => RewindTo::Offset(o),
        (None, None) => RewindTo::Earliest,
    };
    let seconds = |text: &str, flag: &str| -> Result<Duration> {
        Ok(Duration::from_secs(
            parse_age(text).with_context(|| flag.to_string())?.num_seconds().max(0) as u64,
        ))
    };
    let ctx = DrillContext {
        settings,
        pool,
        reports_dir: a.reports_dir,
        events: a.events,
        seed: a.seed.unwrap_or_else(rand::random),
        kills: a.kills,
        sink: a.sink,
        rewind,
        rebuild_lake: a.rebuild_lake,
        resend: a.resend,
        pg_stop: a.pg_stop_cmd,
        pg_start: a.pg_start_cmd,
        outage: seconds(&a.outage, "--outage")?,
        timeout: seconds(&a.timeout, "--timeout")?,
    };
    let report = eventline::drill::run(a.name, &ctx);
    let saved = report
        .save(&ctx.reports_dir)
        .with_context(|| format!("saving the report in {}", ctx.reports_dir.display()))?;
    if a.json {
        out(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        out(&format!("{}report: {}\n", report.text(), saved.display()))?;
    }
    Ok(if report.passed { 0 } else { 1 })
}

fn produce(settings: &Settings, a: ProduceArgs) -> Result<i32> {
    use eventline::generator::{GeneratorConfig, EVENT_TYPES};
    use eventline::produce_run::{produce, ProduceOptions, Source};
    for (name, ratio) in [
        ("--duplicate-ratio", a.duplicate_ratio),
        ("--conflict-ratio", a.conflict_ratio),
        ("--invalid-ratio", a.invalid_ratio),
        ("--late-ratio", a.late_ratio),
        ("--tombstone-ratio", a.tombstone_ratio),
    ] {
        if !(0.0..=1.0).contains(&ratio) {
            bail!("{name} must be between 0 and 1, got {ratio}");
        }
    }
    if let Some(unknown) = a.types.iter().find(|t| !EVENT_TYPES.contains(&t.as_str())) {
        bail!("--types: unknown event type {unknown:?}; known: {}", EVENT_TYPES.join(", "));
    }
    let limits = eventline::contract::Limits {
        max_record_bytes: settings.pipeline.max_record_bytes,
        max_json_depth: settings.pipeline.max_json_depth,
    };
    let contracts = eventline::contract::Contracts::load(&settings.pipeline.contracts_dir, limits)?;
    let source = match (a.file, a.generate) {
        (Some(path), _) => Source::File { path, raw: a.raw },
        (None, Some(count)) => {
            let start_time = match a.start_time {
                Some(t) => chrono::DateTime::parse_from_rfc3339(&t)
                    .with_context(|| format!("--start-time {t:?}"))?
                    .with_timezone(&chrono::Utc),
                None => chrono::Utc::now()
                    .date_naive()
                    .and_hms_opt(8, 0, 0)
                    .expect("valid time")
                    .and_utc(),
            };
            let types = if a.types.is_empty() {
                EVENT_TYPES.iter().map(|t| t.to_string()).collect()
            } else {
                a.types
            };
            let config = GeneratorConfig {
                seed: a.seed,
                start_time,
                types,
                duplicate_ratio: a.duplicate_ratio,
                conflict_ratio: a.conflict_ratio,
                invalid_ratio: a.invalid_ratio,
                late_ratio: a.late_ratio,
                max_lateness: parse_age(&a.max_lateness).context("--max-lateness")?,
                tombstone_ratio: a.tombstone_ratio,
            };
            Source::Generate { count, config }
        }
        (None, None) => bail!("give --file or --generate"),
    };
    let options = ProduceOptions {
        brokers: settings.kafka.brokers.clone(),
        topic: a.topic.unwrap_or_else(|| settings.kafka.topic.clone()),
        source,
        rate: a.rate,
        linger_ms: a.linger_ms,
        dry_run: a.dry_run,
        write_jsonl: a.write_jsonl,
    };
    let summary = produce(&options, &contracts).context("producing")?;
    // The summary is a note: with a closed stderr every record was still sent.
    eventline::console::note(summary.report().trim_end());
    let rejected: u64 = summary.rejected.values().sum();
    let failed: u64 = summary.failed.values().sum();
    Ok(if failed > 0 || (rejected > 0 && !a.skip_invalid) { 1 } else { 0 })
}

fn parse_since(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    Ok(chrono::Utc::now()
        - parse_age(text).context("--since: expected an RFC 3339 time or an age")?)
}

fn print_supervision(
    path: &std::path::Path,
    since: Option<chrono::DateTime<chrono::Utc>>,
    actor: Option<&str>,
    follow: bool,
    json: bool,
) -> Result<i32> {
    let keep = |e: &Entry| since.is_none_or(|s| e.at >= s) && actor.is_none_or(|a| e.actor == a);
    let mut shown = 0usize;
    loop {
        let entries = if path.exists() {
            read_entries(path).with_context(|| format!("reading {}", path.display()))?
        } else {
            Vec::new()
        };
        let fresh: Vec<Entry> = entries.iter().skip(shown).filter(|e| keep(e)).cloned().collect();
        let first_page = shown == 0;
        shown = entries.len();
        if json {
            for e in &fresh {
                out(&format!("{}\n", serde_json::to_string(e)?))?;
            }
        } else if first_page {
            out(&format_table(&fresh))?;
        } else if !fresh.is_empty() {
            out(format_table(&fresh).split_once('\n').map(|(_, rows)| rows).unwrap_or(""))?;
        }
        if !follow {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(500));
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
