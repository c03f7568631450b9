//! The summary line's counters, read from the Prometheus counters: those are the one
//! source of outcome counts, so the log line and `/metrics` cannot disagree.

use crate::telemetry::metrics::metrics;
use prometheus::core::Collector;

/// Records consumed and outcomes since start.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Records read from Kafka and handed to the pipeline.
    pub consumed: u64,
    /// Accepted events.
    pub accepted: u64,
    /// Duplicates dropped.
    pub duplicates: u64,
    /// Conflicts set aside.
    pub conflicts: u64,
    /// Invalidations applied.
    pub invalidated: u64,
    /// Deletions, and copies of deleted events.
    pub deleted: u64,
    /// Dead letters.
    pub dead: u64,
    /// Accepted events later than `pipeline.late_after_s`.
    pub late: u64,
}

impl Snapshot {
    /// The counters now.
    pub fn now() -> Snapshot {
        let m = metrics();
        let mut snapshot = Snapshot { consumed: m.consumed.get(), ..Snapshot::default() };
        for family in m.late_events.collect() {
            for metric in family.get_metric() {
                snapshot.late += metric.get_counter().get_value() as u64;
            }
        }
        for family in m.outcomes.collect() {
            for metric in family.get_metric() {
                let outcome = metric.get_label().iter().find(|l| l.name() == "outcome");
                let n = metric.get_counter().get_value() as u64;
                snapshot.add(outcome.map(|l| l.value()).unwrap_or_default(), n);
            }
        }
        snapshot
    }

    fn add(&mut self, outcome: &str, n: u64) {
        match outcome {
            "accepted" => self.accepted += n,
            "duplicate" => self.duplicates += n,
            "conflict" => self.conflicts += n,
            "invalidated" => self.invalidated += n,
            "deleted" => self.deleted += n,
            "dead_letter" => self.dead += n,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_summed_over_event_types_and_classes() {
        let before = Snapshot::now();
        let m = metrics();
        m.consumed.inc_by(4);
        m.outcomes.with_label_values(&["accepted", "stats_test_a", ""]).inc_by(2);
        m.outcomes.with_label_values(&["accepted", "stats_test_b", ""]).inc();
        m.outcomes.with_label_values(&["dead_letter", "unknown", "stats_test"]).inc();
        let after = Snapshot::now();
        assert!(after.consumed >= before.consumed + 4);
        assert!(after.accepted >= before.accepted + 3);
        assert!(after.dead > before.dead);
    }
}
