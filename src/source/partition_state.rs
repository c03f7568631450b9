//! What the source holds for one assigned partition: the records of the batch being
//! filled, the batches waiting for room in the flow's channel, and the flow task.

use super::batching::batch_due;
use crate::record::{SourceBatch, SourceRecord};
use crate::source::flow::FlowLoad;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One assigned partition in the source.
pub(super) struct PartitionState {
    pub(super) pending: Vec<SourceRecord>,
    pub(super) pending_since: Option<Instant>,
    pub(super) overflow: VecDeque<SourceBatch>,
    /// Since when the flow's channel has been full (batches wait in `overflow`).
    pub(super) full_since: Option<Instant>,
    pub(super) paused: bool,
    /// The first offset the next batch covers: where reading started, then one past the
    /// last batch. Offsets Kafka skips (transaction markers, aborted records) between
    /// batches are covered by the next batch, or by an empty one when the partition is
    /// idle (the source loop's `cover_skipped`), so progress reaches the partition's end.
    pub(super) next_expected: Option<i64>,
    pub(super) flow: mpsc::Sender<SourceBatch>,
    pub(super) load: Arc<FlowLoad>,
    pub(super) task: JoinHandle<()>,
}

impl PartitionState {
    /// Whether the source may read more records with this partition as it is: its
    /// batches have room, or it is paused (librdkafka sends nothing more for it).
    pub(super) fn accepts_more(&self) -> bool {
        self.overflow.is_empty() || self.paused
    }

    /// Whether the batch being filled must close now.
    pub(super) fn batch_due(&self, max: usize, linger: Duration) -> bool {
        batch_due(
            self.pending.len(),
            self.pending_since.map(|t| t.elapsed()),
            max,
            linger,
            self.load.idle() && self.overflow.is_empty(),
        )
    }
}
