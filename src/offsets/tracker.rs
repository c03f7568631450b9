//! Commits to Kafka only what every sink has durably stored: per partition, the
//! minimum of the sinks' progress. The sinks' own progress is the truth the source
//! resumes from; the committed offset is kept so that lag tools see the real backlog.

use crate::offsets::progress::committable;
use crate::offsets::OffsetsError;
use crate::ops::health::{partition_stalled, Health};
use crate::record::SinkId;
use crate::telemetry::metrics::metrics;
use actix::prelude::*;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the tracker needs from Kafka: commit offsets and read high watermarks. The source's
/// consumer implements it; the tracker does not need to know that consumer's type.
pub trait OffsetCommitter: Send + Sync + 'static {
    /// Commits `offsets` (partition, next offset) of `topic`.
    fn commit_offsets(
        &self,
        topic: &str,
        offsets: &[(i32, i64)],
        mode: CommitMode,
    ) -> Result<(), KafkaError>;
    /// The partition's high watermark (a blocking call of up to two seconds).
    fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, KafkaError>;
}

impl<C: ConsumerContext + 'static> OffsetCommitter for StreamConsumer<C> {
    fn commit_offsets(
        &self,
        topic: &str,
        offsets: &[(i32, i64)],
        mode: CommitMode,
    ) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        self.commit(&tpl, mode)
    }

    fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, KafkaError> {
        self.fetch_watermarks(topic, partition, Duration::from_secs(2)).map(|(_, high)| high)
    }
}

/// A partition was assigned; its sinks' durable progress as read at that moment.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Assigned {
    /// Partition.
    pub partition: i32,
    /// Postgres progress.
    pub postgres: Option<i64>,
    /// Lake progress.
    pub lake: Option<i64>,
}

/// Partitions that are no longer ours.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Revoked(pub Vec<i32>);

/// A sink made records durable up to `next_offset`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SinkProgressed {
    /// Which sink.
    pub sink: SinkId,
    /// Partition.
    pub partition: i32,
    /// Next offset the sink has not stored.
    pub next_offset: i64,
}

/// Commit everything committable now, synchronously (shutdown).
#[derive(Message)]
#[rtype(result = "Result<(), OffsetsError>")]
pub struct CommitNow;

/// Asks for the committed position per partition (tests, status).
#[derive(Message)]
#[rtype(result = "HashMap<i32, i64>")]
pub struct Committed;

#[derive(Debug, Default, Clone, Copy)]
struct PartitionProgress {
    postgres: Option<i64>,
    lake: Option<i64>,
    committed: Option<i64>,
}

/// The offset tracker actor.
pub struct OffsetTracker {
    consumer: Arc<dyn OffsetCommitter>,
    topic: String,
    partitions: HashMap<i32, PartitionProgress>,
    health: Arc<Health>,
    /// When each partition's committable offset last moved (or it was assigned).
    moved_at: HashMap<i32, Instant>,
    stall: Duration,
}

impl OffsetTracker {
    /// A tracker committing through `consumer`.
    pub fn new(
        consumer: Arc<dyn OffsetCommitter>,
        topic: String,
        health: Arc<Health>,
        stall: Duration,
    ) -> Self {
        let (partitions, moved_at) = (HashMap::new(), HashMap::new());
        OffsetTracker { consumer, topic, partitions, health, moved_at, stall }
    }

    /// Lag per partition from fresh high watermarks (a blocking call, off the event loop).
    fn refresh_lag(&mut self, ctx: &mut Context<Self>) {
        let partitions: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .map(|(p, s)| (*p, s.committed.or(committable(&[s.postgres, s.lake])).unwrap_or(0)))
            .collect();
        let (consumer, topic) = (self.consumer.clone(), self.topic.clone());
        let lookup = tokio::task::spawn_blocking(move || {
            partitions
                .into_iter()
                .filter_map(|(p, done)| {
                    consumer.high_watermark(&topic, p).ok().map(|high| (p, (high - done).max(0)))
                })
                .collect::<Vec<_>>()
        });
        ctx.spawn(async move { lookup.await.unwrap_or_default() }.into_actor(self).map(
            |lags, act, _| {
                let m = metrics();
                for (p, lag) in &lags {
                    m.consumer_lag.with_label_values(&[&p.to_string()]).set(*lag);
                }
                act.health
                    .lag
                    .store(lags.iter().map(|(_, l)| l).sum(), std::sync::atomic::Ordering::Relaxed);
                let stalled = lags
                    .iter()
                    .filter(|(p, lag)| {
                        let since = act.moved_at.get(p).map_or(Duration::ZERO, |t| t.elapsed());
                        partition_stalled(*lag, since, act.stall)
                    })
                    .count();
                act.health
                    .stalled_partitions
                    .store(stalled as i64, std::sync::atomic::Ordering::Relaxed);
            },
        ));
    }

    /// The partitions whose committable offset moved, with that offset.
    fn due(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|(p, s)| {
                committable(&[s.postgres, s.lake])
                    .filter(|c| Some(*c) > s.committed)
                    .map(|c| (*p, c))
            })
            .collect()
    }

    fn commit(&mut self, mode: CommitMode) -> Result<(), OffsetsError> {
        let due = self.due();
        if due.is_empty() {
            return Ok(());
        }
        match self.consumer.commit_offsets(&self.topic, &due, mode) {
            Ok(()) => {
                for (partition, offset) in due {
                    if let Some(s) = self.partitions.get_mut(&partition) {
                        s.committed = Some(offset);
                    }
                    metrics()
                        .committed_offset
                        .with_label_values(&[&partition.to_string()])
                        .set(offset);
                }
                Ok(())
            }
            // Not fatal: the sinks hold the truth; the next commit carries the same offsets.
            Err(e) => Err(OffsetsError::Commit(e)),
        }
    }
}

impl Actor for OffsetTracker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_millis(200), |act, _| {
            if let Err(e) = act.commit(CommitMode::Async) {
                log::debug!("Offset commit deferred: {e}");
            }
        });
        ctx.run_interval(Duration::from_secs(1), |act, ctx| act.refresh_lag(ctx));
    }
}

impl Handler<Assigned> for OffsetTracker {
    type Result = ();
    fn handle(&mut self, msg: Assigned, _: &mut Context<Self>) {
        let entry = self.partitions.entry(msg.partition).or_default();
        entry.postgres = entry.postgres.max(msg.postgres);
        entry.lake = entry.lake.max(msg.lake);
        self.moved_at.insert(msg.partition, Instant::now());
    }
}

impl Handler<Revoked> for OffsetTracker {
    type Result = ();
    fn handle(&mut self, msg: Revoked, _: &mut Context<Self>) {
        for partition in msg.0 {
            self.partitions.remove(&partition);
            self.moved_at.remove(&partition);
            let _ = metrics().consumer_lag.remove_label_values(&[&partition.to_string()]);
        }
    }
}

impl Handler<SinkProgressed> for OffsetTracker {
    type Result = ();
    fn handle(&mut self, msg: SinkProgressed, _: &mut Context<Self>) {
        let entry = self.partitions.entry(msg.partition).or_default();
        let before = committable(&[entry.postgres, entry.lake]);
        let slot = match msg.sink {
            SinkId::Postgres => &mut entry.postgres,
            SinkId::Lake => &mut entry.lake,
        };
        *slot = (*slot).max(Some(msg.next_offset));
        if committable(&[entry.postgres, entry.lake]) > before {
            self.moved_at.insert(msg.partition, Instant::now());
        }
    }
}

impl Handler<CommitNow> for OffsetTracker {
    type Result = Result<(), OffsetsError>;
    fn handle(&mut self, _: CommitNow, _: &mut Context<Self>) -> Self::Result {
        self.commit(CommitMode::Sync)
    }
}

impl Handler<Committed> for OffsetTracker {
    type Result = MessageResult<Committed>;
    fn handle(&mut self, _: Committed, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.partitions.iter().filter_map(|(p, s)| s.committed.map(|c| (*p, c))).collect(),
        )
    }
}
