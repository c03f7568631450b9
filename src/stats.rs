//! Counters for the periodic summary line (and, later, metrics). Updated per batch.

use std::sync::atomic::{AtomicU64, Ordering};

/// Pipeline counters since start.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records read from Kafka and handed to the pipeline.
    pub consumed: AtomicU64,
    /// Accepted events.
    pub accepted: AtomicU64,
    /// Duplicates dropped.
    pub duplicates: AtomicU64,
    /// Conflicts set aside.
    pub conflicts: AtomicU64,
    /// Dead letters.
    pub dead: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Stats::consumed`].
    pub consumed: u64,
    /// See [`Stats::accepted`].
    pub accepted: u64,
    /// See [`Stats::duplicates`].
    pub duplicates: u64,
    /// See [`Stats::conflicts`].
    pub conflicts: u64,
    /// See [`Stats::dead`].
    pub dead: u64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads all counters.
    pub fn snapshot(&self) -> Snapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            consumed: get(&self.consumed),
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            conflicts: get(&self.conflicts),
            dead: get(&self.dead),
        }
    }
}
