//! The source's batching and pausing rules, as pure functions.

use std::time::Duration;

/// How long a partition's flow may stay full before the partition is paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(5);

/// A batch of `pending` records (the oldest `waited` ago) closes when it is full, when
/// it has waited `linger`, or as soon as the flow has nothing else to do: batches grow
/// only while the flow is busy, so a quiet partition is not held back by the linger.
pub fn batch_due(
    pending: usize,
    waited: Option<Duration>,
    max: usize,
    linger: Duration,
    flow_idle: bool,
) -> bool {
    let Some(waited) = waited else { return false };
    pending > 0 && (pending >= max || waited >= linger || flow_idle)
}

/// Whether a partition whose flow has been full for `full_for` (`None`: it has room)
/// should be paused: once it has been full for [`PAUSE_AFTER`], and, once paused, until
/// it has room again. Shorter stalls only stop the reading (see the module doc).
pub fn keep_paused(full_for: Option<Duration>, paused: bool) -> bool {
    full_for.is_some_and(|full_for| paused || full_for >= PAUSE_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn an_idle_flow_takes_a_batch_at_once_a_busy_one_after_the_linger_or_when_full() {
        assert!(batch_due(1, Some(MS(0)), 5000, MS(20), true), "idle flow: no waiting");
        assert!(!batch_due(1, Some(MS(5)), 5000, MS(20), false), "busy flow: the batch grows");
        assert!(batch_due(1, Some(MS(20)), 5000, MS(20), false), "busy flow: linger reached");
        assert!(batch_due(5000, Some(MS(0)), 5000, MS(20), false), "full");
        assert!(!batch_due(0, None, 5000, MS(20), true), "nothing pending");
    }

    #[test]
    fn a_partition_is_paused_only_after_a_long_stall_and_resumed_when_it_has_room() {
        assert!(!keep_paused(None, false), "room: read on");
        assert!(!keep_paused(Some(MS(300)), false), "short stall: reading stops, no pause");
        assert!(keep_paused(Some(PAUSE_AFTER), false), "long stall: pause");
        assert!(keep_paused(Some(MS(1)), true), "paused and still full: stay paused");
        assert!(!keep_paused(None, true), "room again: resume");
    }
}
