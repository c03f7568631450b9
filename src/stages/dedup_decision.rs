//! The replay-stable de-duplication decision (DESIGN.md section 3), as a pure function.
//!
//! `processed_events` remembers where each `event_id` was first seen. Given that record,
//! a record at coordinates (t, p, o) is accepted when it *is* that first sighting (so a
//! replay of the same record stays accepted and a sink that must redo work can), a
//! duplicate when it is another copy with the same content, and a conflict otherwise.
//! A first sighting a sink refused for good stays refused on replay.

use crate::record::Coords;

/// Where and with which content an `event_id` was first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstSeen {
    /// Coordinates of the first sighting.
    pub coords: Coords,
    /// Content hash of the first sighting.
    pub payload_hash: String,
    /// Why a sink refused the first sighting for good, if it did.
    pub sink_rejected: Option<String>,
}

/// The outcome of one valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store it (first sighting, or a replay of the first sighting).
    Accepted,
    /// Drop it: same content seen before at other coordinates.
    Duplicate,
    /// Keep it aside: same `event_id` seen before with other content.
    Conflict,
    /// Dead-letter it again: it is the first sighting, and a sink refused it for good.
    SinkRejected,
}

/// Decides one record against the authoritative first sighting of its `event_id`.
pub fn decide(coords: &Coords, payload_hash: &str, first: &FirstSeen) -> Decision {
    if first.coords == *coords {
        match first.sink_rejected {
            Some(_) => Decision::SinkRejected,
            None => Decision::Accepted,
        }
    } else if first.payload_hash == payload_hash {
        Decision::Duplicate
    } else {
        Decision::Conflict
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Coords {
        Coords { topic: "crm".into(), partition, offset }
    }

    fn first(partition: i32, offset: i64, hash: &str) -> FirstSeen {
        FirstSeen { coords: at(partition, offset), payload_hash: hash.into(), sink_rejected: None }
    }

    #[test]
    fn the_first_sighting_is_accepted_and_stays_accepted_on_replay() {
        assert_eq!(decide(&at(0, 5), "h", &first(0, 5, "h")), Decision::Accepted);
    }

    #[test]
    fn a_first_sighting_a_sink_refused_stays_refused_on_replay() {
        let refused = FirstSeen { sink_rejected: Some("check".into()), ..first(0, 5, "h") };
        assert_eq!(decide(&at(0, 5), "h", &refused), Decision::SinkRejected);
        assert_eq!(decide(&at(0, 9), "h", &refused), Decision::Duplicate);
    }

    #[test]
    fn a_copy_elsewhere_is_a_duplicate() {
        assert_eq!(decide(&at(0, 9), "h", &first(0, 5, "h")), Decision::Duplicate);
        assert_eq!(decide(&at(2, 5), "h", &first(0, 5, "h")), Decision::Duplicate);
    }

    #[test]
    fn other_content_under_the_same_id_is_a_conflict() {
        assert_eq!(decide(&at(0, 9), "other", &first(0, 5, "h")), Decision::Conflict);
    }

    #[test]
    fn another_topic_at_the_same_partition_and_offset_is_not_the_first_sighting() {
        let elsewhere = Coords { topic: "other".into(), partition: 0, offset: 5 };
        assert_eq!(decide(&elsewhere, "h", &first(0, 5, "h")), Decision::Duplicate);
    }
}
