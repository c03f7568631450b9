//! `drill verify --against FILE`: what was sent against what the sinks hold. FILE is a
//! `produce --write-jsonl` capture, or any JSON lines file of events (`null` for a
//! tombstone, `{"tombstone": "<event_id>"}` for a deletion). Reading it is pure: every
//! line is checked with the processor's own contracts, and the events a correct
//! pipeline must hold are the first content of each valid `event_id`, unless a deletion
//! names it; later copies are duplicates or conflicts, and `is_valid: false` copies
//! invalidate, like the dedup decision.

use crate::cli::publisher::tombstone_line;
use crate::record::Coords;
use crate::stages::contract::Contracts;
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// What a file of sent records says the sinks must hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Non-empty lines.
    pub lines: u64,
    /// Tombstones that delete no event (no key, or a key that is not an event id):
    /// entity deletions when the contracts declare entities, else dead letters.
    pub tombstones: u64,
    /// Lines the contracts reject: dead letters.
    pub invalid: u64,
    /// Each valid `event_id` and the content hash of its first line.
    pub expected: BTreeMap<Uuid, String>,
    /// Later lines with the same id and content, and repeated invalidations and
    /// deletions.
    pub duplicates: u64,
    /// Later lines with the same id and other content.
    pub conflicts: u64,
    /// Ids an `is_valid: false` line invalidated.
    pub invalidated: BTreeSet<Uuid>,
    /// Ids a tombstone deleted.
    pub deleted: BTreeSet<Uuid>,
    /// Event lines of an id deleted earlier in the file: never stored again.
    pub deleted_copies: u64,
}

impl Sent {
    /// The ids the sinks must hold: sent, and not deleted.
    pub fn to_hold(&self) -> impl Iterator<Item = &Uuid> {
        self.expected.keys().filter(|id| !self.deleted.contains(id))
    }

    /// The ids the sinks must hold as invalid.
    pub fn to_hold_invalid(&self) -> BTreeSet<Uuid> {
        self.to_hold().filter(|id| self.invalidated.contains(id)).copied().collect()
    }
}

/// Reads a file's text with the processor's contracts.
pub fn read_sent(text: &str, contracts: &Contracts) -> Sent {
    let mut sent = Sent::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        sent.lines += 1;
        if let Some(key) = tombstone_line(line) {
            match key.and_then(|k| Uuid::parse_str(k.trim()).ok()) {
                Some(id) if !sent.deleted.insert(id) => sent.duplicates += 1,
                Some(_) => {}
                None => sent.tombstones += 1,
            }
            continue;
        }
        let at = Coords { topic: "file".into(), partition: 0, offset: index as i64 };
        let Ok(event) = contracts.check(Some(line.as_bytes()), at, None) else {
            sent.invalid += 1;
            continue;
        };
        if sent.deleted.contains(&event.event_id) {
            sent.deleted_copies += 1;
            continue;
        }
        let first = sent.expected.get(&event.event_id);
        if !event.is_valid {
            match first {
                _ if sent.invalidated.contains(&event.event_id) => sent.duplicates += 1,
                Some(hash) if *hash != event.payload_hash => sent.conflicts += 1,
                _ => {
                    sent.invalidated.insert(event.event_id);
                }
            }
            continue;
        }
        match first {
            None => {
                sent.expected.insert(event.event_id, event.payload_hash);
            }
            Some(first) if *first == event.payload_hash => sent.duplicates += 1,
            Some(_) => sent.conflicts += 1,
        }
    }
    sent
}

/// The ids the sinks must hold that `stored` lacks (ids a sink refused for good,
/// `refused`, are expected to be missing), in order.
pub fn missing(
    sent: &Sent,
    stored: &dyn Fn(&Uuid) -> bool,
    refused: &dyn Fn(&Uuid) -> bool,
) -> Vec<Uuid> {
    sent.to_hold().filter(|id| !stored(id) && !refused(id)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, region: &str) -> String {
        serde_json::json!({"event_id": id, "event_type": "account_created", "source": "crm",
            "timestamp": "2026-11-22T10:15:00Z",
            "payload": {"account_id": "001xx000003DGb2AAG", "industry": "Healthcare", "region": region}})
        .to_string()
    }

    #[test]
    fn the_first_content_of_each_id_is_expected_and_the_rest_classified() {
        let (a, b) =
            ("4f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d", "5f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d");
        let text = [
            event(a, "US"),
            event(b, "US"),
            event(a, "US"),
            event(b, "EMEA"),
            "{broken".into(),
            "null".into(),
            String::new(),
        ]
        .join("\n");
        let sent = read_sent(&text, &Contracts::shipped());
        assert_eq!((sent.lines, sent.tombstones, sent.invalid), (6, 1, 1));
        assert_eq!((sent.duplicates, sent.conflicts), (1, 1));
        assert_eq!(sent.expected.len(), 2);
        let a_id = Uuid::parse_str(a).unwrap();
        let only_a = |id: &Uuid| *id == a_id;
        assert_eq!(missing(&sent, &only_a, &|_| false), vec![Uuid::parse_str(b).unwrap()]);
        assert!(missing(&sent, &only_a, &|id| *id != a_id).is_empty(), "refused is not missing");
    }

    #[test]
    fn invalidations_and_deletions_change_what_the_sinks_must_hold() {
        let (a, b, c) = (
            "4f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d",
            "5f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d",
            "6f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d",
        );
        let invalid =
            |id: &str| event(id, "US").replace("\"payload\"", "\"is_valid\":false,\"payload\"");
        let tombstone = |key: &str| crate::cli::publisher::tombstone_text(key);
        let text = [
            invalid(c),
            event(a, "US"),
            event(b, "US"),
            event(c, "US"),
            invalid(a),
            invalid(a),
            tombstone(b),
            event(b, "US"),
            tombstone(b),
            tombstone("001xx000003DGb2AAG"),
            invalid(b).replace("US", "EMEA"),
        ]
        .join("\n");
        let sent = read_sent(&text, &Contracts::shipped());
        let id = |s: &str| Uuid::parse_str(s).unwrap();
        assert_eq!(sent.invalidated, [id(a), id(c)].into(), "before and after the event");
        assert_eq!(sent.deleted, [id(b)].into());
        assert_eq!(
            (sent.duplicates, sent.conflicts, sent.tombstones, sent.deleted_copies),
            (2, 0, 1, 2)
        );
        assert_eq!(sent.to_hold().copied().collect::<Vec<_>>(), vec![id(a), id(c)]);
        assert_eq!(sent.to_hold_invalid(), [id(a), id(c)].into());
        assert!(missing(&sent, &|i| *i != id(b), &|_| false).is_empty(), "b need not be stored");
    }
}
