//! `eventline dlq replay` (issue 17): dead letters are re-driven after a contract fix.
//! A record first dead-lettered for an event type without a contract is, once the
//! contract exists, checked (`--dry-run` sends nothing), sent back to its source
//! partition with a header naming its origin, and stored once; a second replay changes
//! nothing, and a letter that still fails is listed with its reason and not sent.

mod helpers;

use helpers::*;
use std::path::Path;
use std::time::Duration;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn lead_created(event_id: &str) -> String {
    serde_json::json!({
        "event_id": event_id,
        "event_type": "lead_created",
        "schema_version": 1,
        "timestamp": "2026-11-23T10:00:00Z",
        "source": "crm",
        "payload": {"lead_id": "lead-1", "email": "ada@example.com"},
    })
    .to_string()
}

const LEAD_CONTRACT: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["lead_id", "email"],
  "properties": {"lead_id": {"type": "string"}, "email": {"type": "string"}}
}"#;

#[test]
fn dead_letters_are_redriven_once_after_a_contract_fix() {
    let mut env = TestEnv::new(1);
    let contracts = env.dir().join("contracts");
    copy_dir(&repo().join("contracts"), &contracts);
    let contracts_var = ("EVENTLINE__PIPELINE__CONTRACTS_DIR", contracts.to_str().unwrap());
    let lead = uuid::Uuid::new_v4().to_string();
    let mut records = valid_records(20);
    records.push((Some(0), "lead-1".into(), Some(lead_created(&lead).into_bytes())));
    records.push((Some(0), "junk".into(), Some(b"{not json".to_vec())));
    env.produce(&records);

    // 1. No contract for lead_created yet: dead-lettered.
    let p = env.start_processor(&[contracts_var]);
    env.wait_drained(1, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(env.count("SELECT count(*) AS n FROM dead_letters"), 2);
    assert_eq!(
        env.count(&format!("SELECT count(*) AS n FROM events WHERE event_id = '{lead}'")),
        0
    );

    // 2. The contract is fixed.
    std::fs::create_dir_all(contracts.join("lead_created")).unwrap();
    std::fs::write(contracts.join("lead_created/v1.schema.json"), LEAD_CONTRACT).unwrap();
    let end_before = env.high_watermarks(1);

    // 3. A dry run lists what would now pass and sends nothing.
    let (code, out, err) = env.eventline_with(&["dlq", "replay", "--dry-run"], &[contracts_var]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("unknown_event_type  lead_created  passes now: would be sent"), "{out}");
    assert!(out.contains("not_json  -  still fails: not_json"), "{out}");
    assert!(
        out.contains("2 dead letters selected: 1 pass the current contracts, 1 still fail"),
        "{out}"
    );
    assert_eq!(env.high_watermarks(1), end_before, "a dry run sends nothing");

    // 4. The replay, selected by class, sends it back once, with its origin in a header.
    let (code, out, err) = env.eventline_with(
        &["dlq", "replay", "--class", "unknown_event_type,not_json", "--json"],
        &[contracts_var],
    );
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON object");
    assert_eq!(report["sent"], 1, "{report}");
    assert_eq!(report["still_failing"], 1, "{report}");
    assert_eq!(env.high_watermarks(1)[0], end_before[0] + 1);
    let topic = env.topic.clone();
    let redriven = env.read_topic(&topic, records.len() + 1);
    assert_eq!(redriven.last().unwrap().2.as_deref(), Some(lead_created(&lead).as_bytes()));

    // 5. The processor stores it once; its headers say where it came from.
    let p = env.start_processor(&[contracts_var]);
    env.wait_drained(1, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(
        env.count(&format!("SELECT count(*) AS n FROM events WHERE event_id = '{lead}'")),
        1
    );
    let origin = format!("{topic}/0@20");
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM events WHERE event_id = '{lead}' \
             AND headers @> '[{{\"key\": \"eventline.redriven_from\", \"value\": \"{origin}\"}}]'"
        )),
        1
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM dlq_redrives WHERE topic = '{topic}' AND \"offset\" = 20 \
             AND sent_offset = 22"
        )),
        1,
        "the re-drive is recorded with where it went"
    );

    // 6. A second replay changes nothing.
    let (code, out, err) = env.eventline_with(&["dlq", "replay"], &[contracts_var]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("already re-driven at"), "{out}");
    assert!(out.contains("1 already re-driven; 0 sent back"), "{out}");
    assert_eq!(env.high_watermarks(1)[0], end_before[0] + 1);
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 21);

    // 7. A class that does not exist is named.
    let (code, _, err) =
        env.eventline_with(&["dlq", "replay", "--class", "typo"], &[contracts_var]);
    assert_eq!(code, 1);
    assert!(err.contains("--class: 'typo' is not an error class"), "{err}");
    println!("dlq replay: 1 of 2 dead letters re-driven after the fix and stored once; a second replay sent nothing");
}
