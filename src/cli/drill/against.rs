//! `drill verify --against FILE`: what was sent against what the sinks hold. FILE is a
//! `produce --write-jsonl` capture, or any JSON lines file of events (`null` for a
//! tombstone). Reading it is pure: every line is checked with the processor's own
//! contracts, and the events a correct pipeline must hold are the first content of each
//! valid `event_id`; later copies are duplicates or conflicts, like the dedup decision.

use crate::record::Coords;
use crate::stages::contract::Contracts;
use std::collections::BTreeMap;
use uuid::Uuid;

/// What a file of sent records says the sinks must hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Non-empty lines.
    pub lines: u64,
    /// `null` lines.
    pub tombstones: u64,
    /// Lines the contracts reject: dead letters.
    pub invalid: u64,
    /// Each valid `event_id` and the content hash of its first line.
    pub expected: BTreeMap<Uuid, String>,
    /// Later lines with the same id and content.
    pub duplicates: u64,
    /// Later lines with the same id and other content.
    pub conflicts: u64,
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
        if line == "null" {
            sent.tombstones += 1;
            continue;
        }
        let at = Coords { topic: "file".into(), partition: 0, offset: index as i64 };
        match contracts.check(Some(line.as_bytes()), at, None) {
            Err(_) => sent.invalid += 1,
            Ok(event) => match sent.expected.get(&event.event_id) {
                None => {
                    sent.expected.insert(event.event_id, event.payload_hash);
                }
                Some(first) if *first == event.payload_hash => sent.duplicates += 1,
                Some(_) => sent.conflicts += 1,
            },
        }
    }
    sent
}

/// The expected ids that `stored` lacks (ids a sink refused for good, `refused`, are
/// expected to be missing), in order.
pub fn missing(
    sent: &Sent,
    stored: &dyn Fn(&Uuid) -> bool,
    refused: &dyn Fn(&Uuid) -> bool,
) -> Vec<Uuid> {
    sent.expected.keys().filter(|id| !stored(id) && !refused(id)).copied().collect()
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
}
