//! Invalidation (DESIGN.md section 3): a record with an `event_id` already stored, the
//! same event otherwise and `is_valid: false`, marks the stored event invalid in
//! Postgres (when, and by which record) and in the lake (a retraction row that the
//! README's query honours). An invalidation that arrives before its event is kept and
//! applied when the event arrives. Outcome `invalidated`; P1 counts it.

mod helpers;

use helpers::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn invalidations_before_and_after_their_event_mark_it_invalid_in_both_sinks() {
    let mut env = TestEnv::new(2);
    let records = valid_records(20);
    let event = |i: usize| String::from_utf8(records[i].2.clone().unwrap()).unwrap();
    let id = |i: usize| event_id_of(&records[i]);
    let (after, before) = (3, 19);
    // Phase 1: every event but one, then the invalidation of an event already sent (same
    // partition, later offset), and the invalidation of the event not sent yet (on the
    // other partition).
    let mut first: Vec<TestRecord> =
        records[..19].iter().map(|(_, k, v)| (Some(0), k.clone(), v.clone())).collect();
    first.push((Some(0), "x".into(), Some(invalidation_of(&event(after)).into_bytes())));
    first.push((Some(1), "y".into(), Some(invalidation_of(&event(before)).into_bytes())));
    env.produce(&first);
    let p = env.start_processor(&[]);
    env.wait_drained(2, Duration::from_secs(60));
    assert_eq!(env.outcomes().get("invalidated"), Some(&2), "{:?}", env.outcomes());

    // Phase 2: the event whose invalidation came first; a repeated invalidation; and an
    // "invalidation" whose content is not the stored event's.
    let mut changed: serde_json::Value = serde_json::from_str(&invalidation_of(&event(5))).unwrap();
    changed["payload"]["industry"] = serde_json::json!("Retail");
    env.produce(&[
        (Some(0), "z".into(), Some(event(before).into_bytes())),
        (Some(1), "x".into(), Some(invalidation_of(&event(after)).into_bytes())),
        (Some(1), "w".into(), Some(changed.to_string().into_bytes())),
    ]);
    env.wait_drained(2, Duration::from_secs(60));
    let outcomes = env.outcomes();
    assert_eq!(
        (
            outcomes["accepted"],
            outcomes["invalidated"],
            outcomes["duplicate"],
            outcomes["conflict"]
        ),
        (20, 2, 1, 1),
        "{outcomes:?}"
    );
    assert_eq!(env.outcomes_total(), 24, "P1: one outcome per record");

    let expected: BTreeMap<String, bool> =
        (0..20).map(|i| (id(i), i != after && i != before)).collect();
    wait_until("the lake holds the 20 events", Duration::from_secs(30), || env.lake_rows() == 20);
    env.assert_sinks_hold(&expected);
    // Postgres says when and by which record: the invalidation of `after` was the 20th
    // record of partition 0 (offset 19), the one of `before` the first of partition 1.
    let by = |i: usize| {
        env.count(&format!(
            "SELECT (invalidated_partition * 1000 + invalidated_offset)::bigint AS n FROM events \
             WHERE event_id = '{}' AND invalidated_at IS NOT NULL AND NOT is_valid",
            id(i)
        ))
    };
    assert_eq!((by(after), by(before)), (19, 1000));
    assert_eq!(env.count("SELECT count(*) AS n FROM valid_events"), 18);

    // Replayed from offset 0 with the lake rebuilt: the same events, the same flags.
    assert_eq!(env.stop_processor(p), 0);
    let before_replay = env.snapshot();
    std::fs::remove_dir_all(&env.lake).unwrap();
    env.reset_group(2, 0);
    let p = env.start_processor(&[]);
    wait_until("the lake is rebuilt", Duration::from_secs(60), || env.lake_rows() == 20);
    env.wait_drained(2, Duration::from_secs(60));
    env.assert_sinks_hold(&expected);
    assert_eq!(env.snapshot().outcomes, before_replay.outcomes, "the replay counts nothing twice");
    assert_eq!(env.stop_processor(p), 0);
}
