//! What Postgres has decided about each partition's records, for the lake to follow.
//!
//! Postgres is where a record can be refused for good (a constraint a database
//! administrator added, say). Such a record is dead-lettered as `sink_rejected` and must
//! stay out of the lake too, or the two sinks would hold different events. So the lake
//! publishes a range only once Postgres has stored it, leaving out the offsets Postgres
//! refused. After a restart the dedup decision remembers the refusal
//! (`processed_events.sink_rejected`), so a replayed record never reaches the lake as
//! accepted; this in-memory record only has to bridge the time between the two writes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

#[derive(Debug, Default)]
struct Partition {
    /// Postgres's durable progress: every offset below is decided.
    decided_up_to: i64,
    /// Offsets Postgres refused and the lake has not passed yet.
    refused: BTreeSet<i64>,
}

/// Shared by the Postgres writer (which records) and the lake writer (which asks).
#[derive(Debug, Default)]
pub struct PostgresVerdicts {
    partitions: Mutex<HashMap<i32, Partition>>,
}

impl PostgresVerdicts {
    /// Postgres stored `partition` up to `next` (exclusive), refusing `refused`.
    pub fn record(&self, partition: i32, next: i64, refused: impl IntoIterator<Item = i64>) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let p = partitions.entry(partition).or_default();
        p.refused.extend(refused);
        p.decided_up_to = p.decided_up_to.max(next);
    }

    /// The refused offsets in `[first, next)`, or `None` while Postgres has not
    /// decided the whole range yet.
    pub fn refused_in(&self, partition: i32, first: i64, next: i64) -> Option<BTreeSet<i64>> {
        let partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let p = partitions.get(&partition)?;
        (p.decided_up_to >= next).then(|| p.refused.range(first..next).copied().collect())
    }

    /// The lake has published `partition` up to `next`: refusals below are done with.
    pub fn passed(&self, partition: i32, next: i64) {
        let mut partitions = self.partitions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = partitions.get_mut(&partition) {
            p.refused = p.refused.split_off(&next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_decided_only_once_postgres_stored_all_of_it() {
        let v = PostgresVerdicts::default();
        assert_eq!(v.refused_in(0, 0, 10), None, "nothing stored yet");
        v.record(0, 8, []);
        assert_eq!(v.refused_in(0, 0, 10), None);
        v.record(0, 10, [9]);
        assert_eq!(v.refused_in(0, 0, 10), Some(BTreeSet::from([9])));
        assert_eq!(v.refused_in(0, 0, 9), Some(BTreeSet::new()));
        assert_eq!(v.refused_in(1, 0, 1), None, "partitions are apart");
    }

    #[test]
    fn progress_never_goes_back_and_passed_refusals_are_forgotten() {
        let v = PostgresVerdicts::default();
        v.record(0, 20, [3, 15]);
        v.record(0, 10, []);
        assert_eq!(v.refused_in(0, 0, 20), Some(BTreeSet::from([3, 15])));
        v.passed(0, 10);
        assert_eq!(v.refused_in(0, 0, 20), Some(BTreeSet::from([15])));
    }
}
