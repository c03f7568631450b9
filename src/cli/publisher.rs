//! Publishing events to Kafka: validated lines from a file, or generated traffic.
//! Records are keyed by the owning entity (`payload.account_id`) so one entity's events
//! stay in order in one partition; the producer is idempotent and every delivery is
//! confirmed (or counted as failed with its cause) before [`Publisher::finish`] returns.

use crate::record::Coords;
use crate::settings::kafka_client::client_config;
use crate::settings::KafkaSettings;
use crate::stages::contract::Contracts;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Delivery outcomes, counted by the producer's callback thread.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Confirmed by the broker.
    pub delivered: AtomicU64,
    /// Failed deliveries, by cause.
    pub failed: Mutex<BTreeMap<String, u64>>,
    /// Confirmed deliveries per partition.
    pub per_partition: Mutex<BTreeMap<i32, u64>>,
    /// The idempotent producer has its producer id (librdkafka's statistics say so).
    producer_id_assigned: AtomicBool,
}

/// Counts each delivery report.
pub struct DeliveryCounter {
    stats: Arc<DeliveryStats>,
}

impl ClientContext for DeliveryCounter {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(eos) = statistics.eos {
            let assigned = eos.idemp_state == "Assigned";
            self.stats.producer_id_assigned.store(assigned, Ordering::Relaxed);
        }
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                *self
                    .stats
                    .per_partition
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(message.partition())
                    .or_default() += 1;
            }
            Err((error, _)) => {
                *self
                    .stats
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(error.to_string())
                    .or_default() += 1;
            }
        }
    }
}

/// An idempotent producer to one topic.
pub struct Publisher {
    producer: ThreadedProducer<DeliveryCounter>,
    topic: String,
    /// Delivery counters.
    pub stats: Arc<DeliveryStats>,
    /// Records handed to the producer.
    pub sent: u64,
}

impl Publisher {
    /// Connects with a 10 ms linger (throughput first).
    pub fn new(kafka: &KafkaSettings, topic: &str) -> Result<Publisher, KafkaError> {
        Publisher::with_linger(kafka, topic, 10)
    }

    /// Connects to `brokers`; records wait up to `linger_ms` to fill a batch (lower is
    /// sooner, higher is cheaper per record).
    pub fn with_linger(
        kafka: &KafkaSettings,
        topic: &str,
        linger_ms: u64,
    ) -> Result<Publisher, KafkaError> {
        let stats = Arc::new(DeliveryStats::default());
        let producer: ThreadedProducer<DeliveryCounter> = client_config(kafka)
            .set("enable.idempotence", "true")
            .set("linger.ms", linger_ms.to_string())
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "500000")
            .set("message.timeout.ms", "60000")
            // How the producer id's arrival is seen (below); cheap at this interval.
            .set("statistics.interval.ms", "100")
            .create_with_context(DeliveryCounter { stats: stats.clone() })?;
        // Connected and holding a producer id before the first record: a paced run must
        // not stamp records that then wait (that would show up as pipeline latency). An
        // idempotent producer sends nothing until the broker has given it an id, which
        // took 500 ms in every other start here (the first records of a latency run
        // were 500 ms late, for eventline and for the Kafka-alone floor alike).
        producer.client().fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !stats.producer_id_assigned.load(Ordering::Relaxed) {
            if std::time::Instant::now() > deadline {
                return Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Publisher { producer, topic: topic.to_string(), stats, sent: 0 })
    }

    /// Hands one record to the producer, waiting while its local queue is full.
    pub fn send(&mut self, key: &str, value: Option<&[u8]>) -> Result<(), KafkaError> {
        let mut record = BaseRecord::<str, [u8]>::to(&self.topic).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // The background thread is delivering: wait for room, do not drop.
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits until every record is confirmed or failed.
    pub fn finish(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

/// The partitioning key of an event: its owning account, else its order, else its id.
pub fn entity_key(value: &serde_json::Value) -> String {
    value["payload"]["account_id"]
        .as_str()
        .or_else(|| value["payload"]["order_id"].as_str())
        .or_else(|| value["event_id"].as_str())
        .unwrap_or("")
        .to_string()
}

/// What a line of a JSON lines file stands for when it is not an event: `null` is a
/// tombstone without a key, `{"tombstone": "<key>"}` a tombstone with that key (keyed by
/// an `event_id`, it deletes that event). `None`: the line is an event (or junk).
pub fn tombstone_line(line: &str) -> Option<Option<String>> {
    let line = line.trim();
    if line == "null" {
        return Some(None);
    }
    if !line.starts_with("{\"tombstone\"") {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.as_object().filter(|f| f.len() == 1)?;
    fields["tombstone"].as_str().map(|key| Some(key.to_string()))
}

/// The line a capture writes for a tombstone with `key` (see [`tombstone_line`]).
pub fn tombstone_text(key: &str) -> String {
    match key.is_empty() {
        true => "null".to_string(),
        false => serde_json::json!({ "tombstone": key }).to_string(),
    }
}

/// One line of an input file, checked.
#[derive(Debug)]
pub enum CheckedLine {
    /// A valid event with its key.
    Valid {
        /// Partitioning key.
        key: String,
    },
    /// A tombstone keyed by an event id: it deletes that event.
    Tombstone {
        /// The event id.
        key: String,
    },
    /// Rejected before Kafka.
    Rejected {
        /// Error class name.
        class: &'static str,
        /// Line number and event id (when present), the path and the rule.
        message: String,
    },
}

/// Validates one line of a JSON lines file against the same contracts as the processor.
pub fn check_line(contracts: &Contracts, number: usize, line: &str) -> CheckedLine {
    let coords = Coords { topic: Arc::from("producer"), partition: 0, offset: number as i64 };
    if let Some(key) = tombstone_line(line) {
        let record = crate::record::SourceRecord {
            coords,
            key: key.clone().map(String::into_bytes),
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        };
        let entities = contracts.entities().names();
        return match crate::stages::tombstone::meaning(&record, 0, &entities) {
            Ok(_) => CheckedLine::Tombstone { key: key.unwrap_or_default() },
            Err(rejection) => CheckedLine::Rejected {
                class: rejection.class.as_str(),
                message: format!(
                    "line {number}: {} ({})",
                    rejection.reason,
                    rejection.class.as_str()
                ),
            },
        };
    }
    match contracts.check(Some(line.as_bytes()), coords, None) {
        Ok(_) => CheckedLine::Valid {
            key: serde_json::from_str(line).map(|v| entity_key(&v)).unwrap_or_default(),
        },
        Err(rejection) => {
            let id = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["event_id"].as_str().map(String::from));
            let id = id.map(|id| format!(" event_id {id}:")).unwrap_or_default();
            CheckedLine::Rejected {
                class: rejection.class.as_str(),
                message: format!(
                    "line {number}:{id} {} ({})",
                    rejection.reason,
                    rejection.class.as_str()
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked_with_line_number_id_path_and_rule() {
        let contracts = Contracts::shipped();
        let good = r#"{"event_id":"4f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d","event_type":"account_created","source":"crm","timestamp":"2026-11-22T10:15:00Z","payload":{"account_id":"acc_1234","industry":"software","region":"EMEA"}}"#;
        assert!(
            matches!(check_line(&contracts, 1, good), CheckedLine::Valid { key } if key == "acc_1234")
        );
        match check_line(&contracts, 2, &good.replace("\"EMEA\"", "\"EMEA\",\"employee_count\":-5"))
        {
            CheckedLine::Rejected { class, message } => {
                assert_eq!(class, "contract_violation");
                assert!(message.starts_with("line 2: event_id 4f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d: /payload/employee_count: rule 'minimum'"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_line(&contracts, 3, "{oops"),
            CheckedLine::Rejected { class: "not_json", .. }
        ));
    }

    #[test]
    fn tombstone_lines_carry_their_key_and_only_keyless_ones_fail() {
        let id = "4f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d";
        assert_eq!(tombstone_line(&tombstone_text(id)), Some(Some(id.to_string())));
        assert_eq!(tombstone_line("null"), Some(None));
        assert_eq!(tombstone_text(""), "null");
        assert_eq!(tombstone_line(r#"{"tombstone": "k", "x": 1}"#), None);
        let contracts = Contracts::shipped();
        assert!(matches!(
            check_line(&contracts, 1, &tombstone_text(id)),
            CheckedLine::Tombstone { key } if key == id
        ));
        // The shipped contracts declare entities: another key is an entity's tombstone.
        assert!(matches!(
            check_line(&contracts, 2, &tombstone_text("acc_1")),
            CheckedLine::Tombstone { key } if key == "acc_1"
        ));
        assert!(matches!(
            check_line(&contracts, 3, "null"),
            CheckedLine::Rejected { class: "tombstone", .. }
        ));
    }
}
