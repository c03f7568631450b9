//! How many records of each outcome one write stores, per partition: what the
//! bookkeeping statement adds to `outcome_counts`. Pure, so the rule for refused
//! records (each counts once, as a dead letter, whatever it was) is tested here.

use super::refusal::{Refusal, Slice};
use crate::record::Coords;
use std::collections::BTreeMap;

/// Records per (topic, partition, outcome).
pub(super) type OutcomeCounts<'a> = BTreeMap<(&'a str, i32, &'static str), i64>;

/// The outcomes of the offsets each slice holds. A refused record is left out of its
/// own outcome and counted as a dead letter instead.
pub(super) fn count_outcomes<'a>(slices: &[Slice<'a>], refused: &[Refusal]) -> OutcomeCounts<'a> {
    let mut counts = OutcomeCounts::new();
    for s in slices {
        let b: &'a _ = s.batch;
        let here =
            |c: &Coords| c.topic == b.topic && c.partition == b.partition && s.holds(c.offset);
        let is_refused =
            |offset: i64| refused.iter().any(|r| r.coords.offset == offset && here(&r.coords));
        let refused_here = refused.iter().filter(|r| here(&r.coords)).count() as i64;
        for (outcome, offsets) in b.outcome_offsets() {
            let mut n = offsets.iter().filter(|o| s.holds(**o) && !is_refused(**o)).count() as i64;
            if outcome == "dead_letter" {
                n += refused_here;
            }
            if n > 0 {
                *counts.entry((&*b.topic, b.partition, outcome)).or_default() += n;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::super::refusal::refusal_at;
    use super::*;
    use crate::record::{DecidedBatch, SharedBatch};
    use std::sync::Arc;

    fn at(offset: i64) -> Coords {
        Coords { topic: "t".into(), partition: 2, offset }
    }

    fn batch() -> SharedBatch {
        Arc::new(DecidedBatch {
            topic: "t".into(),
            partition: 2,
            first_offset: 0,
            next_offset: 10,
            duplicates: vec![at(1), at(4), at(8)],
            deleted_copies: vec![at(6)],
            ..DecidedBatch::default()
        })
    }

    #[test]
    fn counts_only_the_offsets_the_slice_holds() {
        let b = batch();
        let counts = count_outcomes(&[Slice { batch: &b, from: 2, to: 10 }], &[]);
        assert_eq!(counts.get(&("t", 2, "duplicate")), Some(&2));
        assert_eq!(counts.get(&("t", 2, "deleted")), Some(&1));
        assert_eq!(counts.len(), 2, "outcomes with no record are not counted: {counts:?}");
    }

    #[test]
    fn a_refused_record_counts_once_as_a_dead_letter() {
        let b = batch();
        let slice = Slice { batch: &b, from: 0, to: 10 };
        let refused = [refusal_at(&slice, 4, "refused", false)];
        let counts = count_outcomes(&[slice], &refused);
        assert_eq!(counts.get(&("t", 2, "duplicate")), Some(&2));
        assert_eq!(counts.get(&("t", 2, "dead_letter")), Some(&1));
    }

    #[test]
    fn a_refusal_outside_the_slice_or_on_another_partition_is_not_counted_here() {
        let b = batch();
        let slice = Slice { batch: &b, from: 5, to: 10 };
        let mut elsewhere = refusal_at(&slice, 8, "refused", false);
        elsewhere.coords.partition = 3;
        let counts = count_outcomes(&[slice], &[refusal_at(&slice, 1, "x", false), elsewhere]);
        assert_eq!(counts.get(&("t", 2, "duplicate")), Some(&1));
        assert_eq!(counts.get(&("t", 2, "dead_letter")), None);
    }
}
