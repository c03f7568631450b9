//! The Kafka source actor. It owns the rdkafka consumer (`enable.auto.commit=false`),
//! groups records into per-partition batches (closed by size or linger time) and feeds
//! one flow task per partition through a bounded channel. When a partition's channel
//! is full the partition is paused (the consumer keeps polling, so the process stays in
//! its group) and resumed once there is room: memory stays bounded.
//!
//! On the first record of a newly assigned partition it reads both sinks' durable
//! progress and seeks to the lower one, so a rebalance or restart neither skips nor
//! re-stores anything (each sink skips what it already has).

use crate::flow::{run_partition_flow, Stages};
use crate::offset_tracker::{Assigned, OffsetTracker, Revoked};
use crate::progress::resume_offset;
use crate::progress_store::ProgressStore;
use crate::record::{Coords, SourceBatch, SourceRecord};
use crate::settings::{KafkaSettings, PipelineSettings};
use actix::prelude::*;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Partition assignment changes, forwarded from librdkafka's rebalance callback.
#[derive(Debug)]
pub enum RebalanceEvent {
    /// Partitions taken away.
    Revoked(Vec<i32>),
}

/// The consumer context: forwards revocations to the source loop.
pub struct SourceContext {
    rebalances: mpsc::UnboundedSender<RebalanceEvent>,
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let partitions = tpl.elements().iter().map(|e| e.partition()).collect();
            let _ = self.rebalances.send(RebalanceEvent::Revoked(partitions));
        }
    }
}

/// The consumer type of the source.
pub type SourceConsumer = StreamConsumer<SourceContext>;

/// Creates the consumer and subscribes it to the topic.
pub fn create_consumer(kafka: &KafkaSettings) -> Result<(SourceConsumer, mpsc::UnboundedReceiver<RebalanceEvent>), KafkaError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let consumer: SourceConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka.brokers)
        .set("group.id", &kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", kafka.session_timeout_ms.to_string())
        .set("enable.partition.eof", "false")
        // Bounds what librdkafka prefetches while partitions are paused.
        .set("queued.max.messages.kbytes", "16384")
        .create_with_context(SourceContext { rebalances: tx })?;
    consumer.subscribe(&[&kafka.topic])?;
    Ok((consumer, rx))
}

/// Stop fetching, hand every pending batch to the flows and wait for them to finish.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopFetching;

/// The source actor.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    topic: Arc<str>,
    rebalances: Option<mpsc::UnboundedReceiver<RebalanceEvent>>,
    stages: Stages,
    pipeline: PipelineSettings,
    progress: ProgressStore,
    tracker: Addr<OffsetTracker>,
    stop: watch::Sender<bool>,
    finished: Option<oneshot::Receiver<()>>,
}

impl KafkaSource {
    /// A source over a subscribed consumer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consumer: Arc<SourceConsumer>,
        rebalances: mpsc::UnboundedReceiver<RebalanceEvent>,
        topic: &str,
        stages: Stages,
        pipeline: PipelineSettings,
        progress: ProgressStore,
        tracker: Addr<OffsetTracker>,
    ) -> Self {
        KafkaSource {
            consumer,
            topic: Arc::from(topic),
            rebalances: Some(rebalances),
            stages,
            pipeline,
            progress,
            tracker,
            stop: watch::channel(false).0,
            finished: None,
        }
    }
}

impl Actor for KafkaSource {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        let (done, finished) = oneshot::channel();
        self.finished = Some(finished);
        let source_loop = SourceLoop {
            consumer: self.consumer.clone(),
            topic: self.topic.clone(),
            stages: self.stages.clone(),
            pipeline: self.pipeline.clone(),
            progress: self.progress.clone(),
            tracker: self.tracker.clone(),
            partitions: HashMap::new(),
            retiring: Vec::new(),
        };
        let rebalances = self.rebalances.take().expect("started once");
        let stop = self.stop.subscribe();
        actix::spawn(async move {
            source_loop.run(rebalances, stop).await;
            let _ = done.send(());
        });
    }
}

impl Handler<StopFetching> for KafkaSource {
    type Result = ResponseFuture<()>;
    fn handle(&mut self, _: StopFetching, _: &mut Context<Self>) -> Self::Result {
        let _ = self.stop.send(true);
        let finished = self.finished.take();
        Box::pin(async move {
            if let Some(finished) = finished {
                let _ = finished.await;
            }
        })
    }
}

struct PartitionState {
    /// Records before this offset are dropped until the seek lands on it.
    seek_to: Option<(i64, Instant)>,
    pending: Vec<SourceRecord>,
    pending_since: Option<Instant>,
    overflow: VecDeque<SourceBatch>,
    paused: bool,
    flow: mpsc::Sender<SourceBatch>,
    task: JoinHandle<()>,
}

struct SourceLoop {
    consumer: Arc<SourceConsumer>,
    topic: Arc<str>,
    stages: Stages,
    pipeline: PipelineSettings,
    progress: ProgressStore,
    tracker: Addr<OffsetTracker>,
    partitions: HashMap<i32, PartitionState>,
    retiring: Vec<JoinHandle<()>>,
}

/// Copies a borrowed Kafka message into an owned record.
fn to_record(topic: &Arc<str>, m: &BorrowedMessage<'_>) -> SourceRecord {
    let headers = m
        .headers()
        .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default();
    SourceRecord {
        coords: Coords { topic: topic.clone(), partition: m.partition(), offset: m.offset() },
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

impl SourceLoop {
    async fn run(mut self, mut rebalances: mpsc::UnboundedReceiver<RebalanceEvent>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis((self.pipeline.batch_linger_ms / 2).clamp(2, 100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(event) = rebalances.recv() => self.on_rebalance(event),
                message = self.consumer.recv() => match message {
                    Ok(m) => {
                        let record = to_record(&self.topic, &m);
                        drop(m);
                        self.on_record(record).await;
                    }
                    Err(e) => log::warn!("Kafka consumer error: {e}"),
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
        self.drain().await;
    }

    async fn on_record(&mut self, record: SourceRecord) {
        let partition = record.coords.partition;
        if !self.partitions.contains_key(&partition) {
            self.init_partition(partition, record.coords.offset).await;
        }
        let max = self.pipeline.batch_max_records;
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        if let Some((target, sought_at)) = state.seek_to {
            if record.coords.offset != target {
                if sought_at.elapsed() > Duration::from_secs(1) {
                    self.seek(partition, target);
                }
                return;
            }
            state.seek_to = None;
        }
        state.pending.push(record);
        state.pending_since.get_or_insert_with(Instant::now);
        if state.pending.len() >= max {
            self.close_batch(partition);
        }
    }

    /// First record of a newly assigned partition: resume from the sinks' progress.
    async fn init_partition(&mut self, partition: i32, first_offset: i64) {
        let (store, consumer, topic) = (self.progress.clone(), self.consumer.clone(), self.topic.clone());
        let mut attempt = 0u32;
        let (progress, low) = loop {
            let (store, consumer, name) = (store.clone(), consumer.clone(), topic.clone());
            let read = tokio::task::spawn_blocking(move || {
                let progress = store.read(partition)?;
                let (low, _) = consumer.fetch_watermarks(&name, partition, Duration::from_secs(5)).map_err(|e| e.to_string())?;
                Ok::<_, String>((progress, low))
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            match read {
                Ok(found) => break found,
                Err(e) => {
                    log::warn!("Cannot read progress of {topic}/{partition} yet (attempt {attempt}): {e}");
                    tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(5))).await;
                    attempt += 1;
                }
            }
        };
        // A sink with no progress must see the partition from its earliest record.
        let resume = resume_offset(&[progress.postgres.or(Some(low)), progress.lake.or(Some(low))]).unwrap_or(low).max(low);
        log::info!(
            "Partition {topic}/{partition} assigned: postgres at {:?}, lake at {:?}, resuming at {resume}",
            progress.postgres,
            progress.lake
        );
        self.tracker.do_send(Assigned { partition, postgres: progress.postgres, lake: progress.lake });
        let (tx, rx) = mpsc::channel(self.pipeline.partition_queue_batches);
        let task = actix::spawn(run_partition_flow(self.stages.clone(), rx));
        let seek_to = (first_offset != resume).then(|| (resume, Instant::now()));
        self.partitions.insert(partition, PartitionState { seek_to, pending: Vec::new(), pending_since: None, overflow: VecDeque::new(), paused: false, flow: tx, task });
        if seek_to.is_some() {
            self.seek(partition, resume);
        }
    }

    fn seek(&mut self, partition: i32, offset: i64) {
        if let Err(e) = self.consumer.seek(&self.topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
            log::warn!("Seek of {}/{partition} to {offset} failed, will retry: {e}", self.topic);
        }
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.seek_to = Some((offset, Instant::now()));
        }
    }

    fn on_rebalance(&mut self, event: RebalanceEvent) {
        let RebalanceEvent::Revoked(partitions) = event;
        for partition in &partitions {
            if let Some(state) = self.partitions.remove(partition) {
                // Undispatched records are dropped: the next owner re-reads them from the
                // sinks' progress. Dispatched ones finish; the sinks' fencing decides.
                log::info!("Partition {}/{partition} revoked", self.topic);
                self.retiring.push(state.task);
            }
        }
        self.tracker.do_send(Revoked(partitions));
    }

    fn on_tick(&mut self) {
        let linger = Duration::from_millis(self.pipeline.batch_linger_ms);
        let due: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.pending_since.is_some_and(|t| t.elapsed() >= linger))
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            self.close_batch(partition);
        }
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            self.offer(partition);
        }
    }

    fn close_batch(&mut self, partition: i32) {
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        if state.pending.is_empty() {
            return;
        }
        let records = std::mem::take(&mut state.pending);
        state.pending_since = None;
        state.overflow.push_back(SourceBatch { topic: self.topic.clone(), partition, records });
        self.offer(partition);
    }

    /// Moves queued batches into the flow's channel; pauses the partition while it is full.
    fn offer(&mut self, partition: i32) {
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        while let Some(batch) = state.overflow.pop_front() {
            match state.flow.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch)) | Err(mpsc::error::TrySendError::Closed(batch)) => {
                    state.overflow.push_front(batch);
                    break;
                }
            }
        }
        let full = !state.overflow.is_empty();
        if full != state.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, partition);
            let result = if full { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
            match result {
                Ok(()) => state.paused = full,
                Err(e) => log::warn!("Cannot {} {}/{partition}: {e}", if full { "pause" } else { "resume" }, self.topic),
            }
            log::debug!("Partition {}/{partition} {}", self.topic, if full { "paused" } else { "resumed" });
        }
    }

    /// Shutdown: every pending record goes to its flow, then the flows finish.
    async fn drain(mut self) {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            self.close_batch(partition);
        }
        for (_, state) in self.partitions.drain() {
            for batch in state.overflow {
                if state.flow.send(batch).await.is_err() {
                    break;
                }
            }
            drop(state.flow);
            self.retiring.push(state.task);
        }
        for task in self.retiring.drain(..) {
            let _ = task.await;
        }
    }
}
