//! How late an event is, kept pure (DESIGN.md section 6): when its record reached Kafka
//! (the record's timestamp), or when eventline received it if Kafka gave none, minus the
//! event's own time. The Kafka timestamp comes first because it is part of the log, so a
//! replay computes the same lateness. Late events are only marked, never dropped.

use crate::record::Event;
use std::time::Duration;

/// Stamps an event's arrival: received at `received_at_ms`, and how late that is
/// against `late_after`.
pub fn stamp_arrival(mut event: Event, received_at_ms: i64, late_after: Duration) -> Event {
    event.received_at_ms = received_at_ms;
    event.lateness_ms =
        lateness_ms(event.occurred_at.timestamp_millis(), event.kafka_timestamp_ms, received_at_ms);
    event.late = is_late(event.lateness_ms, late_after);
    event
}

/// Milliseconds between the event's own time and its arrival (negative: from the future).
pub fn lateness_ms(
    occurred_at_ms: i64,
    kafka_timestamp_ms: Option<i64>,
    received_at_ms: i64,
) -> i64 {
    kafka_timestamp_ms.unwrap_or(received_at_ms) - occurred_at_ms
}

/// Later than `late_after` (the seed's 30 s by default).
pub fn is_late(lateness_ms: i64, late_after: Duration) -> bool {
    lateness_ms > late_after.as_millis() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_counts_from_the_kafka_timestamp_and_falls_back_to_the_receive_time() {
        assert_eq!(lateness_ms(1_000, Some(31_500), 99_000), 30_500);
        assert_eq!(lateness_ms(1_000, None, 3_000), 2_000);
        assert_eq!(lateness_ms(5_000, Some(4_000), 9_000), -1_000, "clock skew shows");
    }

    #[test]
    fn late_means_strictly_past_the_limit() {
        let limit = Duration::from_secs(30);
        assert!(!is_late(30_000, limit));
        assert!(is_late(30_001, limit));
        assert!(!is_late(-5_000, limit));
    }
}
