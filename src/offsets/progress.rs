//! Offset arithmetic for sink progress (DESIGN.md section 4), kept pure.
//!
//! A sink's progress on a partition is the next offset it has not stored yet, or `None`
//! when it has stored nothing. Batches cover `[first, next)`.

/// What a sink should do with a batch, given its own progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePlan {
    /// Everything in the batch is already stored: acknowledge, write nothing.
    Skip,
    /// Store the records at or above this offset.
    WriteFrom(i64),
    /// The batch starts above the progress: records in between were never seen.
    Gap {
        /// The sink's progress.
        expected: i64,
        /// The batch's first offset.
        first: i64,
    },
}

/// Plans a batch `[first, next)` against `progress`.
pub fn plan_write(progress: Option<i64>, first: i64, next: i64) -> WritePlan {
    match progress {
        None => WritePlan::WriteFrom(first),
        Some(p) if p >= next => WritePlan::Skip,
        Some(p) if p >= first => WritePlan::WriteFrom(p),
        Some(p) => WritePlan::Gap { expected: p, first },
    }
}

/// Where a sink starts writing a batch `[first, next)` of `topic/partition` given its
/// progress, or `None` when all of it is stored already. A gap (records deleted by
/// retention before this sink read them) is logged and written from the batch's start:
/// the sink cannot store what Kafka no longer has.
pub fn write_start(
    sink: &str,
    (topic, partition): (&str, i32),
    progress: Option<i64>,
    (first, next): (i64, i64),
) -> Option<i64> {
    match plan_write(progress, first, next) {
        WritePlan::Skip => None,
        WritePlan::WriteFrom(from) => Some(from),
        WritePlan::Gap { expected, first } => {
            log::error!(
                "{sink} writer: {topic}/{partition} offsets {expected}..{first} were never \
                 received (deleted by retention?)"
            );
            Some(first)
        }
    }
}

/// Where the source must resume a partition: the lowest progress of the sinks, so
/// neither misses a record. `None` when any sink has nothing yet (start from the
/// committed offset or the earliest one).
pub fn resume_offset(sinks: &[Option<i64>]) -> Option<i64> {
    sinks.iter().copied().collect::<Option<Vec<i64>>>()?.into_iter().min()
}

/// The offset that may be committed to Kafka: what every sink has stored.
pub fn committable(sinks: &[Option<i64>]) -> Option<i64> {
    resume_offset(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_sink_writes_the_whole_batch() {
        assert_eq!(plan_write(None, 10, 20), WritePlan::WriteFrom(10));
    }

    #[test]
    fn a_sink_ahead_of_the_batch_skips_it() {
        assert_eq!(plan_write(Some(20), 10, 20), WritePlan::Skip);
        assert_eq!(plan_write(Some(25), 10, 20), WritePlan::Skip);
    }

    #[test]
    fn a_sink_inside_the_batch_writes_the_rest() {
        assert_eq!(plan_write(Some(10), 10, 20), WritePlan::WriteFrom(10));
        assert_eq!(plan_write(Some(15), 10, 20), WritePlan::WriteFrom(15));
    }

    #[test]
    fn a_batch_past_the_progress_is_a_gap() {
        assert_eq!(plan_write(Some(5), 10, 20), WritePlan::Gap { expected: 5, first: 10 });
    }

    #[test]
    fn resume_at_the_slowest_sink_and_commit_only_what_all_stored() {
        assert_eq!(resume_offset(&[Some(30), Some(12)]), Some(12));
        assert_eq!(resume_offset(&[Some(30), None]), None);
        assert_eq!(committable(&[Some(7), Some(7)]), Some(7));
    }
}
