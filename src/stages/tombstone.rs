//! What a tombstone (a record with a null value) means: the deletion of the event
//! whose `event_id` is its key. Any other key is a dead letter of class `tombstone`
//! until entity keys get a meaning of their own (the projections issue).

use crate::record::{ErrorClass, Retraction, SourceRecord};
use crate::stages::contract::Rejection;

/// The deletion a tombstone asks for, or why it cannot be one.
pub fn deletion(record: &SourceRecord, received_at_ms: i64) -> Result<Retraction, Rejection> {
    let Some(key) = record.key.as_deref() else {
        return Err(Rejection::new(
            ErrorClass::Tombstone,
            "tombstone without a key: a tombstone deletes the event whose event_id is its key",
        ));
    };
    let text = String::from_utf8_lossy(key);
    let event_id = uuid::Uuid::parse_str(text.trim()).map_err(|_| {
        let shown: String = text.chars().take(80).collect();
        Rejection::new(
            ErrorClass::Tombstone,
            format!(
                "tombstone key '{shown}' is not an event_id (a UUID): a tombstone deletes the event whose event_id is its key; other keys have no meaning yet"
            ),
        )
    })?;
    Ok(Retraction {
        event_id,
        coords: record.coords.clone(),
        kafka_timestamp_ms: record.timestamp_ms,
        received_at_ms,
        event_type: None,
        target: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Coords;

    fn tombstone(key: Option<&[u8]>) -> SourceRecord {
        SourceRecord {
            coords: Coords { topic: "t".into(), partition: 1, offset: 7 },
            key: key.map(<[u8]>::to_vec),
            value: None,
            headers: Vec::new(),
            timestamp_ms: Some(5),
        }
    }

    #[test]
    fn a_tombstone_keyed_by_an_event_id_deletes_that_event() {
        let id = uuid::Uuid::new_v4();
        let d = deletion(&tombstone(Some(id.to_string().as_bytes())), 9).unwrap();
        assert_eq!((d.event_id, d.coords.offset, d.kafka_timestamp_ms), (id, 7, Some(5)));
    }

    #[test]
    fn other_keys_and_no_key_are_dead_letters_that_say_why() {
        let r = deletion(&tombstone(Some(b"001xx000003DGb2AAG")), 0).unwrap_err();
        assert_eq!(r.class, ErrorClass::Tombstone);
        assert!(r.reason.contains("'001xx000003DGb2AAG' is not an event_id"), "{}", r.reason);
        let r = deletion(&tombstone(None), 0).unwrap_err();
        assert!(r.reason.starts_with("tombstone without a key"), "{}", r.reason);
    }
}
