//! P7 for text a sink cannot store: events that pass every contract but carry a NUL
//! character (U+0000) in a string, which PostgreSQL rejects, are dead-lettered alone by
//! the contract layer with a reason naming the field; everything around them is stored
//! in both sinks and no writer fails or restarts.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

/// A valid `account_created` event with a NUL character in its payload's `name`, or
/// (`in_payload` false) in its envelope's `source`.
fn with_nul(event_id: &str, account: &str, in_payload: bool) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(&account_created(event_id, account))
        .expect("the helper's event is JSON");
    match in_payload {
        true => doc["payload"]["name"] = "Acme\u{0}Corp".into(),
        false => doc["source"] = "sales\u{0}force".into(),
    }
    doc.to_string()
}

#[test]
fn nul_text_is_dead_lettered_alone_and_the_rest_is_stored_without_a_restart() {
    let mut env = TestEnv::new(3);
    let mut records = valid_records(3000);
    let ids: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    records
        .insert(700, (None, "acc_nul1".into(), Some(with_nul(&ids[0], "acc_nul1", true).into())));
    records
        .insert(2100, (None, "acc_nul2".into(), Some(with_nul(&ids[1], "acc_nul2", false).into())));
    env.produce(&records);
    let started = Instant::now();
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds the 3,000 valid events", Duration::from_secs(30), || {
        env.lake_rows() == 3000
    });
    let drained = started.elapsed();
    assert_eq!(env.stop_processor(p), 0);

    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 3000);
    assert_eq!(env.lake_counts_duckdb(), (3000, 3000));
    let outcomes = env.outcomes();
    assert_eq!(outcomes.get("accepted"), Some(&3000));
    assert_eq!(outcomes.get("dead_letter"), Some(&2), "{outcomes:?}");
    let reasons = |pointer: &str| {
        env.count(&format!(
            "SELECT count(*) AS n FROM dead_letters WHERE error_class = 'unstorable_text' \
             AND error_message LIKE '{pointer}: text contains a NUL character%'"
        ))
    };
    assert_eq!(reasons("/payload/name"), 1, "the payload field is named");
    assert_eq!(reasons("/source"), 1, "the envelope field is named");
    assert_eq!(env.supervision_failures(), Vec::<String>::new(), "no writer failed or restarted");
    eprintln!("3,002 records with 2 NUL events drained in {drained:?}");
}
