//! Where newly assigned partitions start: the lower of both sinks' durable progress,
//! read on tokio's blocking pool, never on the event loop. The rebalance callback only
//! reports the assignment; the source assigns the partitions once this has decided
//! (as confluent-kafka-go does with application-handled rebalances), so a rebalance
//! during a Postgres outage waits off-thread while the rest of the process runs on.

use crate::failure::exponential_backoff;
use crate::offsets::progress::resume_offset;
use crate::sinks::progress::{ProgressStore, SinkProgress};
use rdkafka::Offset;
use std::time::Duration;

/// Where one partition starts, and the sinks' progress it was decided from (`None`:
/// unreadable, so it starts at the committed offset).
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Partition.
    pub partition: i32,
    /// Where reading starts.
    pub offset: Offset,
    /// Both sinks' progress when it was read.
    pub progress: Option<SinkProgress>,
}

/// Reads at most this many times before falling back to the committed offset.
const ATTEMPTS: u32 = 5;

/// Decides every partition's start, all partitions at once.
pub async fn position(store: ProgressStore, partitions: Vec<i32>) -> Vec<Start> {
    let reads = partitions.into_iter().map(|p| start_of(store.clone(), p));
    futures::future::join_all(reads).await
}

async fn start_of(store: ProgressStore, partition: i32) -> Start {
    for attempt in 0..ATTEMPTS {
        let reader = store.clone();
        match tokio::task::spawn_blocking(move || reader.read(partition)).await {
            Ok(Ok(progress)) => {
                return Start {
                    partition,
                    offset: start_offset(&progress),
                    progress: Some(progress),
                }
            }
            Ok(Err(e)) => log::warn!(
                "Cannot read the sinks' progress of partition {partition} (attempt {attempt}): {e}"
            ),
            Err(e) => log::warn!("Progress read of partition {partition} failed: {e}"),
        }
        let pause =
            exponential_backoff(Duration::from_millis(200), Duration::from_millis(3200), attempt);
        tokio::time::sleep(pause).await;
    }
    // The committed offset is never above what both sinks stored (only that is ever
    // committed), so starting there re-reads at most what the sinks will skip.
    Start { partition, offset: Offset::Stored, progress: None }
}

/// The lower of both sinks' progress; a sink with none must see the partition from its
/// start.
pub fn start_offset(progress: &SinkProgress) -> Offset {
    match resume_offset(&[progress.postgres, progress.lake]) {
        Some(offset) => Offset::Offset(offset),
        None => Offset::Beginning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_starts_at_the_slower_sink_or_from_the_beginning() {
        let both = SinkProgress { postgres: Some(120), lake: Some(100) };
        assert_eq!(start_offset(&both), Offset::Offset(100));
        let lake_gone = SinkProgress { postgres: Some(120), lake: None };
        assert_eq!(start_offset(&lake_gone), Offset::Beginning);
    }
}
