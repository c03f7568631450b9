//! The dead-letter actor: publishes every rejected record to the DLQ topic, original
//! bytes as the value, the reason and the source coordinates as headers, and waits for
//! the broker to confirm each one. A batch reaches the sinks (and so its offsets may be
//! committed) only after its dead letters are confirmed. The `dead_letters` table row
//! is written by the Postgres writer in the same transaction as its progress.

use crate::record::{DeadLetter, SharedBatch};
use actix::prelude::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;

/// Publish the dead letters of a batch; resolves when all are confirmed.
#[derive(Message)]
#[rtype(result = "Result<usize, DeadLetterError>")]
pub struct PublishDeadLetters(pub SharedBatch);

/// The dead-letter actor.
pub struct DeadLetterPublisher {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterPublisher {
    /// A publisher to `kafka.dlq_topic`, with the `[kafka.client]` properties.
    pub fn new(kafka: &crate::settings::KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let topic = kafka.dlq_topic.as_str();
        let producer: FutureProducer = crate::settings::kafka_client::client_config(kafka)
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            // A flow waits for its dead letters' acknowledgement before it hands the
            // batch to the sinks (at-least-once to the DLQ topic), so send at once.
            .set("linger.ms", "0")
            .create()?;
        // Learn the topic's leaders now, in the background: otherwise the first dead
        // letter waits for it (about half a second), and so does its whole partition.
        let (warm, warm_topic) = (producer.clone(), topic.to_string());
        std::thread::spawn(move || {
            if let Err(e) =
                warm.client().fetch_metadata(Some(&warm_topic), std::time::Duration::from_secs(10))
            {
                log::debug!(
                    "DLQ metadata not fetched yet ({e}); the first dead letter will fetch it"
                );
            }
        });
        Ok(DeadLetterPublisher { producer, topic: topic.to_string() })
    }
}

/// The headers a dead letter carries: its original headers, then ours.
pub fn dead_letter_headers(dead: &DeadLetter) -> OwnedHeaders {
    let c = &dead.record.coords;
    let mut headers = OwnedHeaders::new();
    for (key, value) in &dead.record.headers {
        headers = headers.insert(Header { key, value: value.as_deref() });
    }
    let ours = [
        ("eventline.error_class", dead.class.as_str().to_string()),
        ("eventline.error_reason", dead.reason.clone()),
        ("eventline.source_topic", c.topic.to_string()),
        ("eventline.source_partition", c.partition.to_string()),
        ("eventline.source_offset", c.offset.to_string()),
        ("eventline.event_type", dead.event_type.clone().unwrap_or_default()),
    ];
    for (key, value) in &ours {
        headers = headers.insert(Header { key, value: Some(value.as_bytes()) });
    }
    headers
}

/// Dead letters the broker did not take.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Some sends were not confirmed: the flow retries the whole batch (transient).
    #[error("{count} dead letters not confirmed by the broker: {first}")]
    NotConfirmed {
        /// How many failed.
        count: usize,
        /// The first failure.
        first: rdkafka::error::KafkaError,
    },
}

impl crate::error::class::Classified for DeadLetterError {
    fn class(&self) -> crate::error::class::FailureClass {
        crate::error::class::FailureClass::Transient
    }
}

impl Actor for DeadLetterPublisher {
    type Context = Context<Self>;
}

impl Handler<PublishDeadLetters> for DeadLetterPublisher {
    type Result = ResponseFuture<Result<usize, DeadLetterError>>;

    fn handle(&mut self, msg: PublishDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let (producer, topic) = (self.producer.clone(), self.topic.clone());
        Box::pin(async move {
            let batch = msg.0;
            let sends = batch.dead.iter().map(|dead| {
                let mut record =
                    FutureRecord::<[u8], [u8]>::to(&topic).headers(dead_letter_headers(dead));
                if let Some(value) = dead.record.value.as_deref() {
                    record = record.payload(value);
                }
                if let Some(key) = dead.record.key.as_deref() {
                    record = record.key(key);
                }
                producer.send(record, Duration::from_secs(30))
            });
            let results = futures::future::join_all(sends).await;
            let mut failed = results.into_iter().filter_map(|r| r.err().map(|(e, _)| e));
            match failed.next() {
                None => Ok(batch.dead.len()),
                Some(first) => {
                    Err(DeadLetterError::NotConfirmed { count: 1 + failed.count(), first })
                }
            }
        })
    }
}
