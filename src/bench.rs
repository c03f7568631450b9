//! Single-stage limits for `make bench`, measured on the same data as the pipeline:
//! reading the topic and discarding (`consume_only`) and writing the same events as
//! Parquet with the lake's settings (`lake_only`).

use crate::contract::Contracts;
use crate::lake_files::{group_by_folder, to_record_batch, write_parquet, FileFormat};
use crate::record::{Coords, Event};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reads every record of `topic` up to the current high watermarks and calls `each`.
/// Returns (records, seconds spent reading).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    mut each: impl FnMut(i32, i64, Option<&[u8]>, Option<i64>),
) -> Result<(u64, f64), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("eventline-bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "65536")
        .set("fetch.max.bytes", "52428800")
        .create()
        .map_err(|e| e.to_string())?;
    let md =
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let partitions = md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low)).map_err(|e| e.to_string())?;
        }
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
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
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("no record for 10 s before the end of the topic".into()),
        }
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Consume-only limit: records per second reading the topic and discarding.
pub fn consume_only(brokers: &str, topic: &str) -> Result<(u64, f64), String> {
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
) -> Result<Vec<f64>, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("eventline-bench-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let md =
        consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0) {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        tpl.add_partition_offset(topic, p, Offset::Offset(high)).map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
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
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err(format!("no record for 30 s after {} of {records}", delays.len())),
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
) -> Result<(u64, f64), String> {
    let topic_name: Arc<str> = Arc::from(topic);
    let mut events: BTreeMap<i32, Vec<Event>> = BTreeMap::new();
    read_topic(brokers, topic, |partition, offset, value, ts| {
        let coords = Coords { topic: topic_name.clone(), partition, offset };
        if let Ok(event) = contracts.check(value, coords, ts) {
            events.entry(partition).or_default().push(event);
        }
    })?;
    let started = Instant::now();
    let mut rows = 0u64;
    for (partition, list) in &events {
        for (chunk_index, chunk) in list.chunks(rows_per_file.max(1)).enumerate() {
            for (dir, group) in group_by_folder(chunk) {
                let folder = root.join(dir);
                std::fs::create_dir_all(&folder).map_err(|e| e.to_string())?;
                let batch = to_record_batch(&group, 0).map_err(|e| e.to_string())?;
                write_parquet(
                    &folder.join(format!("{topic}-{partition}-{chunk_index}.parquet")),
                    &batch,
                    format,
                )
                .map_err(|e| e.to_string())?;
                rows += group.len() as u64;
            }
        }
    }
    Ok((rows, started.elapsed().as_secs_f64()))
}
