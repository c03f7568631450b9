//! `eventline produce`: publishes a JSON lines file (validated first) or generated
//! traffic, with a progress bar on a terminal (plain periodic lines otherwise) and a
//! final summary: sent, rejected by reason, per partition, events/s.

use crate::contract::Contracts;
use crate::generator::{Generator, GeneratorConfig, Kind};
use crate::producer::{check_line, entity_key, CheckedLine, Publisher};
use std::collections::BTreeMap;
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where records come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A JSON lines file (`-` for stdin); `raw` sends lines unvalidated, `null` as a tombstone.
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
    /// Bootstrap servers.
    pub brokers: String,
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
    /// Save exactly what was sent, one value per line (`null` for a tombstone).
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
                    crate::console::note(&format!(
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
    /// Reading the input or writing the capture failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs `produce`; invalid lines are reported on stderr as they are found.
pub fn produce(
    options: &ProduceOptions,
    contracts: &Contracts,
) -> Result<ProduceSummary, ProduceError> {
    let mut publisher = if options.dry_run {
        None
    } else {
        Some(Publisher::with_linger(&options.brokers, &options.topic, options.linger_ms)?)
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
            c.write_all(value.unwrap_or(b"null"))?;
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
                    let value = (line.trim() != "null").then_some(line.as_bytes());
                    let key =
                        serde_json::from_str(&line).map(|v| entity_key(&v)).unwrap_or_default();
                    emit(&key, value, &mut summary)?;
                    continue;
                }
                match check_line(contracts, index + 1, &line) {
                    CheckedLine::Valid { key } => emit(&key, Some(line.as_bytes()), &mut summary)?,
                    CheckedLine::Rejected { class, message } => {
                        crate::console::note(&format!("rejected: {message}"));
                        *summary.rejected.entry(class.to_string()).or_default() += 1;
                    }
                }
            }
        }
    }
    drop(emit);
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
    }
}
