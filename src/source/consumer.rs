//! The Kafka consumer of the source and its rebalance context. The callback only
//! forwards what was assigned or revoked; where an assigned partition starts (the lower
//! of both sinks' durable progress) is decided off the event loop by
//! [`super::positioning`], and only then is the partition assigned, so a rebalance or
//! restart neither skips nor re-stores anything (each sink skips what it already has).

use super::group_watch::GroupWatch;
use crate::settings::kafka_client::client_config;
use crate::settings::KafkaSettings;
use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientContext, TopicPartitionList};
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

/// How long the broker may hold a fetch that has no data yet. librdkafka's default,
/// 500 ms, held the first records of each partition after an assignment for up to
/// 540 ms (measured at 1,000/s: a p99 of 345 ms to Postgres, all of it in the first
/// half second); at 50 ms the p99 was 15 ms. An idle partition costs 20 empty fetches
/// a second for it, which is nothing. `[kafka.client] fetch_wait_max_ms` overrides it.
const FETCH_WAIT: &str = "fetch.wait.max.ms";

/// Creates the consumer and subscribes it to the topic. The eager assignment protocol
/// is used on purpose: every assignment passes through [`SourceContext::rebalance`].
/// The group membership librdkafka reports goes to `group`.
pub fn create_consumer(
    kafka: &KafkaSettings,
    group: Arc<GroupWatch>,
) -> Result<(SourceConsumer, mpsc::UnboundedReceiver<RebalanceEvent>), KafkaError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut config = client_config(kafka);
    if !kafka.client.contains_key(FETCH_WAIT) {
        config.set(FETCH_WAIT, "50");
    }
    let consumer: SourceConsumer = config
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

/// Why the brokers could not be reached at start.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Kafka at {brokers} within {seconds} s (kafka.connect_timeout_s): {reason}")]
pub struct ConnectError {
    /// `kafka.brokers`.
    pub brokers: String,
    /// How long it tried.
    pub seconds: u64,
    /// librdkafka's reasons, secrets scrubbed.
    pub reason: String,
}

/// Remembers what librdkafka reported while probing.
#[derive(Default)]
struct ProbeContext {
    errors: std::sync::Mutex<Vec<(Option<rdkafka::types::RDKafkaErrorCode>, String)>>,
}

impl ConsumerContext for ProbeContext {}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: KafkaError, reason: &str) {
        let text = crate::settings::secrets::scrub(&format!("{error} ({reason})"));
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if !errors.iter().any(|(_, t)| *t == text) {
            errors.push((error.rdkafka_error_code(), text));
        }
    }
}

/// Connects (and authenticates) once, with the `[kafka.client]` properties, before
/// anything starts: an unreachable broker, a refused password or a TLS failure ends the
/// start within `kafka.connect_timeout_s` with librdkafka's reason, rather than a
/// process that waits silently. Authentication and TLS failures end it at once.
pub fn probe(kafka: &KafkaSettings) -> Result<(), ConnectError> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let seconds = kafka.connect_timeout_s;
    let fail = |reason: String| ConnectError { brokers: kafka.brokers.clone(), seconds, reason };
    let consumer: BaseConsumer<ProbeContext> = client_config(kafka)
        .create_with_context(ProbeContext::default())
        .map_err(|e| fail(crate::settings::secrets::scrub(&e.to_string())))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let last =
            match consumer.fetch_metadata(Some(&kafka.topic), std::time::Duration::from_secs(1)) {
                Ok(_) => return Ok(()),
                Err(e) => e.to_string(),
            };
        // Errors (a refused password, a failed handshake) arrive as events on the
        // client's queue: serve them, so that the context sees them.
        let _ = consumer.poll(std::time::Duration::ZERO);
        let errors = consumer.context().errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let hopeless = errors.iter().any(|(code, _)| {
            matches!(code, Some(Code::Authentication | Code::SaslAuthenticationFailed | Code::SSL))
        });
        if hopeless || std::time::Instant::now() >= deadline {
            let mut reasons: Vec<String> = errors.into_iter().map(|(_, t)| t).collect();
            if reasons.is_empty() {
                reasons.push(crate::settings::secrets::scrub(&last));
            }
            return Err(fail(reasons.join("; ")));
        }
    }
}
