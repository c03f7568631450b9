//! Handing revoked partitions over: who hears about assignments, and the wait for the
//! flows, both sinks and the commit before the partitions are let go.

use crate::offsets::tracker::{Assigned, CommitNow, Revoked};
use crate::sinks::supervisor::Drain;
use crate::source::consumer::SourceConsumer;
use actix::prelude::*;
use rdkafka::consumer::Consumer;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Who hears about partitions assigned and revoked (the offset tracker), and who must
/// make their data durable before revoked partitions are released (the sinks).
#[derive(Clone)]
pub struct AssignmentListener {
    /// Told each assigned partition with its sinks' progress.
    pub assigned: Recipient<Assigned>,
    /// Told the partitions taken away.
    pub revoked: Recipient<Revoked>,
    /// Both sink supervisors: resolve once everything they hold is durable.
    pub drains: Vec<Recipient<Drain>>,
    /// Commits what both sinks stored, synchronously.
    pub commit: Recipient<CommitNow>,
}

/// How long a revoke may wait for the sinks and the commit before the partitions are
/// released anyway (the next owner then redoes from the sinks' progress what was not
/// durable; fencing keeps late writes out).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Releases revoked partitions: waits for their flows to hand over what they hold, for
/// both sinks to make it durable and for the commit, then tells the tracker and
/// unassigns, so the next owner starts where this process stopped instead of redoing
/// buffered work. Bounded by [`RELEASE_TIMEOUT`].
pub(super) async fn release(
    partitions: Vec<i32>,
    flows: Vec<JoinHandle<()>>,
    to: AssignmentListener,
    consumer: Arc<SourceConsumer>,
) {
    let durable = async {
        for flow in flows {
            let _ = flow.await;
        }
        futures::future::join_all(to.drains.iter().map(|d| d.send(Drain))).await;
        to.commit.send(CommitNow).await
    };
    match tokio::time::timeout(RELEASE_TIMEOUT, durable).await {
        Ok(Ok(Ok(()))) => log::info!("Partitions {partitions:?} released: stored and committed"),
        Ok(Ok(Err(e))) => log::warn!("Partitions {partitions:?} released; commit failed: {e}"),
        Ok(Err(e)) => log::warn!("Partitions {partitions:?} released; tracker gone: {e}"),
        Err(_) => log::warn!(
            "Partitions {partitions:?} released after {RELEASE_TIMEOUT:?} with data not yet durable"
        ),
    }
    to.revoked.do_send(Revoked(partitions));
    if let Err(e) = consumer.unassign() {
        log::error!("Unassignment failed: {e}");
    }
}
