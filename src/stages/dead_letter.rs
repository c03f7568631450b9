//! The dead-letter actor: publishes every rejected record to the DLQ topic, original
//! bytes as the value, the reason and the source coordinates as headers, and waits for
//! the broker to confirm each one. A batch reaches the sinks (and so its offsets may be
//! committed) only after its dead letters are confirmed or given up on. The
//! `dead_letters` table row, written by the Postgres writer in the same transaction as
//! its progress, is the exactly-once record, with the bytes whole.
//!
//! The DLQ never blocks a partition:
//! - a dead letter bigger than the producer's `message.max.bytes` is sent with its value
//!   (then its key, then its original headers) cut to fit, and a header
//!   `eventline.value_truncated` (or `key_truncated`, `headers_dropped`) giving the
//!   original size ([`fit`]); a broker that still refuses it as too large (a topic
//!   with a smaller `max.message.bytes`) gets it again at half the size, then without
//!   its value;
//! - other failures are retried [`MAX_ATTEMPTS`] times with backoff, then given up on:
//!   logged, counted in `eventline_dlq_unpublished_total`, and the batch goes on.

use crate::record::{DeadLetter, SharedBatch};
use actix::prelude::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::time::Duration;

/// Publish the dead letters of a batch; resolves, with how many the broker confirmed,
/// when each is confirmed or given up on (never an error: a batch never waits longer).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PublishDeadLetters(pub SharedBatch);

/// Sends of one dead letter before it is given up on (transient failures).
pub const MAX_ATTEMPTS: u32 = 5;

/// Bytes kept free under `message.max.bytes` for the record's framing.
const FRAMING_BYTES: usize = 1024;

/// The dead-letter actor.
pub struct DeadLetterPublisher {
    producer: FutureProducer,
    topic: String,
    /// What one dead letter may weigh: `message.max.bytes` less the framing.
    max_bytes: usize,
}

/// A dead letter as sent: key, value and headers cut to fit a size.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The record's key, whole or cut.
    pub key: Option<Vec<u8>>,
    /// The record's value, whole or cut.
    pub value: Option<Vec<u8>>,
    /// Its original headers (unless dropped), then eventline's.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Outgoing {
    fn size(&self) -> usize {
        self.key.as_ref().map_or(0, Vec::len)
            + self.value.as_ref().map_or(0, Vec::len)
            + self.headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
    }
}

/// The dead letter as sent within `max_bytes`: whole when it fits; else its original
/// headers are dropped, then its key and value are cut, each cut said in a header
/// carrying the original size.
pub fn fit(dead: &DeadLetter, max_bytes: usize) -> Outgoing {
    let original: Vec<(String, Vec<u8>)> = dead
        .record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().unwrap_or_default()))
        .collect();
    let ours = eventline_headers(dead);
    let mut out = Outgoing {
        key: dead.record.key.clone(),
        value: dead.record.value.clone(),
        headers: original.iter().cloned().chain(ours.iter().cloned()).collect(),
    };
    if out.size() <= max_bytes {
        return out;
    }
    let note = |name: &str, n: usize| (format!("eventline.{name}"), n.to_string().into_bytes());
    if !original.is_empty() {
        let bytes: usize = original.iter().map(|(k, v)| k.len() + v.len()).sum();
        out.headers = ours.clone();
        out.headers.push(note("headers_dropped", bytes));
    }
    for part in ["value", "key"] {
        if out.size() <= max_bytes {
            break;
        }
        let whole = match part {
            "value" => out.value.as_ref().map(Vec::len),
            _ => out.key.as_ref().map(Vec::len),
        };
        let Some(whole) = whole else { continue };
        // The note first, so that its own bytes are counted in what must be cut.
        out.headers.push(note(&format!("{part}_truncated"), whole));
        let over = out.size().saturating_sub(max_bytes);
        let slot = if part == "value" { &mut out.value } else { &mut out.key };
        if let Some(bytes) = slot {
            bytes.truncate(whole.saturating_sub(over));
        }
    }
    out
}

/// eventline's own headers: class, reason (bounded), coordinates, event type.
fn eventline_headers(dead: &DeadLetter) -> Vec<(String, Vec<u8>)> {
    let c = &dead.record.coords;
    [
        ("eventline.error_class", dead.class.as_str().to_string()),
        ("eventline.error_reason", crate::storable::reason(&dead.reason).into_owned()),
        ("eventline.source_topic", c.topic.to_string()),
        ("eventline.source_partition", c.partition.to_string()),
        ("eventline.source_offset", c.offset.to_string()),
        (
            "eventline.event_type",
            crate::storable::text(dead.event_type.as_deref().unwrap_or_default()).into_owned(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect()
}

impl DeadLetterPublisher {
    /// A publisher to `kafka.dlq_topic`, with the `[kafka.client]` properties.
    pub fn new(kafka: &crate::settings::KafkaSettings) -> Result<Self, rdkafka::error::KafkaError> {
        let max_message = crate::settings::kafka_client::producer_max_message_bytes(&kafka.client);
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
        Ok(DeadLetterPublisher {
            producer,
            topic: topic.to_string(),
            max_bytes: max_message.saturating_sub(FRAMING_BYTES),
        })
    }
}

/// The headers a dead letter carries when it fits whole: its original headers, then ours.
pub fn dead_letter_headers(dead: &DeadLetter) -> OwnedHeaders {
    to_owned_headers(&fit(dead, usize::MAX).headers)
}

fn to_owned_headers(headers: &[(String, Vec<u8>)]) -> OwnedHeaders {
    headers.iter().fold(OwnedHeaders::new(), |acc, (key, value)| {
        acc.insert(Header { key, value: Some(value.as_slice()) })
    })
}

impl Actor for DeadLetterPublisher {
    type Context = Context<Self>;
}

impl Handler<PublishDeadLetters> for DeadLetterPublisher {
    type Result = ResponseFuture<usize>;

    fn handle(&mut self, msg: PublishDeadLetters, _: &mut Context<Self>) -> Self::Result {
        let (producer, topic, max_bytes) =
            (self.producer.clone(), self.topic.clone(), self.max_bytes);
        Box::pin(async move {
            let batch = msg.0;
            let sends = batch.dead.iter().map(|dead| publish(&producer, &topic, dead, max_bytes));
            let results = futures::future::join_all(sends).await;
            let published = results.iter().filter(|r| r.is_ok()).count();
            for (dead, result) in batch.dead.iter().zip(&results) {
                if let Err(e) = result {
                    let c = &dead.record.coords;
                    log::error!(
                        "Dead letter {}/{}@{} not published to the DLQ topic after {MAX_ATTEMPTS} attempts, given up (its dead_letters row keeps it): {e}",
                        c.topic, c.partition, c.offset
                    );
                    crate::telemetry::metrics::metrics().dlq_unpublished.inc();
                }
            }
            published
        })
    }
}

/// Sends one dead letter: cut to fit, retried [`MAX_ATTEMPTS`] times; a broker that
/// finds it too large gets it again at half the size, the last time without its value.
async fn publish(
    producer: &FutureProducer,
    topic: &str,
    dead: &DeadLetter,
    max_bytes: usize,
) -> Result<(), KafkaError> {
    let mut budget = max_bytes;
    let mut last = None;
    for attempt in 0..MAX_ATTEMPTS {
        let mut out = fit(dead, budget);
        if attempt + 1 == MAX_ATTEMPTS && budget < max_bytes {
            out = fit(dead, 0);
        }
        let headers = to_owned_headers(&out.headers);
        let mut record = FutureRecord::<[u8], [u8]>::to(topic).headers(headers);
        if let Some(value) = out.value.as_deref() {
            record = record.payload(value);
        }
        if let Some(key) = out.key.as_deref() {
            record = record.key(key);
        }
        match producer.send(record, Duration::from_secs(30)).await {
            Ok(_) => return Ok(()),
            Err((e, _)) => {
                let too_large = e.rdkafka_error_code().is_some_and(|c| {
                    matches!(
                        c,
                        RDKafkaErrorCode::MessageSizeTooLarge
                            | RDKafkaErrorCode::InvalidMessageSize
                    )
                });
                if too_large {
                    budget = (out.size() / 2).min(budget / 2);
                } else {
                    let delay = crate::failure::exponential_backoff(
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                        attempt,
                    );
                    tokio::time::sleep(delay).await;
                }
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Coords, ErrorClass, SourceRecord};

    fn dead(value_len: usize, headers: usize) -> DeadLetter {
        DeadLetter {
            record: SourceRecord {
                coords: Coords { topic: "t".into(), partition: 0, offset: 5 },
                key: Some(b"k".to_vec()),
                value: Some(vec![b'x'; value_len]),
                headers: (0..headers).map(|i| (format!("h{i}"), Some(vec![b'v'; 100]))).collect(),
                timestamp_ms: None,
            },
            class: ErrorClass::NotJson,
            reason: "not JSON".into(),
            event_type: None,
            schema_version: None,
        }
    }

    fn header<'a>(out: &'a Outgoing, name: &str) -> Option<&'a str> {
        out.headers.iter().find(|(k, _)| k == name).map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    #[test]
    fn a_dead_letter_that_fits_is_sent_whole() {
        let out = fit(&dead(1000, 2), 1_000_000);
        assert_eq!(out.value.as_ref().unwrap().len(), 1000);
        assert_eq!(header(&out, "h0").map(str::len), Some(100));
        assert_eq!(header(&out, "eventline.error_class"), Some("not_json"));
        assert_eq!(header(&out, "eventline.value_truncated"), None);
    }

    #[test]
    fn a_dead_letter_too_big_is_cut_to_fit_and_says_its_original_size() {
        let out = fit(&dead(1_040_000, 3), 999_000);
        assert!(out.size() <= 999_000, "{}", out.size());
        assert_eq!(header(&out, "eventline.value_truncated"), Some("1040000"));
        assert_eq!(header(&out, "eventline.headers_dropped"), Some("306"));
        assert_eq!(header(&out, "h0"), None);
        assert_eq!(header(&out, "eventline.source_offset"), Some("5"));
        let bare = fit(&dead(1_040_000, 0), 0);
        assert_eq!(bare.value.as_ref().map(Vec::len), Some(0));
    }
}
