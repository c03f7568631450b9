//! The Kafka source actor. It owns the rdkafka consumer (`enable.auto.commit=false`),
//! groups records into per-partition batches (closed by size or linger time) and feeds
//! one flow task per partition through a bounded channel. When a partition's channel
//! is full the source stops reading the consumer until there is room: librdkafka then
//! stops fetching once its own bounded queue is full, and nothing is thrown away.
//! Only a partition full for longer than [`PAUSE_AFTER`] (a sink restarting, Postgres
//! down) is paused, so the others are read again and the consumer keeps polling (it
//! stays in its group). Pausing is kept for long stalls because librdkafka discards a
//! paused partition's prefetched records and takes up to a second to fetch again after
//! the resume: pausing on every full channel stalled a backlog for a third of its time.
//! Memory stays bounded either way.
//!
//! When a partition is assigned, the rebalance callback reads both sinks' durable
//! progress and starts the partition at the lower one, so a rebalance or restart
//! neither skips nor re-stores anything (each sink skips what it already has).

use crate::admin::Health;
use crate::flow::{run_partition_flow, FlowLoad, Stages};
use crate::offset_tracker::{Assigned, OffsetTracker, Revoked};
use crate::progress::resume_offset;
use crate::progress_store::{ProgressStore, SinkProgress};
use crate::record::{Coords, SourceBatch, SourceRecord};
use crate::settings::{KafkaSettings, PipelineSettings};
use actix::prelude::*;
use rdkafka::bindings::rd_kafka_resp_err_t as RDKafkaRespErr;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message as _};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

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
                    std::thread::sleep(Duration::from_millis(200 << attempt));
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
    tracker: Addr<OffsetTracker>,
    health: Arc<Health>,
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
        tracker: Addr<OffsetTracker>,
        health: Arc<Health>,
    ) -> Self {
        KafkaSource {
            consumer,
            topic: Arc::from(topic),
            rebalances: Some(rebalances),
            stages,
            pipeline,
            tracker,
            health,
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
            tracker: self.tracker.clone(),
            health: self.health.clone(),
            partitions: HashMap::new(),
            retiring: Vec::new(),
            flow_finished: Arc::new(Notify::new()),
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
    pending: Vec<SourceRecord>,
    pending_since: Option<Instant>,
    overflow: VecDeque<SourceBatch>,
    /// Since when the flow's channel has been full (batches wait in `overflow`).
    full_since: Option<Instant>,
    paused: bool,
    flow: mpsc::Sender<SourceBatch>,
    load: Arc<FlowLoad>,
    task: JoinHandle<()>,
}

/// How long a partition's flow may stay full before the partition is paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);

impl PartitionState {
    /// Whether the source may read more records with this partition as it is: its
    /// batches have room, or it is paused (librdkafka sends nothing more for it).
    fn accepts_more(&self) -> bool {
        self.overflow.is_empty() || self.paused
    }

    fn batch_due(&self, max: usize, linger: Duration) -> bool {
        batch_due(
            self.pending.len(),
            self.pending_since.map(|t| t.elapsed()),
            max,
            linger,
            self.load.idle() && self.overflow.is_empty(),
        )
    }
}

/// A batch of `pending` records (the oldest `waited` ago) closes when it is full, when
/// it has waited `linger`, or as soon as the flow has nothing else to do: batches grow
/// only while the flow is busy, so a quiet partition is not held back by the linger.
fn batch_due(
    pending: usize,
    waited: Option<Duration>,
    max: usize,
    linger: Duration,
    flow_idle: bool,
) -> bool {
    let Some(waited) = waited else { return false };
    pending > 0 && (pending >= max || waited >= linger || flow_idle)
}

/// Whether a partition whose flow has been full for `full_for` (`None`: it has room)
/// should be paused: once it has been full for [`PAUSE_AFTER`], and, once paused, until
/// it has room again. Shorter stalls only stop the reading (see the module doc).
fn keep_paused(full_for: Option<Duration>, paused: bool) -> bool {
    full_for.is_some_and(|full_for| paused || full_for >= PAUSE_AFTER)
}

struct SourceLoop {
    consumer: Arc<SourceConsumer>,
    topic: Arc<str>,
    stages: Stages,
    pipeline: PipelineSettings,
    tracker: Addr<OffsetTracker>,
    health: Arc<Health>,
    partitions: HashMap<i32, PartitionState>,
    retiring: Vec<JoinHandle<()>>,
    flow_finished: Arc<Notify>,
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
    async fn run(
        mut self,
        mut rebalances: mpsc::UnboundedReceiver<RebalanceEvent>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(
            (self.pipeline.batch_linger_ms / 2).clamp(2, 100),
        ));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let flow_finished = self.flow_finished.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(event) = rebalances.recv() => self.on_rebalance(event),
                message = self.consumer.recv(), if self.partitions.values().all(PartitionState::accepts_more) => match message {
                    Ok(m) => {
                        let record = to_record(&self.topic, &m);
                        drop(m);
                        self.on_record(record, &mut rebalances);
                    }
                    Err(e) => log::warn!("Kafka consumer error: {e}"),
                },
                _ = flow_finished.notified() => {
                    self.close_due_batches();
                    self.offer_all();
                }
                _ = tick.tick() => {
                    self.health.beat();
                    self.on_tick();
                }
            }
        }
        self.drain().await;
    }

    fn on_record(
        &mut self,
        record: SourceRecord,
        rebalances: &mut mpsc::UnboundedReceiver<RebalanceEvent>,
    ) {
        let partition = record.coords.partition;
        if !self.partitions.contains_key(&partition) {
            // The assignment event is queued behind this record: take it first.
            while let Ok(event) = rebalances.try_recv() {
                self.on_rebalance(event);
            }
        }
        let (max, linger) =
            (self.pipeline.batch_max_records, Duration::from_millis(self.pipeline.batch_linger_ms));
        let Some(state) = self.partitions.get_mut(&partition) else {
            log::warn!(
                "Record {}/{partition}@{} from an unassigned partition dropped",
                self.topic,
                record.coords.offset
            );
            return;
        };
        state.pending.push(record);
        state.pending_since.get_or_insert_with(Instant::now);
        if state.batch_due(max, linger) {
            self.close_batch(partition);
        }
    }

    fn on_rebalance(&mut self, event: RebalanceEvent) {
        // Flows of revoked partitions finish on their own; only unfinished ones are kept
        // for the shutdown to wait on, so they do not pile up over many rebalances.
        self.retiring.retain(|task| !task.is_finished());
        match event {
            RebalanceEvent::Assigned { partition, progress } => {
                if let Some(progress) = progress {
                    self.tracker.do_send(Assigned {
                        partition,
                        postgres: progress.postgres,
                        lake: progress.lake,
                    });
                }
                let (tx, rx) = mpsc::channel(self.pipeline.partition_queue_batches);
                let load = Arc::new(FlowLoad::new(self.flow_finished.clone()));
                let task = actix::spawn(run_partition_flow(self.stages.clone(), rx, load.clone()));
                let state = PartitionState {
                    pending: Vec::new(),
                    pending_since: None,
                    overflow: VecDeque::new(),
                    full_since: None,
                    paused: false,
                    flow: tx,
                    load,
                    task,
                };
                if let Some(old) = self.partitions.insert(partition, state) {
                    self.retiring.push(old.task);
                }
                self.publish_assignment();
            }
            RebalanceEvent::Revoked(partitions) => {
                for partition in &partitions {
                    if let Some(state) = self.partitions.remove(partition) {
                        // Undispatched records are dropped: the next owner re-reads them
                        // from the sinks' progress. Dispatched ones finish; the sinks'
                        // fencing decides whether they land.
                        log::info!("Partition {}/{partition} revoked", self.topic);
                        self.retiring.push(state.task);
                    }
                }
                self.tracker.do_send(Revoked(partitions));
                self.publish_assignment();
            }
        }
    }

    fn publish_assignment(&self) {
        let n = self.partitions.len() as i64;
        self.health.assigned.store(n, std::sync::atomic::Ordering::Relaxed);
        crate::metrics::metrics().assigned_partitions.set(n);
    }

    fn on_tick(&mut self) {
        self.close_due_batches();
        self.offer_all();
    }

    fn offer_all(&mut self) {
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        for partition in partitions {
            self.offer(partition);
        }
    }

    fn close_due_batches(&mut self) {
        let (max, linger) =
            (self.pipeline.batch_max_records, Duration::from_millis(self.pipeline.batch_linger_ms));
        let due: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, s)| s.batch_due(max, linger))
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            self.close_batch(partition);
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

    /// Moves queued batches into the flow's channel; pauses the partition once it has
    /// been full for [`PAUSE_AFTER`], resumes it when there is room again.
    fn offer(&mut self, partition: i32) {
        let Some(state) = self.partitions.get_mut(&partition) else { return };
        while let Some(batch) = state.overflow.pop_front() {
            // Counted before it is visible to the flow, so the flow's decrement never
            // comes first.
            state.load.started();
            match state.flow.try_send(batch) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(batch))
                | Err(mpsc::error::TrySendError::Closed(batch)) => {
                    state.load.done_without_sending();
                    state.overflow.push_front(batch);
                    break;
                }
            }
        }
        state.full_since = match state.overflow.is_empty() {
            true => None,
            false => Some(state.full_since.unwrap_or_else(Instant::now)),
        };
        let full = keep_paused(state.full_since.map(|since| since.elapsed()), state.paused);
        if full != state.paused {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, partition);
            let result = if full { self.consumer.pause(&tpl) } else { self.consumer.resume(&tpl) };
            match result {
                Ok(()) => state.paused = full,
                Err(e) => log::warn!(
                    "Cannot {} {}/{partition}: {e}",
                    if full { "pause" } else { "resume" },
                    self.topic
                ),
            }
            log::debug!(
                "Partition {}/{partition} {}",
                self.topic,
                if full { "paused" } else { "resumed" }
            );
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
                state.load.started();
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

#[cfg(test)]
mod tests {
    use super::{batch_due, keep_paused, PAUSE_AFTER};
    use std::time::Duration;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn an_idle_flow_takes_a_batch_at_once_a_busy_one_after_the_linger_or_when_full() {
        assert!(batch_due(1, Some(MS(0)), 5000, MS(20), true), "idle flow: no waiting");
        assert!(!batch_due(1, Some(MS(5)), 5000, MS(20), false), "busy flow: the batch grows");
        assert!(batch_due(1, Some(MS(20)), 5000, MS(20), false), "busy flow: linger reached");
        assert!(batch_due(5000, Some(MS(0)), 5000, MS(20), false), "full");
        assert!(!batch_due(0, None, 5000, MS(20), true), "nothing pending");
    }

    #[test]
    fn a_partition_is_paused_only_after_a_long_stall_and_resumed_when_it_has_room() {
        assert!(!keep_paused(None, false), "room: read on");
        assert!(!keep_paused(Some(MS(300)), false), "short stall: reading stops, no pause");
        assert!(keep_paused(Some(PAUSE_AFTER), false), "long stall: pause");
        assert!(keep_paused(Some(MS(1)), true), "paused and still full: stay paused");
        assert!(!keep_paused(None, true), "room again: resume");
    }
}
