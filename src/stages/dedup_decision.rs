//! The replay-stable de-duplication decision (DESIGN.md section 3), as a pure function.
//!
//! `processed_events` remembers, per `event_id`, where it was first seen, and where it
//! was first invalidated (`is_valid: false`) and first deleted (a tombstone keyed by it),
//! if it was. Given that state, a record at coordinates (t, p, o) is:
//! - for an event: accepted when it *is* the first sighting (so a replay of the same
//!   record stays accepted and a sink that must redo work can), a duplicate when it is
//!   another copy with the same content, a conflict otherwise; `deleted` whenever the
//!   event was deleted (a later copy, a replay, or the original after its tombstone);
//! - for an invalidation: `invalidated` when it is the first invalidation (or a replay
//!   of it), a duplicate when it repeats one, a conflict when its content is not the
//!   stored event's;
//! - for a tombstone: `deleted` when it is the first deletion (or a replay of it), a
//!   duplicate when it repeats one.
//!
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

/// What `processed_events` knows of one `event_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdState {
    /// Its first sighting; `None` while only an invalidation or a deletion arrived.
    pub first: Option<FirstSeen>,
    /// The record that first invalidated it.
    pub invalidated_by: Option<Coords>,
    /// The record that first deleted it.
    pub deleted_by: Option<Coords>,
}

impl IdState {
    /// The state of an id first seen at `coords` and nothing else.
    pub fn first_seen(coords: Coords, payload_hash: String) -> IdState {
        IdState {
            first: Some(FirstSeen { coords, payload_hash, sink_rejected: None }),
            ..IdState::default()
        }
    }
}

/// The outcome of one record that passed its contract.
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
    /// It invalidates the event (first invalidation, or a replay of it).
    Invalidated,
    /// The event is deleted: this record deletes it, or is a copy never stored again.
    Deleted,
}

/// Decides one event record (`is_valid` as its envelope says) against its id's state.
pub fn decide(coords: &Coords, payload_hash: &str, is_valid: bool, state: &IdState) -> Decision {
    if state.deleted_by.is_some() {
        return Decision::Deleted;
    }
    let first = state.first.as_ref();
    let other_content = first.is_some_and(|f| f.payload_hash != payload_hash);
    if !is_valid {
        return match &state.invalidated_by {
            Some(by) if by == coords => Decision::Invalidated,
            Some(_) => Decision::Duplicate,
            None if other_content => Decision::Conflict,
            // Not recorded although it matches: cannot happen (the statement that
            // records it runs first); counting it keeps every record accounted for.
            None => Decision::Invalidated,
        };
    }
    match first {
        Some(f) if f.coords == *coords => match f.sink_rejected {
            Some(_) => Decision::SinkRejected,
            None => Decision::Accepted,
        },
        Some(_) if other_content => Decision::Conflict,
        Some(_) => Decision::Duplicate,
        // Cannot happen: the id was recorded before deciding. Accepting keeps the
        // record (the sinks' primary keys still prevent a second copy).
        None => Decision::Accepted,
    }
}

/// Decides one tombstone that names this id.
pub fn decide_tombstone(coords: &Coords, state: &IdState) -> Decision {
    match &state.deleted_by {
        Some(by) if by != coords => Decision::Duplicate,
        _ => Decision::Deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(partition: i32, offset: i64) -> Coords {
        Coords { topic: "crm".into(), partition, offset }
    }

    fn first(partition: i32, offset: i64, hash: &str) -> IdState {
        IdState::first_seen(at(partition, offset), hash.into())
    }

    #[test]
    fn the_first_sighting_is_accepted_and_stays_accepted_on_replay() {
        assert_eq!(decide(&at(0, 5), "h", true, &first(0, 5, "h")), Decision::Accepted);
    }

    #[test]
    fn a_first_sighting_a_sink_refused_stays_refused_on_replay() {
        let mut refused = first(0, 5, "h");
        refused.first.as_mut().unwrap().sink_rejected = Some("check".into());
        assert_eq!(decide(&at(0, 5), "h", true, &refused), Decision::SinkRejected);
        assert_eq!(decide(&at(0, 9), "h", true, &refused), Decision::Duplicate);
    }

    #[test]
    fn a_copy_elsewhere_is_a_duplicate() {
        assert_eq!(decide(&at(0, 9), "h", true, &first(0, 5, "h")), Decision::Duplicate);
        assert_eq!(decide(&at(2, 5), "h", true, &first(0, 5, "h")), Decision::Duplicate);
    }

    #[test]
    fn other_content_under_the_same_id_is_a_conflict() {
        assert_eq!(decide(&at(0, 9), "other", true, &first(0, 5, "h")), Decision::Conflict);
    }

    #[test]
    fn another_topic_at_the_same_partition_and_offset_is_not_the_first_sighting() {
        let elsewhere = Coords { topic: "other".into(), partition: 0, offset: 5 };
        assert_eq!(decide(&elsewhere, "h", true, &first(0, 5, "h")), Decision::Duplicate);
    }

    #[test]
    fn the_first_invalidation_invalidates_before_or_after_the_event_and_on_replay() {
        let after = IdState { invalidated_by: Some(at(0, 9)), ..first(0, 5, "h") };
        assert_eq!(decide(&at(0, 9), "h", false, &after), Decision::Invalidated);
        // The event itself stays accepted: the sinks mark it invalid.
        assert_eq!(decide(&at(0, 5), "h", true, &after), Decision::Accepted);
        let before = IdState { invalidated_by: Some(at(1, 2)), ..IdState::default() };
        assert_eq!(decide(&at(1, 2), "h", false, &before), Decision::Invalidated);
    }

    #[test]
    fn a_repeated_invalidation_is_a_duplicate_and_one_with_other_content_a_conflict() {
        let state = IdState { invalidated_by: Some(at(0, 9)), ..first(0, 5, "h") };
        assert_eq!(decide(&at(0, 12), "h", false, &state), Decision::Duplicate);
        assert_eq!(decide(&at(0, 12), "other", false, &first(0, 5, "h")), Decision::Conflict);
    }

    #[test]
    fn every_copy_of_a_deleted_event_is_deleted_and_a_second_tombstone_a_duplicate() {
        let state = IdState { deleted_by: Some(at(3, 1)), ..first(0, 5, "h") };
        for (coords, valid) in [(at(0, 5), true), (at(0, 9), true), (at(0, 10), false)] {
            assert_eq!(decide(&coords, "h", valid, &state), Decision::Deleted);
        }
        assert_eq!(decide_tombstone(&at(3, 1), &state), Decision::Deleted);
        assert_eq!(decide_tombstone(&at(3, 8), &state), Decision::Duplicate);
        let before = IdState { deleted_by: Some(at(3, 1)), ..IdState::default() };
        assert_eq!(decide(&at(0, 5), "h", true, &before), Decision::Deleted);
    }
}
