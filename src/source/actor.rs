//! The Kafka source actor. It owns the rdkafka consumer (`enable.auto.commit=false`),
//! groups records into per-partition batches (closed by size or linger time) and feeds
//! one flow task per partition through a bounded channel. When a partition's channel
//! is full the source stops reading the consumer until there is room: librdkafka then
//! stops fetching once its own bounded queue is full, and nothing is thrown away.
//! Only a partition full for longer than [`super::batching::PAUSE_AFTER`] (a sink
//! restarting, Postgres down) is paused, so the others are read again and the consumer
//! keeps polling (it stays in its group). Pausing is kept for long stalls because librdkafka discards a
//! paused partition's prefetched records and takes up to a second to fetch again after
//! the resume: pausing on every full channel stalled a backlog for a third of its time.
//! Memory stays bounded either way.
//!
//! The consumer and its rebalance callback are in [`super::consumer`]; the batching
//! and pausing rules in [`super::batching`]; a partition's state in
//! [`super::partition_state`]; the hand-over of revoked partitions in [`super::release`].

use super::batching::keep_paused;
use super::consumer::{RebalanceEvent, SourceConsumer};
use super::group_watch::{records_waiting, GroupWatch, Verdict, Watchdog};
use super::partition_state::PartitionState;
use super::positioning::{position, Start};
use super::release::{release, AssignmentListener};
use crate::offsets::tracker::Assigned;
use crate::ops::health::Health;
use crate::record::{Coords, SourceBatch, SourceRecord};
use crate::settings::PipelineSettings;
use crate::sinks::progress::ProgressStore;
use crate::source::flow::{run_partition_flow, FlowLoad, Stages};
use crate::telemetry::supervision_log::{Entry, EntryKind, SupervisionLog};
use actix::prelude::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::TopicPartitionList;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

/// What the guard against a consumer stuck outside its group needs.
#[derive(Clone)]
pub struct GroupGuard {
    /// Group membership as librdkafka reports it.
    pub watch: Arc<GroupWatch>,
    /// Out of the group this long while records wait: rejoin (then give up).
    pub rejoin_after: Duration,
    /// Where the rejoin and the give-up are written.
    pub log: Arc<SupervisionLog>,
    /// Told when the consumer stays out even after rejoining: the process exits.
    pub fatal: mpsc::UnboundedSender<String>,
}

/// How often idle partitions are checked for offsets Kafka skipped at their end.
const COVER_SKIPPED_EVERY: Duration = Duration::from_secs(1);

/// How often the group membership is looked at.
const GROUP_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Stop fetching, hand every pending batch to the flows and wait for them to finish.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopFetching;

/// The source actor.
pub struct KafkaSource {
    consumer: Arc<SourceConsumer>,
    progress: ProgressStore,
    topic: Arc<str>,
    rebalances: Option<mpsc::UnboundedReceiver<RebalanceEvent>>,
    stages: Stages,
    pipeline: PipelineSettings,
    assignments: AssignmentListener,
    health: Arc<Health>,
    guard: GroupGuard,
    stop: watch::Sender<bool>,
    finished: Option<oneshot::Receiver<()>>,
}

impl KafkaSource {
    /// A source over a subscribed consumer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        consumer: Arc<SourceConsumer>,
        progress: ProgressStore,
        rebalances: mpsc::UnboundedReceiver<RebalanceEvent>,
        topic: &str,
        stages: Stages,
        pipeline: PipelineSettings,
        assignments: AssignmentListener,
        health: Arc<Health>,
        guard: GroupGuard,
    ) -> Self {
        KafkaSource {
            consumer,
            progress,
            topic: Arc::from(topic),
            rebalances: Some(rebalances),
            stages,
            pipeline,
            assignments,
            health,
            guard,
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
        let (positioned, positioned_rx) = mpsc::unbounded_channel();
        let source_loop = SourceLoop {
            consumer: self.consumer.clone(),
            progress: self.progress.clone(),
            generation: 0,
            positioned,
            positioned_rx: Some(positioned_rx),
            topic: self.topic.clone(),
            stages: self.stages.clone(),
            pipeline: self.pipeline.clone(),
            assignments: self.assignments.clone(),
            health: self.health.clone(),
            partitions: HashMap::new(),
            retiring: Vec::new(),
            flow_finished: Arc::new(Notify::new()),
            watchdog: Watchdog::new(self.guard.rejoin_after),
            guard: self.guard.clone(),
            probing: false,
        };
        let rebalances = self.rebalances.take().expect("started once");
        let stop = self.stop.subscribe();
        let guard = self.guard.clone();
        actix::spawn(async move {
            let run = std::panic::AssertUnwindSafe(source_loop.run(rebalances, stop));
            if let Err(panic) = futures::FutureExt::catch_unwind(run).await {
                give_up(&guard, "kafka_source", &panic);
            }
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

struct SourceLoop {
    consumer: Arc<SourceConsumer>,
    progress: ProgressStore,
    /// Counts assignment changes; a positioning result of an older one is dropped.
    generation: u64,
    positioned: mpsc::UnboundedSender<(u64, Vec<Start>)>,
    positioned_rx: Option<mpsc::UnboundedReceiver<(u64, Vec<Start>)>>,
    topic: Arc<str>,
    stages: Stages,
    pipeline: PipelineSettings,
    assignments: AssignmentListener,
    health: Arc<Health>,
    partitions: HashMap<i32, PartitionState>,
    retiring: Vec<JoinHandle<()>>,
    flow_finished: Arc<Notify>,
    guard: GroupGuard,
    watchdog: Watchdog,
    /// A look at whether records wait is under way.
    probing: bool,
}

/// A task the pipeline depends on panicked: it cannot be restarted where it stood (its
/// records in flight are gone with it), so the give-up goes to the supervision log and
/// the process exits non-zero at once; the next start resumes from the sinks' progress.
fn give_up(guard: &GroupGuard, actor: &str, panic: &Box<dyn std::any::Any + Send>) {
    let cause = format!("{actor} panicked: {}", crate::telemetry::faults::panic_message(panic));
    log::error!("{cause}");
    let mut entry = Entry::new(actor, EntryKind::GiveUp);
    entry.cause = Some(cause.clone());
    guard.log.append(&entry);
    let _ = guard.fatal.send(cause);
}

/// Copies a borrowed Kafka message into an owned record.
fn to_record(topic: &Arc<str>, m: &BorrowedMessage<'_>) -> SourceRecord {
    let headers = super::raw_headers::read(m);
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
        // Every half linger (the settings keep it at least 1 ms), but at least every
        // 100 ms: a long linger is then met within 100 ms rather than half of it.
        let half_linger = Duration::from_millis(self.pipeline.batch_linger_ms / 2);
        let mut tick = tokio::time::interval(half_linger.min(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let flow_finished = self.flow_finished.clone();
        let mut positioned = self.positioned_rx.take().expect("run once");
        let mut group_check = tokio::time::interval(GROUP_CHECK_EVERY);
        let (probed, mut probes) = mpsc::unbounded_channel();
        let mut last_cover = Instant::now();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                Some(event) = rebalances.recv() => self.on_rebalance(event),
                Some((generation, starts)) = positioned.recv() => self.on_positioned(generation, starts),
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
                    if last_cover.elapsed() >= COVER_SKIPPED_EVERY {
                        last_cover = Instant::now();
                        self.cover_skipped();
                    }
                }
                _ = group_check.tick() => self.check_group(&probed),
                Some(waiting) = probes.recv() => self.on_probe(waiting),
            }
        }
        self.drain().await;
    }

    fn in_group(&self) -> bool {
        !self.partitions.is_empty()
            || self.guard.watch.latest().is_some_and(|state| state.is_member())
    }

    /// Out of the group: find out (off the event loop) whether records wait.
    fn check_group(&mut self, probed: &mpsc::UnboundedSender<Option<bool>>) {
        if self.in_group() {
            self.watchdog.judge(Instant::now(), true, None);
            return;
        }
        if self.probing {
            return;
        }
        self.probing = true;
        let (consumer, store, topic) =
            (self.consumer.clone(), self.progress.clone(), self.topic.clone());
        let probed = probed.clone();
        actix::spawn(async move {
            let waiting =
                tokio::task::spawn_blocking(move || records_waiting(&*consumer, &store, &topic))
                    .await
                    .unwrap_or(None);
            let _ = probed.send(waiting);
        });
    }

    fn on_probe(&mut self, records_wait: Option<bool>) {
        self.probing = false;
        let state = self.guard.watch.latest().unwrap_or_default();
        let why = format!(
            "the consumer has had no partitions and no group for {:?} while records wait \
             (librdkafka group state {:?}, join state {:?})",
            self.guard.rejoin_after, state.state, state.join_state
        );
        match self.watchdog.judge(Instant::now(), self.in_group(), records_wait) {
            Verdict::Fine => {}
            Verdict::Rejoin => {
                log::warn!("{why}: leaving the group and joining again");
                let mut entry = Entry::new("kafka_consumer", EntryKind::Restart);
                entry.cause = Some(format!("{why}: rejoining"));
                self.guard.log.append(&entry);
                self.consumer.unsubscribe();
                if let Err(e) = self.consumer.subscribe(&[&self.topic]) {
                    log::error!("Subscribing again failed: {e}");
                }
            }
            Verdict::GiveUp => {
                let cause = format!("{why}, even after rejoining");
                let mut entry = Entry::new("kafka_consumer", EntryKind::GiveUp);
                entry.cause = Some(cause.clone());
                self.guard.log.append(&entry);
                self.health.out_of_group.store(true, std::sync::atomic::Ordering::Relaxed);
                let _ = self.guard.fatal.send(format!("kafka consumer gave up: {cause}"));
            }
        }
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
        // Any positioning still under way belongs to an assignment that is now over.
        self.generation += 1;
        match event {
            RebalanceEvent::Assigned(partitions) => {
                let (generation, store) = (self.generation, self.progress.clone());
                let positioned = self.positioned.clone();
                actix::spawn(async move {
                    let starts = position(store, partitions).await;
                    let _ = positioned.send((generation, starts));
                });
            }
            RebalanceEvent::Revoked(partitions) => {
                let mut flows = Vec::new();
                for partition in &partitions {
                    if let Some(state) = self.partitions.remove(partition) {
                        // Undispatched records are dropped: the next owner re-reads them
                        // from the sinks' progress. Dispatched ones finish and are made
                        // durable and committed before the partition is released.
                        log::info!("Partition {}/{partition} revoked", self.topic);
                        flows.push(state.task);
                    }
                }
                let release =
                    release(partitions, flows, self.assignments.clone(), self.consumer.clone());
                self.retiring.push(actix::spawn(release));
                self.publish_assignment();
            }
        }
    }

    /// Assigns the partitions of the current assignment at their starts, each with a
    /// fresh flow. A result for an assignment that has since ended is dropped.
    fn on_positioned(&mut self, generation: u64, starts: Vec<Start>) {
        if generation != self.generation {
            log::debug!("Positions of an ended assignment dropped");
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for start in &starts {
            if let Err(e) = tpl.add_partition_offset(&self.topic, start.partition, start.offset) {
                log::error!("Cannot position {}/{}: {e}", self.topic, start.partition);
            }
        }
        if let Err(e) = self.consumer.assign(&tpl) {
            log::error!("Assignment failed: {e}");
            return;
        }
        for start in starts {
            let (partition, progress) = (start.partition, start.progress);
            log::info!(
                "Partition {}/{partition} assigned: sinks at {progress:?}, starting at {:?}",
                self.topic,
                start.offset
            );
            if let Some(progress) = progress {
                self.assignments.assigned.do_send(Assigned {
                    partition,
                    postgres: progress.postgres,
                    lake: progress.lake,
                });
            }
            let next_expected = match start.offset {
                rdkafka::Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            self.open_flow(partition, next_expected);
        }
        self.publish_assignment();
    }

    /// Idle partitions whose consumer position is past their last batch (the offsets
    /// in between are transaction markers or aborted records, which librdkafka skips)
    /// get an empty batch covering them: their progress and committed offset reach the
    /// end, and a later batch does not start above the sinks' progress.
    fn cover_skipped(&mut self) {
        let idle = |s: &PartitionState| {
            s.pending.is_empty()
                && s.overflow.is_empty()
                && s.load.idle()
                && s.next_expected.is_some()
        };
        if !self.partitions.values().any(idle) {
            return;
        }
        let Ok(positions) = self.consumer.position() else { return };
        for element in positions.elements_for_topic(&self.topic) {
            let partition = element.partition();
            let rdkafka::Offset::Offset(position) = element.offset() else { continue };
            let Some(state) = self.partitions.get_mut(&partition) else { continue };
            let Some(expected) = state.next_expected.filter(|e| *e < position) else { continue };
            if !idle(state) {
                continue;
            }
            log::debug!(
                "{}/{partition} offsets {expected}..{position} hold no records (transaction markers or aborted records): covered",
                self.topic
            );
            state.next_expected = Some(position);
            let batch = SourceBatch::covering(
                self.topic.clone(),
                partition,
                expected,
                Vec::new(),
                position,
            );
            state.overflow.push_back(batch);
            self.offer(partition);
        }
    }

    fn open_flow(&mut self, partition: i32, next_expected: Option<i64>) {
        let (tx, rx) = mpsc::channel(self.pipeline.partition_queue_batches);
        let load = Arc::new(FlowLoad::new(self.flow_finished.clone()));
        let flow = run_partition_flow(self.stages.clone(), rx, load.clone());
        let guard = self.guard.clone();
        let task = actix::spawn(async move {
            if let Err(panic) =
                futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(flow)).await
            {
                give_up(&guard, "partition_flow", &panic);
            }
        });
        let state = PartitionState {
            pending: Vec::new(),
            pending_since: None,
            overflow: VecDeque::new(),
            full_since: None,
            paused: false,
            next_expected,
            flow: tx,
            load,
            task,
        };
        if let Some(old) = self.partitions.insert(partition, state) {
            self.retiring.push(old.task);
        }
    }

    fn publish_assignment(&self) {
        let n = self.partitions.len() as i64;
        self.health.assigned.store(n, std::sync::atomic::Ordering::Relaxed);
        crate::telemetry::metrics::metrics().assigned_partitions.set(n);
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
        let first = records.first().map_or(0, |r| r.coords.offset);
        let start = state.next_expected.filter(|e| *e < first).unwrap_or(first);
        if start < first {
            log::debug!(
                "{}/{partition} offsets {start}..{first} hold no records (transaction markers, aborted or deleted records): covered",
                self.topic
            );
        }
        let batch = SourceBatch::covering(self.topic.clone(), partition, start, records, 0);
        state.next_expected = Some(batch.next_offset);
        state.overflow.push_back(batch);
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
