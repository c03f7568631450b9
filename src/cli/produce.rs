//! `eventline produce`: publishes a JSON lines file (validated first) or generated
//! traffic, with a progress bar on a terminal (plain periodic lines otherwise) and a
//! final summary: sent, rejected by reason, per partition, events/s.

use crate::cli::generator::{Generator, GeneratorConfig, Kind, ALL_EVENT_TYPES, EVENT_TYPES};
use crate::cli::publisher::{
    check_line, entity_key, tombstone_line, tombstone_text, CheckedLine, Publisher,
};
use crate::settings::Settings;
use crate::stages::contract::{ContractLoadError, Contracts};
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where records come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A JSON lines file (`-` for stdin); `raw` sends lines unvalidated. `null` is a
    /// tombstone, `{"tombstone": "<event_id>"}` one keyed by that event id (a deletion).
    File {
        /// Path or `-`.
        path: PathBuf,
        /// Send as-is, no validation (replaying a `--write-jsonl` capture).
        raw: bool,
    },
    /// Generated traffic.
    Generate {
        /// How many records.
        count: u64,
        /// Generator knobs.
        config: GeneratorConfig,
    },
}

/// Everything `produce` needs.
#[derive(Debug, Clone)]
pub struct ProduceOptions {
    /// Brokers and client properties.
    pub kafka: crate::settings::KafkaSettings,
    /// Target topic.
    pub topic: String,
    /// Records.
    pub source: Source,
    /// Events per second; `None` is unthrottled.
    pub rate: Option<f64>,
    /// Producer linger in milliseconds.
    pub linger_ms: u64,
    /// Validate only.
    pub dry_run: bool,
    /// Save exactly what was sent, one value per line (a tombstone as
    /// `{"tombstone": "<key>"}`, or `null` without a key).
    pub write_jsonl: Option<PathBuf>,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct ProduceSummary {
    /// Records handed to Kafka.
    pub sent: u64,
    /// Confirmed by the broker.
    pub delivered: u64,
    /// Failed deliveries by cause.
    pub failed: BTreeMap<String, u64>,
    /// Rejected before Kafka, by error class.
    pub rejected: BTreeMap<String, u64>,
    /// Generated records by kind (generator only).
    pub kinds: BTreeMap<String, u64>,
    /// Confirmed per partition.
    pub per_partition: BTreeMap<i32, u64>,
    /// Wall time.
    pub elapsed: Duration,
}

impl ProduceSummary {
    /// Confirmed events per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A readable multi-line report.
    pub fn report(&self) -> String {
        let join = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
            }
        };
        let partitions = self
            .per_partition
            .iter()
            .map(|(p, n)| format!("{p}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "sent {} records, {} confirmed, in {:.2}s ({:.0} events/s)\nrejected before Kafka: {}\ndelivery failures: {}\nper partition: {}\n{}",
            self.sent,
            self.delivered,
            self.elapsed.as_secs_f64(),
            self.rate(),
            join(&self.rejected),
            join(&self.failed),
            if partitions.is_empty() { "none".into() } else { partitions },
            if self.kinds.is_empty() { String::new() } else { format!("generated: {}\n", join(&self.kinds)) },
        )
    }
}

/// Keeps a steady rate without drifting: record `i` goes out at `start + i / rate`.
/// Records due within the same millisecond go out together: one sleep per record at
/// 10,000/s would cost the producer more CPU than the pipeline it is measuring.
struct Pacer {
    start: Instant,
    rate: Option<f64>,
}

impl Pacer {
    fn wait(&self, index: u64) {
        if let Some(rate) = self.rate {
            let due = self.start + Duration::from_secs_f64(index as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).max(Duration::from_millis(1)));
            }
        }
    }
}

enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { last: Instant },
}

impl Progress {
    fn new(total: Option<u64>) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = match total {
                Some(n) => indicatif::ProgressBar::new(n),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let style = indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            Progress::Bar(bar)
        } else {
            Progress::Lines { last: Instant::now() }
        }
    }

    fn tick(&mut self, sent: u64, started: Instant) {
        match self {
            Progress::Bar(bar) => bar.set_position(sent),
            Progress::Lines { last } => {
                if last.elapsed() >= Duration::from_secs(2) {
                    *last = Instant::now();
                    crate::cli::console::note(&format!(
                        "produce: {sent} sent ({:.0}/s)",
                        sent as f64 / started.elapsed().as_secs_f64()
                    ));
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Produce errors.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Kafka refused the producer or a record.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The broker cannot be reached or refuses the credentials.
    #[error(transparent)]
    Unreachable(#[from] crate::source::consumer::ConnectError),
    /// Reading the input or writing the capture failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The contracts did not load.
    #[error(transparent)]
    Contracts(#[from] ContractLoadError),
    /// A command-line value is out of range.
    #[error("{flag}: {rule}")]
    Argument {
        /// The flag, e.g. `--duplicate-ratio`.
        flag: &'static str,
        /// What it must satisfy.
        rule: String,
    },
}

/// `eventline produce`: what to send and how.
#[derive(Debug, Clone, clap::Args)]
pub struct ProduceArgs {
    /// JSON lines file of events (`-` for stdin); every line is validated first.
    #[arg(long, conflicts_with = "generate", required_unless_present = "generate")]
    pub file: Option<PathBuf>,
    /// Send the file's lines as they are, without validation (`null` is a tombstone,
    /// `{"tombstone": "<event_id>"}` one that deletes that event).
    #[arg(long, requires = "file")]
    pub raw: bool,
    /// Generate this many records of synthetic CRM traffic.
    #[arg(long)]
    pub generate: Option<u64>,
    /// Events per second (default: as fast as the broker takes them).
    #[arg(long)]
    pub rate: Option<f64>,
    /// How long the producer waits to fill a batch: higher sends more per request,
    /// lower delivers sooner (use 0-1 when measuring latency).
    #[arg(long, default_value_t = 10)]
    pub linger_ms: u64,
    /// Same seed and start time: identical records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Time of the first generated event, RFC 3339 (default: today 08:00 UTC).
    #[arg(long)]
    pub start_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Only these event types, comma separated (the CRM's by default; the order domain's
    /// `order_*` types generate orders).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(ALL_EVENT_TYPES))]
    pub types: Vec<String>,
    /// Share of exact duplicates of earlier records.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_ratio: f64,
    /// Share of records reusing an earlier event_id with other content.
    #[arg(long, default_value_t = 0.0)]
    pub conflict_ratio: f64,
    /// Share of contract-breaking records, sent raw on purpose (for drills).
    #[arg(long, default_value_t = 0.0)]
    pub invalid_ratio: f64,
    /// Share of events with a timestamp in the past.
    #[arg(long, default_value_t = 0.0)]
    pub late_ratio: f64,
    /// How far in the past a late event can be: 30s, 10m, 2h, 1d.
    #[arg(long, default_value = "1h")]
    pub max_lateness: humantime::Duration,
    /// Share of tombstones keyed by an account id (dead letters).
    #[arg(long, default_value_t = 0.0)]
    pub tombstone_ratio: f64,
    /// Share of invalidations of an earlier event (`is_valid: false`).
    #[arg(long, default_value_t = 0.0)]
    pub invalidate_ratio: f64,
    /// Share of deletions of an earlier event (tombstones keyed by its event_id).
    #[arg(long, default_value_t = 0.0)]
    pub delete_ratio: f64,
    /// Save exactly what was sent, one value per line, to replay it with --file --raw.
    #[arg(long)]
    pub write_jsonl: Option<PathBuf>,
    /// Exit 0 even when lines were rejected.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Validate only; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Topic (default: kafka.topic from the settings).
    #[arg(long)]
    pub topic: Option<String>,
}

impl ProduceArgs {
    fn check_ratios(&self) -> Result<(), ProduceError> {
        let ratios = [
            ("--duplicate-ratio", self.duplicate_ratio),
            ("--conflict-ratio", self.conflict_ratio),
            ("--invalid-ratio", self.invalid_ratio),
            ("--late-ratio", self.late_ratio),
            ("--tombstone-ratio", self.tombstone_ratio),
            ("--invalidate-ratio", self.invalidate_ratio),
            ("--delete-ratio", self.delete_ratio),
        ];
        match ratios.into_iter().find(|(_, r)| !(0.0..=1.0).contains(r)) {
            Some((flag, r)) => Err(ProduceError::Argument {
                flag,
                rule: format!("must be between 0 and 1, got {r}"),
            }),
            None => Ok(()),
        }
    }

    fn source(self) -> Result<Source, ProduceError> {
        if let Some(path) = self.file {
            return Ok(Source::File { path, raw: self.raw });
        }
        let count = self.generate.ok_or(ProduceError::Argument {
            flag: "--file/--generate",
            rule: "give one of them".into(),
        })?;
        let start_time = self.start_time.unwrap_or_else(|| {
            chrono::Utc::now().date_naive().and_hms_opt(8, 0, 0).expect("valid time").and_utc()
        });
        let types = match self.types.is_empty() {
            true => EVENT_TYPES.iter().map(|t| t.to_string()).collect(),
            false => self.types,
        };
        let max_lateness = chrono::Duration::from_std(*self.max_lateness)
            .map_err(|e| ProduceError::Argument { flag: "--max-lateness", rule: e.to_string() })?;
        let config = GeneratorConfig {
            seed: self.seed,
            start_time,
            types,
            duplicate_ratio: self.duplicate_ratio,
            conflict_ratio: self.conflict_ratio,
            invalid_ratio: self.invalid_ratio,
            late_ratio: self.late_ratio,
            max_lateness,
            tombstone_ratio: self.tombstone_ratio,
            invalidate_ratio: self.invalidate_ratio,
            delete_ratio: self.delete_ratio,
        };
        Ok(Source::Generate { count, config })
    }
}

/// Runs `eventline produce` and returns its exit code: 1 when a record was not
/// delivered, or when lines were rejected without `--skip-invalid`.
pub fn run(settings: &Settings, args: ProduceArgs) -> Result<i32, ProduceError> {
    args.check_ratios()?;
    let contracts = Contracts::load(&settings.pipeline.contracts_dir, settings.into())?;
    let skip_invalid = args.skip_invalid;
    let options = ProduceOptions {
        kafka: settings.kafka.clone(),
        topic: args.topic.clone().unwrap_or_else(|| settings.kafka.topic.clone()),
        rate: args.rate,
        linger_ms: args.linger_ms,
        dry_run: args.dry_run,
        write_jsonl: args.write_jsonl.clone(),
        source: args.source()?,
    };
    let summary = produce(&options, &contracts)?;
    // The summary is a note: with a closed stderr every record was still sent.
    crate::cli::console::note(summary.report().trim_end());
    let rejected: u64 = summary.rejected.values().sum();
    let failed: u64 = summary.failed.values().sum();
    Ok(if failed > 0 || (rejected > 0 && !skip_invalid) { 1 } else { 0 })
}

/// Runs `produce`; invalid lines are reported on stderr as they are found.
pub fn produce(
    options: &ProduceOptions,
    contracts: &Contracts,
) -> Result<ProduceSummary, ProduceError> {
    let mut publisher = if options.dry_run {
        None
    } else {
        // A refused password or an unreachable broker ends the command with the reason
        // instead of records that wait out their delivery timeout.
        crate::source::consumer::probe(&options.kafka)?;
        Some(Publisher::with_linger(&options.kafka, &options.topic, options.linger_ms)?)
    };
    let mut capture = options
        .write_jsonl
        .as_ref()
        .map(|p| std::fs::File::create(p).map(BufWriter::new))
        .transpose()?;
    let mut summary = ProduceSummary::default();
    let started = Instant::now();
    let pacer = Pacer { start: started, rate: options.rate };
    let total = match &options.source {
        Source::Generate { count, .. } => Some(*count),
        Source::File { .. } => None,
    };
    let mut progress = Progress::new(total);
    let mut emit = |key: &str,
                    value: Option<&[u8]>,
                    summary: &mut ProduceSummary|
     -> Result<(), ProduceError> {
        pacer.wait(summary.sent);
        if let Some(p) = publisher.as_mut() {
            p.send(key, value)?;
        }
        if let Some(c) = capture.as_mut() {
            match value {
                Some(value) => c.write_all(value)?,
                None => c.write_all(tombstone_text(key).as_bytes())?,
            }
            c.write_all(b"\n")?;
        }
        summary.sent += 1;
        progress.tick(summary.sent, started);
        Ok(())
    };
    match &options.source {
        Source::Generate { count, config } => {
            for record in Generator::new(config.clone()).take(*count as usize) {
                *summary.kinds.entry(kind_name(record.kind).to_string()).or_default() += 1;
                emit(&record.key, record.value.as_deref(), &mut summary)?;
            }
        }
        Source::File { path, raw } => {
            let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(std::fs::File::open(path)?))
            };
            for (index, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                if *raw {
                    match tombstone_line(&line) {
                        Some(key) => emit(&key.unwrap_or_default(), None, &mut summary)?,
                        None => {
                            let key = serde_json::from_str(&line)
                                .map(|v| entity_key(&v))
                                .unwrap_or_default();
                            emit(&key, Some(line.as_bytes()), &mut summary)?;
                        }
                    }
                    continue;
                }
                match check_line(contracts, index + 1, &line) {
                    CheckedLine::Valid { key } => emit(&key, Some(line.as_bytes()), &mut summary)?,
                    CheckedLine::Tombstone { key } => emit(&key, None, &mut summary)?,
                    CheckedLine::Rejected { class, message } => {
                        crate::cli::console::note(&format!("rejected: {message}"));
                        *summary.rejected.entry(class.to_string()).or_default() += 1;
                    }
                }
            }
        }
    }
    progress.finish();
    if let Some(mut c) = capture {
        c.flush()?;
    }
    if let Some(p) = &publisher {
        p.finish(Duration::from_secs(120))?;
        summary.delivered = p.stats.delivered.load(std::sync::atomic::Ordering::Relaxed);
        summary.failed = p.stats.failed.lock().map(|m| m.clone()).unwrap_or_default();
        summary.per_partition = p.stats.per_partition.lock().map(|m| m.clone()).unwrap_or_default();
    }
    summary.elapsed = started.elapsed();
    Ok(summary)
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Valid => "valid",
        Kind::Duplicate => "duplicate",
        Kind::Conflict => "conflict",
        Kind::Invalid => "invalid",
        Kind::Tombstone => "tombstone",
        Kind::Invalidation => "invalidation",
        Kind::Deletion => "deletion",
    }
}
