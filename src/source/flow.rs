//! The per-partition flow: one task per assigned partition takes its batches in order
//! through validation, de-duplication and dead-lettering, then hands the decided batch
//! to both sink supervisors. Each hop is `send().await`, so a full mailbox slows the
//! flow down, the flow's bounded channel fills, and the source pauses the partition.
//! The flow's load tells the source when to close a batch: at once when the flow is
//! idle (low latency at low rates), later and larger while it is busy (throughput).

use crate::failure::exponential_backoff;
use crate::record::SourceBatch;
use crate::sinks::supervisor::Enqueue;
use crate::stages::dead_letter::{DeadLetterPublisher, PublishDeadLetters};
use crate::stages::deduplicator::{Decide, Deduplicator};
use crate::stages::validator::{Validate, Validator};
use actix::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The addresses of the stages every flow uses.
#[derive(Clone)]
pub struct Stages {
    /// Contract checks.
    pub validator: Addr<Validator>,
    /// Dedup decisions.
    pub deduplicator: Addr<Deduplicator>,
    /// DLQ topic.
    pub dead_letters: Addr<DeadLetterPublisher>,
    /// Postgres sink (its supervisor).
    pub postgres: Recipient<Enqueue>,
    /// Lake sink (its supervisor).
    pub lake: Recipient<Enqueue>,
    /// Injected faults of the flows (tests): `panic` ends a flow task.
    pub faults: Arc<std::sync::Mutex<crate::telemetry::faults::Faults>>,
}

/// Retry delay for the unsupervised stages (dedup and DLQ need Postgres and Kafka).
fn retry_delay(attempt: u32) -> Duration {
    exponential_backoff(Duration::from_millis(100), Duration::from_secs(5), attempt)
}

/// Batches handed to a flow and not finished yet, shared by the source and the flow:
/// the source closes a batch early when its flow is idle.
#[derive(Debug)]
pub struct FlowLoad {
    in_flight: AtomicUsize,
    /// Woken whenever a flow finishes a batch.
    finished: Arc<Notify>,
}

impl FlowLoad {
    /// A counter that wakes `finished` when a batch is done.
    pub fn new(finished: Arc<Notify>) -> Self {
        FlowLoad { in_flight: AtomicUsize::new(0), finished }
    }

    /// True when the flow has nothing to do.
    pub fn idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    /// A batch was handed over.
    pub fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A batch counted by [`FlowLoad::started`] could not be handed over after all.
    pub fn done_without_sending(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn done(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.finished.notify_one();
    }
}

/// Batches of a partition being validated at once: the next batch is checked while
/// this one is being decided (validation does not depend on order; the dedup decision
/// and the hand-over to the sinks do, so they stay one batch at a time, in order).
const VALIDATED_AHEAD: usize = 2;

/// Runs batches of one partition through the stages until the channel closes.
pub async fn run_partition_flow(
    stages: Stages,
    batches: tokio::sync::mpsc::Receiver<SourceBatch>,
    load: Arc<FlowLoad>,
) {
    use futures::stream::{self, StreamExt};
    let validator = stages.validator.clone();
    let received =
        stream::unfold(batches, |mut rx| async move { rx.recv().await.map(|batch| (batch, rx)) });
    let mut checked = received
        .map(|batch| {
            let validator = validator.clone();
            async move {
                let count = batch.records.len();
                validator.send(Validate(batch)).await.map(|checked| (checked, count))
            }
        })
        .buffered(VALIDATED_AHEAD)
        .boxed_local();
    while let Some(validated) = checked.next().await {
        let result = match validated {
            Ok((batch, count)) => decide_and_hand_over(&stages, batch, count).await,
            Err(error) => Err(error),
        };
        load.done();
        if let Err(error) = result {
            // Only a stopped actor system gets here (shutdown past its deadline).
            log::error!("Partition flow stopped: {error}");
            return;
        }
    }
}

/// Outcome counters per event type (and error class for dead letters), once per batch.
fn record_outcomes(batch: &crate::record::DecidedBatch, consumed: usize) {
    let m = crate::telemetry::metrics::metrics();
    m.consumed.inc_by(consumed as u64);
    let mut counts: std::collections::HashMap<(&str, &str, &str), u64> =
        std::collections::HashMap::new();
    for e in &batch.accepted {
        *counts.entry(("accepted", e.event_type.as_str(), "")).or_default() += 1;
        m.lateness_seconds.observe(e.lateness_ms.max(0) as f64 / 1000.0);
        if e.late {
            m.late_events.with_label_values(&[&e.event_type]).inc();
        }
    }
    for c in &batch.conflicts {
        *counts.entry(("conflict", c.event.event_type.as_str(), "")).or_default() += 1;
    }
    for d in &batch.dead {
        let event_type = m.event_type_label(d.event_type.as_deref().unwrap_or("unknown"));
        *counts.entry(("dead_letter", event_type, d.class.as_str())).or_default() += 1;
    }
    for r in &batch.invalidations {
        let event_type = m.event_type_label(r.event_type.as_deref().unwrap_or("unknown"));
        *counts.entry(("invalidated", event_type, "")).or_default() += 1;
    }
    let deleted = batch.deletions.len() + batch.deleted_copies.len() + batch.entity_deletions.len();
    if deleted > 0 {
        // A tombstone carries no event type.
        counts.insert(("deleted", "any", ""), deleted as u64);
    }
    if !batch.duplicates.is_empty() {
        // Duplicates carry only coordinates; their type is the first sighting's.
        counts.insert(("duplicate", "any", ""), batch.duplicates.len() as u64);
    }
    for ((outcome, event_type, class), n) in counts {
        m.outcomes.with_label_values(&[outcome, event_type, class]).inc_by(n);
    }
}

async fn decide_and_hand_over(
    stages: &Stages,
    mut checked: crate::record::CheckedBatch,
    count: usize,
) -> Result<(), MailboxError> {
    let (topic, partition) = (checked.topic.clone(), checked.partition);
    let fault = stages.faults.lock().unwrap_or_else(|p| p.into_inner()).take_next();
    if fault == Some(crate::telemetry::faults::Fault::Panic) {
        panic!("injected panic in the flow of {topic}/{partition}");
    }
    let mut attempt = 0;
    let decided = loop {
        match stages.deduplicator.send(Decide(checked)).await? {
            Ok(decided) => break decided,
            Err(failed) => {
                log::warn!(
                    "Dedup of {topic}/{partition} failed, retrying (attempt {attempt}): {}",
                    failed.error
                );
                checked = failed.batch;
                tokio::time::sleep(retry_delay(attempt)).await;
                attempt += 1;
            }
        }
    };
    let decided = Arc::new(decided);
    if !decided.dead.is_empty() {
        // Bounded: each letter is retried a few times, then given up on (logged, counted).
        stages.dead_letters.send(PublishDeadLetters(decided.clone())).await?;
    }
    record_outcomes(&decided, count);
    stages.postgres.send(Enqueue(decided.clone())).await?;
    stages.lake.send(Enqueue(decided)).await?;
    Ok(())
}
