//! Supervises one sink writer. It holds every batch the sink has not made durable yet
//! (bounded by `pipeline.sink_queue_bytes`), feeds them to the writer in groups,
//! and when a write fails or panics it drops the writer, waits with exponential
//! backoff, builds a fresh writer and re-sends everything not yet durable (the writer
//! skips what its durable progress already covers). Every start, failure, restart,
//! recovery and give-up goes to the supervision log. While it restarts, its queue
//! absorbs new batches; only when the queue is full does `Enqueue` wait, which holds
//! the flows and then the source: the other sink keeps writing until then.

use crate::failure::{Classified, FailureClass};
use crate::offsets::tracker::SinkProgressed;
use crate::ops::health::{Health, SinkStatus};
use crate::record::{DeadLetter, DecidedBatch, SharedBatch};
use crate::sinks::restart_policy::{RestartDecision, RestartPolicy};
use crate::sinks::worker::{Fencing, Flush, SinkError, SinkWorker, SinkWriter, Write, WriteReport};
use crate::stages::dead_letter::PublishDeadLetters;
use crate::telemetry::faults::Faults;
use crate::telemetry::metrics::metrics;
use crate::telemetry::supervision_log::{Entry, EntryKind, SupervisionLog};
use actix::prelude::*;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Hand a batch to the sink; resolves once it is queued (waits while the queue is full).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue(pub SharedBatch);

/// Resolves when everything queued is durable (used at shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;

/// At most this many batches in one write.
const MAX_GROUP_BATCHES: usize = 64;
/// A write stops growing past this many records.
const MAX_GROUP_RECORDS: usize = 50_000;

type WorkerReply = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Result<WriteReport, SinkError>, MailboxError>>>,
>;

struct Retained {
    batch: SharedBatch,
    sent: bool,
    bytes: usize,
}

/// The supervisor actor of one sink.
pub struct SinkSupervisor<W: SinkWriter> {
    factory: Arc<dyn Fn() -> W + Send + Sync>,
    faults: Arc<Mutex<Faults>>,
    worker: Option<Addr<SinkWorker<W>>>,
    retained: VecDeque<Retained>,
    waiting: VecDeque<(SharedBatch, oneshot::Sender<()>)>,
    drains: Vec<oneshot::Sender<()>>,
    capacity_bytes: usize,
    retained_bytes: usize,
    busy: bool,
    policy: RestartPolicy,
    down_since: Option<Instant>,
    gave_up: bool,
    log: Arc<SupervisionLog>,
    tracker: Recipient<SinkProgressed>,
    fatal: tokio::sync::mpsc::UnboundedSender<String>,
    status: Arc<SinkStatus>,
    health: Arc<Health>,
    dead_letters: Option<Recipient<PublishDeadLetters>>,
}

/// Everything a supervisor needs besides the writer factory.
pub struct SupervisorParts {
    /// Fault plan (tests and drills).
    pub faults: Arc<Mutex<Faults>>,
    /// Bytes of batches held at most (one batch is always admitted).
    pub capacity_bytes: usize,
    /// Restart policy.
    pub policy: RestartPolicy,
    /// The supervision log.
    pub log: Arc<SupervisionLog>,
    /// Where durable progress goes.
    pub tracker: Recipient<SinkProgressed>,
    /// Told when the supervisor gives up.
    pub fatal: tokio::sync::mpsc::UnboundedSender<String>,
    /// Shared status.
    pub status: Arc<SinkStatus>,
    /// Liveness inputs (durable progress is reported there).
    pub health: Arc<Health>,
    /// Where records the sink refuses for good are published (the DLQ topic).
    pub dead_letters: Option<Recipient<PublishDeadLetters>>,
}

impl<W: SinkWriter> SinkSupervisor<W> {
    /// A supervisor that builds its writers with `factory`.
    pub fn new(factory: Arc<dyn Fn() -> W + Send + Sync>, parts: SupervisorParts) -> Self {
        SinkSupervisor {
            factory,
            faults: parts.faults,
            worker: None,
            retained: VecDeque::new(),
            waiting: VecDeque::new(),
            drains: Vec::new(),
            capacity_bytes: parts.capacity_bytes,
            retained_bytes: 0,
            busy: false,
            policy: parts.policy,
            down_since: None,
            gave_up: false,
            log: parts.log,
            tracker: parts.tracker,
            fatal: parts.fatal,
            status: parts.status,
            health: parts.health,
            dead_letters: parts.dead_letters,
        }
    }

    fn actor(&self) -> &'static str {
        W::ID.actor_name()
    }

    fn start_worker(&mut self) {
        let (factory, faults) = (self.factory.clone(), self.faults.clone());
        self.worker =
            Some(SyncArbiter::start(1, move || SinkWorker::new(factory(), faults.clone())));
        self.status.up.store(true, Ordering::Relaxed);
        metrics().sink_up.with_label_values(&[W::ID.as_str()]).set(1);
    }

    /// Sends the next piece of work to the writer, if it is idle and up.
    fn drive(&mut self, ctx: &mut Context<Self>) {
        let depth = self.retained.len() + self.waiting.len();
        self.status.queued.store(depth as u64, Ordering::Relaxed);
        metrics().queue_depth.with_label_values(&[W::ID.as_str()]).set(depth as i64);
        if self.busy || self.gave_up {
            return;
        }
        let Some(worker) = self.worker.clone() else { return };
        // Every batch waiting goes in one write (up to a cap): the Postgres writer stores
        // them in one transaction, so a backlog costs one commit, not one per batch.
        let mut group: Vec<SharedBatch> = Vec::new();
        let mut records = 0;
        for r in self.retained.iter().filter(|r| !r.sent) {
            if group.len() >= MAX_GROUP_BATCHES
                || (records >= MAX_GROUP_RECORDS && !group.is_empty())
            {
                break;
            }
            records += r.batch.len();
            group.push(r.batch.clone());
        }
        let request: WorkerReply = if !group.is_empty() {
            let failures = self.policy.consecutive_failures();
            Box::pin(worker.send(Write { batches: group.clone(), failures }))
        } else if !self.retained.is_empty()
            && flush_now(
                self.retained_bytes,
                self.capacity_bytes,
                !self.waiting.is_empty() || !self.drains.is_empty(),
            )
        {
            // Nothing left to send, and the writer's buffers hold half the queue (or
            // someone waits): make them durable now.
            Box::pin(worker.send(Flush { only_if_due: false }))
        } else {
            return self.finish_drains();
        };
        self.busy = true;
        let sent = group;
        let started = Instant::now();
        ctx.spawn(request.into_actor(self).map(move |result, act, ctx| {
            act.busy = false;
            match result {
                Ok(Ok(report)) => {
                    if !sent.is_empty() {
                        let m = metrics();
                        m.write_seconds
                            .with_label_values(&[W::ID.as_str()])
                            .observe(started.elapsed().as_secs_f64());
                        for batch in &sent {
                            m.batch_size
                                .with_label_values(&[W::ID.as_str()])
                                .observe(batch.len() as f64);
                        }
                    }
                    // A flush that made nothing durable is retried by the tick, not in a
                    // loop; batches that arrived meanwhile are sent at once.
                    let moved = !sent.is_empty() || !report.progress.is_empty();
                    act.on_success(sent, report);
                    if !moved && act.retained.iter().all(|r| r.sent) {
                        return;
                    }
                }
                Ok(Err(error)) => act.on_failure(error, ctx),
                Err(mailbox) => act.on_failure(
                    SinkError::Panicked(format!("writer mailbox closed: {mailbox}")),
                    ctx,
                ),
            }
            act.drive(ctx);
        }));
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.gave_up || self.retained.is_empty() {
            return;
        }
        // Batches not sent yet (they arrived while the writer was busy, or a fenced
        // partition's came back) go now: nothing else may come along to send them.
        if !self.retained.iter().all(|r| r.sent) {
            return self.drive(ctx);
        }
        let Some(worker) = self.worker.clone() else { return };
        self.busy = true;
        // Someone waiting (a drain, a full queue) gets everything flushed, not only what
        // is due: a flush the writer had to hold back (the lake waits for Postgres to
        // store a range first) is tried again here.
        let someone_waits = !self.waiting.is_empty() || !self.drains.is_empty();
        let only_if_due = !flush_now(self.retained_bytes, self.capacity_bytes, someone_waits);
        ctx.spawn(worker.send(Flush { only_if_due }).into_actor(self).map(|result, act, ctx| {
            act.busy = false;
            match result {
                Ok(Ok(report)) => act.on_success(Vec::new(), report),
                Ok(Err(error)) => act.on_failure(error, ctx),
                Err(mailbox) => act.on_failure(
                    SinkError::Panicked(format!("writer mailbox closed: {mailbox}")),
                    ctx,
                ),
            }
            act.drive(ctx);
        }));
    }

    fn on_success(&mut self, sent: Vec<SharedBatch>, report: WriteReport) {
        for batch in sent {
            if let Some(r) = self.retained.iter_mut().find(|r| Arc::ptr_eq(&r.batch, &batch)) {
                r.sent = true;
            }
        }
        self.on_rejected(report.rejected);
        let m = metrics();
        let now_ms = crate::telemetry::now_ms();
        for (partition, next) in report.progress {
            let (durable, held): (VecDeque<Retained>, VecDeque<Retained>) =
                self.retained.drain(..).partition(|r| {
                    r.sent && r.batch.partition == partition && r.batch.next_offset <= next
                });
            self.retained = held;
            self.retained_bytes -= durable.iter().map(|r| r.bytes).sum::<usize>();
            m.queue_bytes.with_label_values(&[W::ID.as_str()]).set(self.retained_bytes as i64);
            let latency = m.end_to_end_seconds.with_label_values(&[W::ID.as_str()]);
            for r in &durable {
                for e in &r.batch.accepted {
                    if let Some(ts) = e.kafka_timestamp_ms {
                        latency.observe((now_ms - ts).max(0) as f64 / 1000.0);
                    }
                }
            }
            m.sink_progress.with_label_values(&[W::ID.as_str(), &partition.to_string()]).set(next);
            self.tracker.do_send(SinkProgressed { sink: W::ID, partition, next_offset: next });
            self.health.progressed();
        }
        // After the progress: what the other writer stored is already let go of.
        self.on_fenced(&report.fenced);
        if let Some(since) = self.down_since.take() {
            let mut entry = Entry::new(self.actor(), EntryKind::Recovered);
            entry.downtime_ms = Some(since.elapsed().as_millis() as u64);
            self.log.append(&entry);
        }
        self.policy.on_success();
        while self.has_room() {
            let Some((batch, admitted)) = self.waiting.pop_front() else { break };
            self.retain(batch);
            let _ = admitted.send(());
        }
    }

    fn on_failure(&mut self, error: SinkError, ctx: &mut Context<Self>) {
        let mut entry = Entry::new(self.actor(), EntryKind::Failure);
        entry.cause = Some(error.to_string());
        self.log.append(&entry);
        self.worker = None;
        self.status.up.store(false, Ordering::Relaxed);
        metrics().sink_up.with_label_values(&[W::ID.as_str()]).set(0);
        self.retained.iter_mut().for_each(|r| r.sent = false);
        self.down_since.get_or_insert_with(Instant::now);
        // A fatal error (a lake path that is not a writable folder) cannot pass by
        // retrying: give up at once, so the process exits and says what to fix.
        let decision = match error.class() {
            FailureClass::Fatal => RestartDecision::GiveUp,
            _ => self.policy.on_failure(Instant::now()),
        };
        match decision {
            RestartDecision::RestartAfter { backoff, attempt } => {
                ctx.run_later(backoff, move |act, ctx| {
                    let mut entry = Entry::new(act.actor(), EntryKind::Restart);
                    entry.attempt = Some(attempt);
                    entry.backoff_ms = Some(backoff.as_millis() as u64);
                    act.log.append(&entry);
                    act.status.restarts.fetch_add(1, Ordering::Relaxed);
                    metrics().sink_restarts.with_label_values(&[W::ID.as_str()]).inc();
                    act.start_worker();
                    act.drive(ctx);
                });
            }
            RestartDecision::GiveUp => {
                let mut entry = Entry::new(self.actor(), EntryKind::GiveUp);
                entry.cause = Some(error.to_string());
                self.log.append(&entry);
                self.gave_up = true;
                let why = match error.class() {
                    FailureClass::Fatal => "gave up at once on a fatal error",
                    _ => "gave up after too many restarts",
                };
                let _ = self.fatal.send(format!("{} {why}: {error}", self.actor()));
            }
        }
    }

    /// Another writer moved these partitions on: the writer dropped what it held for
    /// them, so their batches go again (it skips what the other writer stored). The
    /// writer stays up: no restart, no backoff, the other partitions untouched.
    fn on_fenced(&mut self, fenced: &[Fencing]) {
        for fencing in fenced {
            let mut entry = Entry::new(self.actor(), EntryKind::Fenced);
            entry.cause = Some(format!("partition {}: {}", fencing.partition, fencing.reason));
            self.log.append(&entry);
            metrics().sink_fenced.with_label_values(&[W::ID.as_str()]).inc();
            for r in self.retained.iter_mut().filter(|r| r.batch.partition == fencing.partition) {
                r.sent = false;
            }
        }
    }

    /// Records the sink refused for good: logged, counted, and published to the DLQ
    /// topic (their `dead_letters` rows are already stored with the rest of the batch).
    fn on_rejected(&mut self, rejected: Vec<DeadLetter>) {
        if rejected.is_empty() {
            return;
        }
        let m = metrics();
        for dead in &rejected {
            let mut entry = Entry::new(self.actor(), EntryKind::Rejected);
            let c = &dead.record.coords;
            entry.cause =
                Some(format!("{}/{}@{}: {}", c.topic, c.partition, c.offset, dead.reason));
            self.log.append(&entry);
            m.outcomes
                .with_label_values(&[
                    "dead_letter",
                    m.event_type_label(dead.event_type.as_deref().unwrap_or("")),
                    dead.class.as_str(),
                ])
                .inc();
        }
        if let Some(dlq) = &self.dead_letters {
            let mut by_partition: BTreeMap<(Arc<str>, i32), Vec<DeadLetter>> = BTreeMap::new();
            for dead in rejected {
                let c = &dead.record.coords;
                by_partition.entry((c.topic.clone(), c.partition)).or_default().push(dead);
            }
            for ((topic, partition), dead) in by_partition {
                let first = dead.iter().map(|d| d.record.coords.offset).min().unwrap_or(0);
                let batch = Arc::new(DecidedBatch {
                    topic,
                    partition,
                    first_offset: first,
                    next_offset: first,
                    dead,
                    ..DecidedBatch::default()
                });
                // Best effort, like every DLQ publish: the `dead_letters` row is the
                // exactly-once record; the publisher logs and counts what it gives up on.
                let send = dlq.send(PublishDeadLetters(batch));
                actix::spawn(async move {
                    if let Err(e) = send.await {
                        log::warn!("sink-rejected records not published to the DLQ topic: {e}");
                    }
                });
            }
        }
    }

    /// Below the byte bound, or empty (a batch larger than the bound still gets in).
    fn has_room(&self) -> bool {
        self.retained.is_empty() || self.retained_bytes < self.capacity_bytes
    }

    fn retain(&mut self, batch: SharedBatch) {
        let bytes = batch.approx_bytes();
        self.retained_bytes += bytes;
        self.retained.push_back(Retained { batch, sent: false, bytes });
        metrics().queue_bytes.with_label_values(&[W::ID.as_str()]).set(self.retained_bytes as i64);
    }

    fn finish_drains(&mut self) {
        if self.retained.is_empty() && self.waiting.is_empty() {
            self.drains.drain(..).for_each(|done| {
                let _ = done.send(());
            });
        }
    }
}

/// Whether batches a writer holds in its buffers must be made durable now: at half the
/// byte bound, not at the bound itself, so the other half keeps admitting batches while
/// the flush runs (flushing only when full paused every partition for the length of a
/// flush); and always when someone waits for room or for a drain.
pub fn flush_now(retained_bytes: usize, capacity_bytes: usize, someone_waits: bool) -> bool {
    someone_waits || retained_bytes >= capacity_bytes / 2
}

impl<W: SinkWriter> Actor for SinkSupervisor<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.log.append(&Entry::new(self.actor(), EntryKind::Start));
        self.start_worker();
        ctx.run_interval(Duration::from_millis(100), |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.log.append(&Entry::new(self.actor(), EntryKind::Stop));
    }
}

impl<W: SinkWriter> Handler<Enqueue> for SinkSupervisor<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) -> Self::Result {
        if self.has_room() && self.waiting.is_empty() {
            self.retain(msg.0);
            self.drive(ctx);
            return Box::pin(async {});
        }
        let (admitted, wait) = oneshot::channel();
        self.waiting.push_back((msg.0, admitted));
        self.drive(ctx);
        Box::pin(async move {
            let _ = wait.await;
        })
    }
}

impl<W: SinkWriter> Handler<Drain> for SinkSupervisor<W> {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let (done, wait) = oneshot::channel();
        self.drains.push(done);
        self.drive(ctx);
        self.finish_drains();
        Box::pin(async move {
            let _ = wait.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::flush_now;

    #[test]
    fn held_batches_flush_at_half_the_bound_or_when_someone_waits() {
        assert!(!flush_now(499, 1000, false));
        assert!(flush_now(500, 1000, false));
        assert!(flush_now(1, 1000, true));
    }
}
