//! The Kafka consumer of the source and its rebalance context. The callback only
//! forwards what was assigned or revoked; where an assigned partition starts (the lower
//! of both sinks' durable progress) is decided off the event loop by
//! [`super::positioning`], and only then is the partition assigned, so a rebalance or
//! restart neither skips nor re-stores anything (each sink skips what it already has).

use super::group_watch::GroupWatch;
use crate::settings::KafkaSettings;
use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Partition assignment changes, forwarded from librdkafka's rebalance callback.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// Partitions given to this process; the source decides where each starts (off the
    /// event loop) and then assigns them.
    Assigned(Vec<i32>),
    /// Partitions taken away; the source unassigns them once released.
    Revoked(Vec<i32>),
}

/// The consumer context: it only forwards assignment changes to the source loop. Nothing
/// blocking runs here: this callback runs inside `recv()` on the actix system thread.
pub struct SourceContext {
    rebalances: mpsc::UnboundedSender<RebalanceEvent>,
    group: Arc<GroupWatch>,
}

impl ClientContext for SourceContext {
    /// Only the group membership is kept, for [`super::group_watch`].
    fn stats_raw(&self, statistics: &[u8]) {
        self.group.record_stats(statistics);
    }
}

impl ConsumerContext for SourceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                // Not assigned here: librdkafka waits for the assign() call, which the
                // source makes once it knows where each partition starts.
                let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
                let _ = self.rebalances.send(RebalanceEvent::Assigned(partitions));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                // Not unassigned here: the source first makes what the sinks hold for
                // these partitions durable and commits it, then unassigns.
                let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
                // With the source loop gone (the consumer closing at exit) nobody else
                // would unassign, and closing waits for it.
                if self.rebalances.send(RebalanceEvent::Revoked(partitions)).is_err() {
                    let _ = consumer.unassign();
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
/// The group membership librdkafka reports goes to `group`.
pub fn create_consumer(
    kafka: &KafkaSettings,
    group: Arc<GroupWatch>,
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
        // Read by the group watchdog: statistics are cheap at this interval.
        .set("statistics.interval.ms", "5000")
        .create_with_context(SourceContext { rebalances: tx, group })?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok((consumer, rx))
}
