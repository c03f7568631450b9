//! What a tombstone (a record with a null value) means: the deletion of the event
//! whose `event_id` is its key; when the contracts declare entities, any other key is an
//! entity key, and the tombstone removes that entity's current state
//! ([`entity_deletion`]). Otherwise it is a dead letter of class `tombstone`.
//!
//! Which entity: the one its header `eventline.entity` names (keys are only unique
//! within an entity: `1001` may be an account and an order). Without the header, every
//! entity whose state has the key. The header is part of the record, so a replay
//! decides the same way; a name no contract declares is a dead letter.

use crate::record::{Checked, EntityDeletion, ErrorClass, Retraction, SourceRecord};
use crate::stages::contract::Rejection;

/// The header that names the entity a tombstone deletes.
pub const ENTITY_HEADER: &str = "eventline.entity";

/// What a tombstone asks for: an event's deletion, or (when the contracts declare
/// `entities` and its key is not an event id) an entity's.
pub fn meaning(
    record: &SourceRecord,
    received_at_ms: i64,
    entities: &[String],
) -> Result<Checked, Rejection> {
    if let Some(problem) = record.key.as_deref().and_then(crate::storable::key_problem) {
        return Err(Rejection::new(
            ErrorClass::Tombstone,
            format!(
                "tombstone key {problem}: a tombstone's key must be an event_id or an entity key that can be stored"
            ),
        ));
    }
    match deletion(record, received_at_ms) {
        Ok(retraction) => Ok(Checked::Delete(retraction)),
        Err(_) if !entities.is_empty() && record.key.as_deref().is_some_and(|k| !k.is_empty()) => {
            let deletion = entity_deletion(record, received_at_ms);
            match &deletion.entity {
                Some(name) if !entities.contains(name) => Err(Rejection::new(
                    ErrorClass::Tombstone,
                    format!(
                        "tombstone header {ENTITY_HEADER} names entity '{}', which no contract declares (declared: {})",
                        crate::storable::bounded(name, 100),
                        entities.join(", ")
                    ),
                )),
                _ => Ok(Checked::DeleteEntity(deletion)),
            }
        }
        Err(rejection) => Err(rejection),
    }
}

/// The entity deletion a tombstone keyed by an entity key stands for: the entity's
/// events up to the tombstone's time (its Kafka timestamp, else when it was read) stop
/// counting. The time is capped at when it was read: a producer's clock (CreateTime)
/// set in the future must not delete events that have not happened yet.
pub fn entity_deletion(record: &SourceRecord, received_at_ms: i64) -> EntityDeletion {
    let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).trim().to_string();
    let entity = record
        .headers
        .iter()
        .rev()
        .find(|(name, _)| name == ENTITY_HEADER)
        .and_then(|(_, value)| value.as_deref())
        .map(|v| String::from_utf8_lossy(v).trim().to_string());
    EntityDeletion {
        key,
        coords: record.coords.clone(),
        deleted_at_ms: record.timestamp_ms.unwrap_or(received_at_ms).min(received_at_ms),
        entity,
    }
}

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
                "tombstone key '{shown}' is not an event_id (a UUID): a tombstone deletes the event whose event_id is its key, or an entity's state when a contract declares entities (x-entity)"
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
        entity_key: None,
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
    fn with_entities_another_key_deletes_that_entity_at_the_tombstones_time() {
        let id = uuid::Uuid::new_v4();
        let event = meaning(&tombstone(Some(id.to_string().as_bytes())), 9, &entities()).unwrap();
        assert!(matches!(event, Checked::Delete(r) if r.event_id == id));
        match meaning(&tombstone(Some(b"ord_0001")), 9, &entities()).unwrap() {
            Checked::DeleteEntity(d) => {
                assert_eq!((d.key.as_str(), d.deleted_at_ms), ("ord_0001", 5))
            }
            other => panic!("{other:?}"),
        }
        assert!(meaning(&tombstone(Some(b"ord_0001")), 9, &[]).is_err());
        assert!(meaning(&tombstone(None), 9, &entities()).is_err());
    }

    fn entities() -> Vec<String> {
        vec!["account".to_string(), "order".to_string()]
    }

    #[test]
    fn a_header_scopes_an_entity_tombstone_and_an_undeclared_entity_is_refused() {
        let mut t = tombstone(Some(b"1001"));
        match meaning(&t, 9, &entities()).unwrap() {
            Checked::DeleteEntity(d) => assert_eq!(d.entity, None),
            other => panic!("{other:?}"),
        }
        t.headers.push((ENTITY_HEADER.into(), Some(b"order".to_vec())));
        match meaning(&t, 9, &entities()).unwrap() {
            Checked::DeleteEntity(d) => assert_eq!(d.entity.as_deref(), Some("order")),
            other => panic!("{other:?}"),
        }
        t.headers.push((ENTITY_HEADER.into(), Some(b"invoice".to_vec())));
        let r = meaning(&t, 9, &entities()).unwrap_err();
        assert!(r.reason.contains("names entity 'invoice'"), "{}", r.reason);
    }

    #[test]
    fn keys_no_index_can_hold_are_dead_letters_and_a_future_time_is_capped() {
        for key in [vec![b'k'; 3000], b"ord\0x".to_vec(), b"\xff\xfe".to_vec()] {
            let r = meaning(&tombstone(Some(&key)), 9, &entities()).unwrap_err();
            assert_eq!(r.class, ErrorClass::Tombstone);
            assert!(r.reason.starts_with("tombstone key "), "{}", r.reason);
        }
        let mut future = tombstone(Some(b"ord_1"));
        future.timestamp_ms = Some(i64::MAX / 2);
        assert_eq!(entity_deletion(&future, 9).deleted_at_ms, 9);
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
