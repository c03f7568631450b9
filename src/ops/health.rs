//! Health and readiness as plain data: every actor may update these atomics, and the
//! admin server ([`super::admin`]) and the summary line read them. A leaf module: it
//! imports nothing from the rest of the crate, so nothing cycles through it.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What liveness and readiness are decided from; shared with the actors.
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the epoch of the source loop's last turn.
    pub source_heartbeat_ms: AtomicI64,
    /// Milliseconds since the epoch of the last durable progress of any sink.
    pub last_progress_ms: AtomicI64,
    /// Partitions assigned to this process.
    pub assigned: AtomicI64,
    /// Records behind the high watermarks (sum over assigned partitions).
    pub lag: AtomicI64,
    /// Assigned partitions with records waiting whose committable offset has not moved
    /// for longer than the stall timeout (a stuck flow, a stage failing over and over).
    pub stalled_partitions: AtomicI64,
    /// The consumer stayed out of its group while records waited, even after rejoining.
    pub out_of_group: AtomicBool,
}

pub use crate::telemetry::now_ms;

impl Health {
    /// Records a source heartbeat.
    pub fn beat(&self) {
        self.source_heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records durable progress.
    pub fn progressed(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Liveness as a pure decision: wedged means no heartbeat and no progress for longer
/// than `stall` while records are waiting.
pub fn is_live(now: i64, heartbeat: i64, progress: i64, lag: i64, stall: Duration) -> bool {
    let stale = |t: i64| now - t > stall.as_millis() as i64;
    !(lag > 0 && stale(heartbeat) && stale(progress))
}

/// Whether one partition is stuck: records wait and nothing became durable for longer
/// than `stall`.
pub fn partition_stalled(lag: i64, since_moved: Duration, stall: Duration) -> bool {
    lag > 0 && since_moved > stall
}

/// Readiness as a pure decision: in the group with partitions, both sinks up.
pub fn is_ready(assigned: i64, postgres_up: bool, lake_up: bool) -> bool {
    assigned > 0 && postgres_up && lake_up
}

/// Observable state of a sink, shared with the summary log and health checks.
#[derive(Debug, Default)]
pub struct SinkStatus {
    /// False while the writer is restarting or gave up.
    pub up: AtomicBool,
    /// Restarts since start.
    pub restarts: AtomicU64,
    /// Batches queued or not yet durable.
    pub queued: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_is_stalled_only_with_records_waiting_past_the_timeout() {
        let (s, stall) = (Duration::from_secs, Duration::from_secs(60));
        assert!(partition_stalled(5, s(61), stall));
        assert!(!partition_stalled(5, s(59), stall), "still within the timeout");
        assert!(!partition_stalled(0, s(600), stall), "nothing waits: idle, not stuck");
    }
}
