//! Single-stage limits for `make bench`, measured on the same data as the pipeline:
//! reading the topic and discarding (`consume_only`) and writing the same events as
//! Parquet with the lake's settings (`lake_only`).

use crate::cli::console::out;
use crate::record::{Coords, Event};
use crate::settings::Settings;
use crate::sinks::lake::files::{
    group_by_folder, to_record_batch, write_parquet, FileFormat, LakeFileError,
};
use crate::sinks::lake::payload_columns::PayloadColumns;
use crate::stages::contract::{ContractLoadError, Contracts};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a limit could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Kafka refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The topic stopped delivering before its end.
    #[error("{0}")]
    Stalled(String),
    /// Writing the lake files failed.
    #[error(transparent)]
    Lake(#[from] LakeFileError),
    /// A folder could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The contracts did not load.
    #[error(transparent)]
    Contracts(#[from] ContractLoadError),
    /// Standard output failed (a closed pipe ends the command quietly).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

/// Reads every record of `topic` up to the current high watermarks and calls `each`.
/// Returns (records, seconds spent reading).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    mut each: impl FnMut(i32, i64, Option<&[u8]>, Option<i64>),
) -> Result<(u64, f64), BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("eventline-bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.max.bytes", "52428800")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut count = 0u64;
    while !ends.is_empty() {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                count += 1;
                each(m.partition(), m.offset(), m.payload(), m.timestamp().to_millis());
                if ends.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                return Err(BenchError::Stalled(
                    "no record for 10 s before the end of the topic".into(),
                ))
            }
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Consume-only limit: records per second reading the topic and discarding.
pub fn consume_only(brokers: &str, topic: &str) -> Result<(u64, f64), BenchError> {
    let mut bytes = 0usize;
    let result = read_topic(brokers, topic, |_, _, v, _| bytes += v.map_or(0, <[u8]>::len))?;
    std::hint::black_box(bytes);
    Ok(result)
}

/// Latency floor: how long Kafka alone takes to hand over a record, measured as (time
/// received minus the record's produce timestamp) for the next `records` records of
/// `topic`, read from the current end by a consumer that does nothing else. Returns
/// the delays in milliseconds, sorted.
pub fn kafka_latency(
    brokers: &str,
    topic: &str,
    records: u64,
    ready: impl FnOnce(),
) -> Result<Vec<f64>, BenchError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("eventline-bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        // As eventline's source consumer: the floor is measured with the same fetch wait.
        .set("fetch.wait.max.ms", "50")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0) {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;
    // One empty poll so the first fetches are on their way before traffic starts.
    let _ = consumer.poll(Duration::from_millis(200));
    ready();
    let mut delays = Vec::with_capacity(records as usize);
    while (delays.len() as u64) < records {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(m)) => {
                let now = chrono::Utc::now().timestamp_millis() as f64;
                delays.push(now - m.timestamp().to_millis().unwrap_or(0) as f64);
            }
            Some(Err(e)) => return Err(e.into()),
            None => {
                let seen = delays.len();
                return Err(BenchError::Stalled(format!(
                    "no record for 30 s after {seen} of {records}"
                )));
            }
        }
    }
    delays.sort_by(f64::total_cmp);
    Ok(delays)
}

/// Lake-only limit: the topic's valid events (read and checked untimed) written as
/// Parquet files with the lake's format and file size, timed. Returns (rows, seconds).
pub fn lake_only(
    brokers: &str,
    topic: &str,
    contracts: &Contracts,
    root: &Path,
    format: FileFormat,
    rows_per_file: usize,
) -> Result<(u64, f64), BenchError> {
    let topic_name: Arc<str> = Arc::from(topic);
    let mut events: BTreeMap<i32, Vec<Event>> = BTreeMap::new();
    read_topic(brokers, topic, |partition, offset, value, ts| {
        let coords = Coords { topic: topic_name.clone(), partition, offset };
        if let Ok(event) = contracts.check(value, coords, ts) {
            events.entry(partition).or_default().push(event);
        }
    })?;
    // The lake's typed columns are part of what a lake write costs.
    let columns = PayloadColumns::from_contracts(contracts);
    let started = Instant::now();
    let mut rows = 0u64;
    for (partition, list) in &events {
        for (chunk_index, chunk) in list.chunks(rows_per_file.max(1)).enumerate() {
            for (dir, group) in group_by_folder(chunk) {
                let folder = root.join(dir);
                std::fs::create_dir_all(&folder)
                    .map_err(|source| BenchError::Io { path: folder.clone(), source })?;
                let batch = to_record_batch(&group, 0, &columns)?;
                write_parquet(
                    &folder.join(format!("{topic}-{partition}-{chunk_index}.parquet")),
                    &batch,
                    format,
                )?;
                rows += group.len() as u64;
            }
        }
    }
    Ok((rows, started.elapsed().as_secs_f64()))
}

/// A single-stage limit that `make bench` measures next to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchStage {
    /// Read the topic and discard.
    ConsumeOnly,
    /// Write the topic's valid events as Parquet with the lake's settings.
    LakeOnly,
    /// Kafka alone: prints "ready" on stderr, then the delay percentiles of the next
    /// `records` records.
    KafkaLatency,
}

/// Measures `stage` on `topic` and prints one JSON object.
pub fn run_limit(
    settings: &Settings,
    stage: BenchStage,
    topic: &str,
    records: u64,
    root: &Path,
) -> Result<(), BenchError> {
    let brokers = &settings.kafka.brokers;
    let name = clap::ValueEnum::to_possible_value(&stage).map(|v| v.get_name().to_string());
    let line = match stage {
        BenchStage::KafkaLatency => {
            let d = kafka_latency(brokers, topic, records.max(1), || {
                crate::cli::console::note("ready")
            })?;
            let q = |p: f64| percentile(&d, p);
            serde_json::json!({"stage": name, "records": d.len(), "p50": q(0.5), "p95": q(0.95),
                "p99": q(0.99), "max": q(1.0)})
        }
        BenchStage::ConsumeOnly | BenchStage::LakeOnly => {
            let (records, seconds) = if stage == BenchStage::ConsumeOnly {
                consume_only(brokers, topic)?
            } else {
                let contracts = Contracts::load(&settings.pipeline.contracts_dir, settings.into())?;
                lake_only(
                    brokers,
                    topic,
                    &contracts,
                    root,
                    settings.into(),
                    settings.lake.max_rows_per_file,
                )?
            };
            serde_json::json!({"stage": name, "records": records, "seconds": seconds,
                "per_second": records as f64 / seconds.max(1e-9)})
        }
    };
    out(&format!("{line}\n")).map_err(BenchError::Output)
}

/// The `p` quantile (0 to 1) of sorted, non-empty `values`, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 51.0);
        assert_eq!(percentile(&values, 0.99), 100.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
    }
}
