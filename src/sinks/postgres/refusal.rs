//! Finding the record Postgres refused: a refused write is split by the offsets that
//! put rows in, until one record is alone; that record's rows are replaced by a dead
//! letter ([`refusal_at`]). Pure: what to split and what to store instead.

use crate::record::{Coords, DeadLetter, ErrorClass, Event, SharedBatch, SourceRecord};

/// The part `[from, to)` of a batch that one transaction stores.
#[derive(Clone, Copy)]
pub(super) struct Slice<'a> {
    pub(super) batch: &'a SharedBatch,
    pub(super) from: i64,
    pub(super) to: i64,
}

impl Slice<'_> {
    pub(super) fn holds(&self, offset: i64) -> bool {
        offset >= self.from && offset < self.to
    }
}

/// A record Postgres refused, whatever row it put there (an accepted event, a dead
/// letter, a conflict, a retraction, a tombstone): stored as a dead letter instead, so
/// that its offset still gets an outcome and the partition moves on.
pub(super) struct Refusal<'a> {
    pub(super) coords: Coords,
    /// The accepted event it was, marked refused where the dedup decision reads.
    pub(super) event: Option<&'a Event>,
    pub(super) dead: DeadLetter,
}

/// Whether an error may be a record's fault, so that the write is split at once to
/// find it. diesel does not expose Postgres's SQLSTATE beyond a few kinds, so the
/// split itself is the proof: a record is blamed only when the write fails with it
/// and passes without it. A lost connection, a serialization failure or a read-only
/// server is never a record's fault, and a split that blames no record fails as
/// transient.
pub(super) fn may_be_a_refusal(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    match e {
        Error::DatabaseError(
            Kind::ClosedConnection | Kind::SerializationFailure | Kind::ReadOnlyTransaction,
            _,
        ) => false,
        Error::DatabaseError(..) | Error::SerializationError(_) => true,
        _ => false,
    }
}

/// The offsets of a slice that put a row into Postgres, in order: the candidates a
/// refused write is split by.
pub(super) fn row_offsets(slice: &Slice) -> Vec<i64> {
    let b = slice.batch;
    let mut offsets: Vec<i64> = b
        .accepted
        .iter()
        .map(|e| e.coords.offset)
        .chain(b.dead.iter().map(|d| d.record.coords.offset))
        .chain(b.conflicts.iter().map(|c| c.event.coords.offset))
        .chain(b.invalidations.iter().chain(&b.deletions).map(|r| r.coords.offset))
        .chain(b.entity_deletions.iter().map(|d| d.coords.offset))
        .filter(|o| slice.holds(*o))
        .collect();
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// The dead letter that replaces whatever the record at `offset` stored, refused by
/// Postgres with `error`. `bare`: the first replacement was refused too, so only the
/// coordinates, the class and a reason are kept (no bytes, no headers).
pub(super) fn refusal_at<'a>(
    slice: &Slice<'a>,
    offset: i64,
    error: &str,
    bare: bool,
) -> Refusal<'a> {
    let b = slice.batch;
    let coords = Coords { topic: b.topic.clone(), partition: b.partition, offset };
    let event = b.accepted.iter().find(|e| e.coords.offset == offset);
    let conflict = b.conflicts.iter().find(|c| c.event.coords.offset == offset);
    let dead = b.dead.iter().find(|d| d.record.coords.offset == offset);
    let reason = format!("Postgres refused it: {error}");
    let stripped = |class, reason: String, event_type, schema_version| DeadLetter {
        record: SourceRecord {
            coords: coords.clone(),
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        },
        class,
        reason,
        event_type,
        schema_version,
    };
    let letter = match (event.or(conflict.map(|c| &c.event)), dead) {
        // Nothing of the record but where it was: what Postgres refused may be any of
        // its parts, even its class or its reason.
        _ if bare => stripped(
            ErrorClass::SinkRejected,
            format!("{reason} (stored without anything of the record: Postgres refused its dead letter too)"),
            None,
            None,
        ),
        (Some(e), _) => DeadLetter::sink_rejected(e, reason),
        (None, Some(d)) => stripped(
            d.class,
            format!("{} (stored without its key, value and headers, which {reason})", d.reason),
            d.event_type.clone(),
            d.schema_version,
        ),
        (None, None) => stripped(ErrorClass::SinkRejected, reason, None, None),
    };
    Refusal { coords, event, dead: letter }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DecidedBatch;
    use diesel::result::{DatabaseErrorKind as Kind, Error};
    use std::sync::Arc;

    fn db(kind: Kind) -> Error {
        Error::DatabaseError(kind, Box::new("message".to_string()))
    }

    #[test]
    fn any_database_error_but_a_lost_connection_is_split_at_once_to_find_a_record() {
        for kind in [Kind::CheckViolation, Kind::NotNullViolation, Kind::Unknown] {
            assert!(may_be_a_refusal(&db(kind)));
        }
        assert!(!may_be_a_refusal(&db(Kind::ClosedConnection)));
        assert!(!may_be_a_refusal(&db(Kind::SerializationFailure)));
        assert!(!may_be_a_refusal(&Error::BrokenTransactionManager));
    }

    fn record(offset: i64) -> SourceRecord {
        SourceRecord {
            coords: Coords { topic: "t".into(), partition: 0, offset },
            key: Some(b"k".to_vec()),
            value: Some(b"v".to_vec()),
            headers: vec![("h".into(), None)],
            timestamp_ms: None,
        }
    }

    fn dead(offset: i64) -> DeadLetter {
        DeadLetter {
            record: record(offset),
            class: ErrorClass::ContractViolation,
            reason: "bad".into(),
            event_type: Some("x".into()),
            schema_version: Some(1),
        }
    }

    #[test]
    fn only_offsets_that_put_rows_in_are_candidates_and_only_inside_the_slice() {
        let batch: SharedBatch = Arc::new(DecidedBatch {
            topic: "t".into(),
            dead: vec![dead(7), dead(3), dead(12)],
            duplicates: vec![Coords { topic: "t".into(), partition: 0, offset: 5 }],
            ..DecidedBatch::default()
        });
        let slice = Slice { batch: &batch, from: 3, to: 12 };
        assert_eq!(row_offsets(&slice), vec![3, 7], "a duplicate stores no row; 12 is outside");
    }

    #[test]
    fn a_refused_dead_letter_keeps_its_class_without_its_bytes_and_a_bare_one_keeps_nothing() {
        let batch: SharedBatch =
            Arc::new(DecidedBatch { topic: "t".into(), dead: vec![dead(4)], ..Default::default() });
        let slice = Slice { batch: &batch, from: 0, to: 10 };
        let first = refusal_at(&slice, 4, "value too long", false);
        assert_eq!(first.dead.class, ErrorClass::ContractViolation);
        assert!(first.dead.record.value.is_none() && first.dead.record.headers.is_empty());
        assert!(first.dead.reason.starts_with("bad (stored without"), "{}", first.dead.reason);
        let bare = refusal_at(&slice, 4, "still refused", true);
        assert_eq!(bare.dead.class, ErrorClass::SinkRejected);
        assert_eq!(bare.dead.event_type, None);
        assert_eq!(bare.coords.offset, 4);
        assert!(bare.event.is_none());
    }
}
