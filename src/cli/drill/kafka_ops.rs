//! Kafka operations the drills need: watermarks, the group's committed offsets, rewinding
//! the group, and fetching original records by their coordinates.

use super::StepError;
use crate::settings::kafka_client::client_config;
use crate::settings::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

/// A Kafka failure, with what was being done.
pub type KafkaResult<T> = Result<T, StepError>;

fn consumer(kafka: &KafkaSettings, group: &str) -> KafkaResult<BaseConsumer> {
    client_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(StepError::kafka("kafka consumer"))
}

/// Number of partitions of `topic`.
pub fn partitions(kafka: &KafkaSettings, topic: &str) -> KafkaResult<i32> {
    let c = consumer(kafka, "eventline-drill-metadata")?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(StepError::kafka(format!("metadata of {topic}")))?;
    let n = md.topics().first().map(|t| t.partitions().len() as i32).unwrap_or(0);
    if n == 0 {
        return Err(StepError::Failed(format!("topic {topic} does not exist")));
    }
    Ok(n)
}

/// (low, high) watermarks per partition.
pub fn watermarks(kafka: &KafkaSettings, topic: &str) -> KafkaResult<Vec<(i64, i64)>> {
    let c = consumer(kafka, "eventline-drill-metadata")?;
    (0..partitions(kafka, topic)?)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(StepError::kafka(format!("watermarks of {topic}/{p}")))
        })
        .collect()
}

/// The group's committed offset per partition (-1: none).
pub fn committed(kafka: &KafkaSettings, group: &str, topic: &str) -> KafkaResult<Vec<i64>> {
    let c = consumer(kafka, group)?;
    let n = partitions(kafka, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(StepError::kafka(format!("committed offsets of {group}")))?;
    Ok((0..n)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1,
        })
        .collect())
}

/// Active members of the group (a running processor shows up here).
pub fn group_members(kafka: &KafkaSettings, group: &str) -> KafkaResult<usize> {
    let c = consumer(kafka, "eventline-drill-metadata")?;
    let list = c
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .map_err(StepError::kafka("group list"))?;
    Ok(list.groups().iter().filter(|g| g.name() == group).map(|g| g.members().len()).sum())
}

/// Where to rewind the group to.
#[derive(Debug, Clone, Copy)]
pub enum RewindTo {
    /// The earliest offset still in the topic.
    Earliest,
    /// This offset on every partition (clamped to the watermarks).
    Offset(i64),
    /// The first offset at or after this time (milliseconds since the epoch).
    Timestamp(i64),
}

/// Commits the rewind target for every partition in the (idle) group; returns the offsets.
pub fn rewind_group(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
    to: RewindTo,
) -> KafkaResult<Vec<i64>> {
    let c = consumer(kafka, group)?;
    let marks = watermarks(kafka, topic)?;
    let targets: Vec<i64> = match to {
        RewindTo::Earliest => marks.iter().map(|(low, _)| *low).collect(),
        RewindTo::Offset(o) => marks.iter().map(|(low, high)| o.clamp(*low, *high)).collect(),
        RewindTo::Timestamp(ms) => {
            let mut query = TopicPartitionList::new();
            for p in 0..marks.len() as i32 {
                query.add_partition_offset(topic, p, Offset::Offset(ms))?;
            }
            let found = c
                .offsets_for_times(query, Duration::from_secs(10))
                .map_err(StepError::kafka("offsets for time"))?;
            (0..marks.len())
                .map(|p| match found.find_partition(topic, p as i32).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    _ => marks[p].1,
                })
                .collect()
        }
    };
    let mut tpl = TopicPartitionList::new();
    for (p, o) in targets.iter().enumerate() {
        tpl.add_partition_offset(topic, p as i32, Offset::Offset(*o))?;
    }
    c.commit(&tpl, CommitMode::Sync).map_err(StepError::kafka(format!("rewinding {group}")))?;
    Ok(targets)
}

/// A record's key and value as read back from Kafka.
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The original (key, value) of the records at these coordinates, in the given order.
pub fn fetch_records(
    kafka: &KafkaSettings,
    topic: &str,
    coords: &[(i32, i64)],
) -> KafkaResult<Vec<KeyValue>> {
    let c = consumer(kafka, "eventline-drill-fetch")?;
    let mut out = Vec::with_capacity(coords.len());
    for (partition, offset) in coords {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        c.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() == *partition && m.offset() == *offset => {
                    out.push((m.key().map(<[u8]>::to_vec), m.payload().map(<[u8]>::to_vec)));
                    break;
                }
                Some(Err(e)) => {
                    return Err(StepError::kafka(format!("fetching {topic}/{partition}@{offset}"))(
                        e,
                    ))
                }
                _ if std::time::Instant::now() > deadline => {
                    return Err(StepError::Failed(format!(
                        "{topic}/{partition}@{offset} not found"
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(out)
}
