//! Deletion by tombstone (DESIGN.md section 3): a record with a null value whose key is
//! an `event_id` deletes that event. Its Postgres row goes, the deletion is recorded, a
//! later copy (a resend, a replay, the original arriving after its tombstone) is never
//! stored again (outcome `deleted`), and the lake's retraction rows make the README's
//! query leave it out. A tombstone keyed by anything else is an entity's deletion (the
//! contracts declare entities; see tests/current_state.rs), and one with an empty key is
//! a dead letter that says why.

mod helpers;

use helpers::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn tombstones_delete_before_and_after_the_event_and_across_a_replay_from_offset_0() {
    let mut env = TestEnv::new(2);
    let records = valid_records(20);
    let id = |i: usize| event_id_of(&records[i]);
    let tombstone = |i: usize| -> TestRecord { (None, id(i), None) };
    let (after, resent, before) = (2, 7, 19);
    // Phase 1: every event but one; the tombstone of the missing one; a tombstone whose
    // key is an account id, not an event id; one with an empty key.
    let mut first: Vec<TestRecord> = records[..19].to_vec();
    first.push(tombstone(before));
    first.push((None, "001xx000003DGb2AAG".into(), None));
    first.push((None, String::new(), None));
    env.produce(&first);
    let p = env.start_processor(&[]);
    env.wait_drained(2, Duration::from_secs(60));
    // Phase 2: tombstones of two stored events, the event whose tombstone came first.
    env.produce(&[tombstone(after), tombstone(resent), records[before].clone()]);
    env.wait_drained(2, Duration::from_secs(60));
    // Phase 3: a resend of a deleted event, and its tombstone again.
    env.produce(&[records[resent].clone(), tombstone(resent)]);
    env.wait_drained(2, Duration::from_secs(60));

    let outcomes = env.outcomes();
    assert_eq!(
        (outcomes["accepted"], outcomes["deleted"], outcomes["duplicate"], outcomes["dead_letter"]),
        // Deleted: three tombstones, the original after its tombstone, the resend, the
        // account's tombstone.
        (19, 6, 1, 1),
        "{outcomes:?}"
    );
    assert_eq!(env.outcomes_total(), 27, "P1: one outcome per record");
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM entity_tombstones WHERE entity_key = '001xx000003DGb2AAG'"
        ),
        1,
        "the account id's tombstone is the account's deletion"
    );
    let reason: String =
        diesel_text(&env, "SELECT error_class || ': ' || error_message AS t FROM dead_letters");
    assert!(reason.starts_with("tombstone: tombstone key '' is not an event_id"), "{reason}");

    let expected: BTreeMap<String, bool> =
        (0..20).filter(|i| ![after, resent, before].contains(i)).map(|i| (id(i), true)).collect();
    wait_until("the lake has the retractions", Duration::from_secs(30), || {
        env.lake_events() == expected
    });
    env.assert_sinks_hold(&expected);
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM processed_events WHERE deleted_topic IS NOT NULL \
             AND deleted_at IS NOT NULL"
        ),
        3,
        "each deletion is recorded with the record that made it"
    );

    // Replayed from offset 0 with the lake rebuilt: the deleted events never come back,
    // and this time the lake files never held them.
    assert_eq!(env.stop_processor(p), 0);
    let outcomes_before = env.outcomes();
    std::fs::remove_dir_all(&env.lake).unwrap();
    env.reset_group(2, 0);
    let p = env.start_processor(&[]);
    wait_until("the lake is rebuilt", Duration::from_secs(60), || env.lake_rows() == 17);
    env.wait_drained(2, Duration::from_secs(60));
    env.assert_sinks_hold(&expected);
    assert_eq!(env.lake_counts_duckdb(), (17, 17), "no deleted event in any lake file");
    assert_eq!(env.outcomes(), outcomes_before, "the replay counts nothing twice");
    assert_eq!(env.stop_processor(p), 0);
}

fn diesel_text(env: &TestEnv, sql: &str) -> String {
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    diesel::sql_query(sql).get_result::<Text>(&mut env.pg()).map(|r| r.t).unwrap_or_default()
}

/// Keys are unique within an entity, not across them: `k_1001` is an account and an
/// order. A tombstone with the header `eventline.entity: order` removes the order's state
/// and leaves the account's; one without the header removes both; one naming an entity
/// no contract declares is a dead letter that says so.
#[test]
fn an_entity_tombstone_with_a_header_deletes_that_entity_only() {
    use helpers::hostile::{Delivery, RawRecord};
    let mut env = TestEnv::new(1);
    let event = |event_type: &str, payload: serde_json::Value| {
        let doc = serde_json::json!({
            "event_id": uuid::Uuid::new_v4().to_string(), "event_type": event_type,
            "source": "crm", "timestamp": "2026-11-22T10:15:00Z", "payload": payload,
        });
        RawRecord::new(0, b"k", Some(doc.to_string().as_bytes()))
    };
    let account = |id: &str| {
        event(
            "account_created",
            serde_json::json!({"account_id": id, "industry": "software", "region": "EMEA"}),
        )
    };
    let order = |id: &str| {
        event(
            "order_created",
            serde_json::json!({"order_id": id, "customer_id": "cus_1", "amount": 5.0, "currency": "EUR"}),
        )
    };
    let tombstone = |key: &str, entity: Option<&str>| {
        let mut r = RawRecord::new(0, key.as_bytes(), None);
        if let Some(entity) = entity {
            r.headers.push(("eventline.entity".into(), entity.as_bytes().to_vec()));
        }
        r
    };
    env.send_confluent(&[(
        Delivery::Plain,
        vec![
            account("k_1001"),
            order("k_1001"),
            account("k_2002"),
            order("k_2002"),
            tombstone("k_1001", Some("order")),
            tombstone("k_2002", None),
            tombstone("k_1001", Some("invoice")),
        ],
    )]);
    let p = env.start_processor(&[]);
    env.wait_drained(1, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0);

    let rows = |table: &str, key_column: &str, key: &str| {
        env.count(&format!("SELECT count(*) AS n FROM {table} WHERE {key_column} = '{key}'"))
    };
    assert_eq!(rows("order_states", "order_id", "k_1001"), 0, "the named entity's state goes");
    assert_eq!(rows("account_states", "account_id", "k_1001"), 1, "the other entity's stays");
    assert_eq!(rows("order_states", "order_id", "k_2002"), 0, "no header: every entity");
    assert_eq!(rows("account_states", "account_id", "k_2002"), 0, "no header: every entity");
    assert_eq!(env.count("SELECT count(*) AS n FROM entity_tombstones WHERE entity = 'order'"), 1);
    let reason = diesel_text(&env, "SELECT error_message AS t FROM dead_letters");
    assert!(reason.contains("names entity 'invoice', which no contract declares"), "{reason}");
    assert_eq!(env.outcomes().get("deleted"), Some(&2));
}
