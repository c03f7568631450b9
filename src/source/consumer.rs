//! The Kafka consumer of the source and its rebalance context. When a partition is
//! assigned, the rebalance callback reads both sinks' durable progress and starts the
//! partition at the lower one, so a rebalance or restart neither skips nor re-stores
//! anything (each sink skips what it already has).

use crate::offsets::progress::resume_offset;
use crate::settings::KafkaSettings;
use crate::sinks::progress::{ProgressStore, SinkProgress};
use crate::sinks::restart_policy::exponential_backoff;
use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::time::Duration;
use tokio::sync::mpsc;

/// Partition assignment changes, forwarded from librdkafka's rebalance callback.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// A partition was assigned and positioned at `resume`.
    Assigned {
        /// Partition.
        partition: i32,
        /// Both sinks' durable progress when it was assigned.
        progress: Option<SinkProgress>,
    },
    /// Partitions taken away.
    Revoked(Vec<i32>),
}

/// The consumer context: on assignment it positions each partition at the lower of the
/// sinks' durable progress before fetching starts, and forwards every change to the
/// source loop.
pub struct SourceContext {
    rebalances: mpsc::UnboundedSender<RebalanceEvent>,
    progress: ProgressStore,
}

impl SourceContext {
    /// Where a newly assigned partition must start. `Offset::Stored` (the committed
    /// offset) is the fallback when Postgres cannot be read: it is never above what
    /// both sinks stored, because only that is ever committed.
    fn start_position(&self, partition: i32) -> (Offset, Option<SinkProgress>) {
        for attempt in 0..5u32 {
            match self.progress.read(partition) {
                Ok(progress) => {
                    let offset = match resume_offset(&[progress.postgres, progress.lake]) {
                        Some(offset) => Offset::Offset(offset),
                        // A sink with no progress must see the partition from its start.
                        None => Offset::Beginning,
                    };
                    return (offset, Some(progress));
                }
                Err(e) => {
                    log::warn!("Cannot read the sinks' progress of partition {partition} (attempt {attempt}): {e}");
                    std::thread::sleep(exponential_backoff(
                        Duration::from_millis(200),
                        Duration::from_millis(3200),
                        attempt,
                    ));
                }
            }
        }
        (Offset::Stored, None)
    }
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<(String, i32)> =
                    tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                for (topic, partition) in partitions {
                    let (offset, progress) = self.start_position(partition);
                    log::info!("Partition {topic}/{partition} assigned: sinks at {progress:?}, starting at {offset:?}");
                    if let Err(e) = tpl.set_partition_offset(&topic, partition, offset) {
                        log::error!("Cannot position {topic}/{partition}: {e}");
                    }
                    let _ = self.rebalances.send(RebalanceEvent::Assigned { partition, progress });
                }
                if let Err(e) = consumer.assign(tpl) {
                    log::error!("Assignment failed: {e}");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
                let _ = self.rebalances.send(RebalanceEvent::Revoked(partitions));
                if let Err(e) = consumer.unassign() {
                    log::error!("Unassignment failed: {e}");
                }
            }
            other => {
                log::error!("Rebalance error: {other:?}");
                let _ = consumer.unassign();
            }
        }
    }
}

/// The consumer type of the source.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Creates the consumer and subscribes it to the topic. The eager assignment protocol
/// is used on purpose: every assignment passes through [`SourceContext::rebalance`].
pub fn create_consumer(
    kafka: &KafkaSettings,
    progress: ProgressStore,
) -> Result<(SourceConsumer, mpsc::UnboundedReceiver<RebalanceEvent>), KafkaError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let consumer: SourceConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("enable.partition.eof", "false")
        // Bound what librdkafka prefetches (its default, 100,000 records per partition,
        // was a third of the peak RSS on a backlog); 20,000 still keeps the source
        // well ahead of the sinks.
        .set("queued.max.messages.kbytes", "16384")
        .set("queued.min.messages", "20000")
        .set("fetch.queue.backoff.ms", "10")
        .create_with_context(SourceContext { rebalances: tx, progress })?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok((consumer, rx))
}
