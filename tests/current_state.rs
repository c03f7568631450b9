//! Current-state projections (`order_states`): each order's state is its events folded
//! in event-time order, whatever order they arrive in and however often; an invalidated
//! or deleted event leaves the state as if it had never arrived; a tombstone keyed by
//! the order id removes the order's row; kill -9 mid-stream and a replay of the whole
//! log into Postgres give the same rows as a clean run.

mod helpers;

use chrono::{DateTime, Duration as Minutes, Utc};
use helpers::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// One order event as produced.
#[derive(Clone)]
struct OrderEvent {
    order: String,
    event_type: &'static str,
    at: DateTime<Utc>,
    payload: Value,
    text: String,
}

fn order_event(
    order: &str,
    event_type: &'static str,
    at: DateTime<Utc>,
    payload: Value,
) -> OrderEvent {
    let mut payload = payload;
    payload["order_id"] = json!(order);
    let text = json!({
        "event_id": uuid::Uuid::new_v4().to_string(), "event_type": event_type, "source": "shop",
        "timestamp": at.to_rfc3339(), "payload": payload
    })
    .to_string();
    OrderEvent { order: order.to_string(), event_type, at, payload, text }
}

/// 40 orders: created, paid in 0-2 parts, shipped once or twice (the later carrier
/// wins), some cancelled.
fn orders() -> Vec<OrderEvent> {
    let t0: DateTime<Utc> = "2026-11-20T08:00:00Z".parse().unwrap();
    let mut events = Vec::new();
    for i in 0..40i64 {
        let order = format!("ord_{i:04}");
        let at = |minute: i64| t0 + Minutes::minutes(i * 10 + minute);
        let amount = (i * 7 % 500) as f64 + 0.99;
        events.push(order_event(&order, "order_created", at(0), json!({
            "customer_id": format!("cus_{:03}", i % 5), "amount": amount, "currency": "EUR", "channel": "Web"})));
        for j in 0..(i % 3) {
            events.push(order_event(
                &order,
                "order_paid",
                at(1 + j),
                json!({
                "payment_id": format!("pay_{i}_{j}"), "amount_paid": (j + 1) as f64 * 10.25,
                "currency": "EUR", "method": if j == 0 { "card" } else { "wallet" }}),
            ));
        }
        if i % 2 == 0 {
            events.push(order_event(&order, "order_shipped", at(5), json!({"carrier": "DHL"})));
        }
        if i % 4 == 0 {
            events.push(order_event(
                &order,
                "order_shipped",
                at(6),
                json!({"carrier": "UPS", "tracking_number": format!("1Z{i}")}),
            ));
        }
        if i % 5 == 0 {
            events.push(order_event(
                &order,
                "order_cancelled",
                at(7),
                json!({"reason": "customer"}),
            ));
        }
    }
    events
}

/// The state row of each order, folded here in event-time order:
/// (customer_id, amount, amount_paid, carrier, reason, event_count, last_event_type).
fn fold(events: &[&OrderEvent]) -> BTreeMap<String, String> {
    let mut by_order: BTreeMap<String, Vec<&OrderEvent>> = BTreeMap::new();
    for e in events {
        by_order.entry(e.order.clone()).or_default().push(e);
    }
    by_order
        .into_iter()
        .map(|(order, mut es)| {
            es.sort_by_key(|e| e.at);
            let latest = |field: &str| {
                es.iter()
                    .rev()
                    .find_map(|e| e.payload.get(field).and_then(Value::as_str))
                    .unwrap_or("")
                    .to_string()
            };
            let first_amount =
                es.iter().find_map(|e| e.payload.get("amount").and_then(Value::as_f64));
            let paid: Vec<f64> = es
                .iter()
                .filter_map(|e| e.payload.get("amount_paid").and_then(Value::as_f64))
                .collect();
            let money = |v: Option<f64>| v.map(|v| format!("{v:.2}")).unwrap_or_default();
            let paid = (!paid.is_empty()).then(|| paid.iter().sum::<f64>());
            let row = format!(
                "{},{},{},{},{},{},{}",
                latest("customer_id"),
                money(first_amount),
                money(paid),
                latest("carrier"),
                latest("reason"),
                es.len(),
                es.last().unwrap().event_type
            );
            (order, row)
        })
        .collect()
}

/// `order_states` as the same rows.
fn states(env: &TestEnv) -> BTreeMap<String, String> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        order_id: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        row: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT order_id, concat_ws(',', coalesce(customer_id, ''), coalesce(round(amount, 2)::text, ''), \
                coalesce(round(amount_paid, 2)::text, ''), coalesce(carrier, ''), coalesce(reason, ''), \
                event_count::text, last_event_type) AS row \
         FROM order_states",
    )
    .load(&mut env.pg())
    .expect("order_states reads");
    rows.into_iter().map(|r| (r.order_id, r.row)).collect()
}

/// Every column of `order_states`, for comparing two runs exactly.
fn dump(env: &TestEnv) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Dump {
        #[diesel(sql_type = diesel::sql_types::Text)]
        rows: String,
    }
    diesel::sql_query(
        "SELECT coalesce(string_agg((to_jsonb(s) - 'last_event_id')::text, E'\\n' ORDER BY order_id), '') AS rows FROM order_states s",
    )
    .get_result::<Dump>(&mut env.pg())
    .expect("dump")
    .rows
}

/// The records of `events`, shuffled (late and early arrivals), keyed at random (spread
/// over the partitions), with 15 resent copies.
fn shuffled(events: &[OrderEvent], seed: u64) -> Vec<TestRecord> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut records: Vec<TestRecord> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (None, format!("k{i}"), Some(e.text.clone().into_bytes())))
        .collect();
    let copies: Vec<TestRecord> = records.choose_multiple(&mut rng, 15).cloned().collect();
    records.extend(copies);
    records.shuffle(&mut rng);
    records
}

fn event_id(e: &OrderEvent) -> String {
    serde_json::from_str::<Value>(&e.text).unwrap()["event_id"].as_str().unwrap().to_string()
}

fn cli_state(env: &TestEnv, order: &str) -> (i32, Value) {
    let mut command = std::process::Command::new(binary());
    command.args(["state", "order", order, "--json"]);
    for (k, v) in env.processor_env() {
        command.env(k, v);
    }
    let out = command.output().expect("eventline state runs");
    let code = out.status.code().unwrap_or(-1);
    (code, serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
}

#[test]
fn state_is_the_event_time_fold_through_shuffles_retractions_kills_and_a_replay() {
    let events = orders();
    let records = shuffled(&events, 7);
    let all: Vec<&OrderEvent> = events.iter().collect();
    let expected = fold(&all);

    // A clean run, for the picture every other run must match.
    let mut clean = TestEnv::new(3);
    clean.produce(&records);
    let p = clean.start_processor(&[]);
    clean.wait_drained(3, Duration::from_secs(60));
    assert_eq!(clean.stop_processor(p), 0, "{}", clean.processor_log(p));
    assert_eq!(
        states(&clean),
        expected,
        "out-of-order arrivals and resends fold in event-time order"
    );
    let clean_dump = dump(&clean);

    // kill -9 three times mid-stream, in small batches.
    let mut env = TestEnv::new(3);
    env.produce(&records);
    let small = [("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "7")];
    for stored in [20, 60, 100] {
        let p = env.start_processor(&small);
        wait_until("more events are stored", Duration::from_secs(60), || {
            env.count("SELECT count(*) AS n FROM events") >= stored
        });
        env.kill_processor(p);
    }
    let p = env.start_processor(&small);
    env.wait_drained(3, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));
    assert_eq!(dump(&env), clean_dump, "kill -9 mid-stream leaves the same state as a clean run");

    // The whole log replayed into Postgres (its progress, counts and state deleted).
    use diesel::RunQueryDsl;
    for sql in [
        "DELETE FROM sink_progress WHERE sink = 'postgres'",
        "DELETE FROM outcome_counts",
        "DELETE FROM order_states",
    ] {
        diesel::sql_query(sql).execute(&mut env.pg()).unwrap();
    }
    env.reset_group(3, 0);
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));
    assert_eq!(dump(&env), clean_dump, "a replay from offset 0 folds the same state");

    // Retractions: a payment invalidated, the later shipment deleted, the only event of
    // an order deleted. The state is as if they had never arrived.
    let find = |order: &str, event_type: &str, n: usize| -> &OrderEvent {
        events.iter().filter(|e| e.order == order && e.event_type == event_type).nth(n).unwrap()
    };
    let invalidated = find("ord_0002", "order_paid", 1);
    let deleted_shipment = find("ord_0004", "order_shipped", 1);
    let only_event = find("ord_0003", "order_created", 0);
    env.produce(&[
        (None, "x".into(), Some(invalidation_of(&invalidated.text).into_bytes())),
        (None, event_id(deleted_shipment), None),
        (None, event_id(only_event), None),
    ]);
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    let retracted = [event_id(invalidated), event_id(deleted_shipment), event_id(only_event)];
    let remaining: Vec<&OrderEvent> =
        events.iter().filter(|e| !retracted.contains(&event_id(e))).collect();
    let after = fold(&remaining);
    assert_eq!(states(&env), after, "retracted events no longer count");
    assert!(after["ord_0002"].contains(",10.25,"), "one payment left: {}", after["ord_0002"]);
    assert!(after["ord_0004"].contains(",DHL,"), "the first carrier again: {}", after["ord_0004"]);
    assert!(!after.contains_key("ord_0003"));

    // `eventline state`: the row and the events that made it, the invalidated one marked.
    let (code, doc) = cli_state(&env, "ord_0002");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["state"]["amount_paid"], json!(10.25), "{doc}");
    let counted: Vec<bool> =
        doc["events"].as_array().unwrap().iter().map(|e| e["counts"].as_bool().unwrap()).collect();
    assert_eq!(
        counted,
        vec![true, true, false, true],
        "created, paid, paid (invalidated), shipped: {doc}"
    );
    assert_eq!(cli_state(&env, "ord_0003").0, 1, "no state for an order with no event left");

    // A tombstone keyed by the order id removes the order's row; a later event starts
    // a new state from that event alone.
    env.produce(&[(None, "ord_0010".into(), None)]);
    wait_until("the order's state row is gone", Duration::from_secs(30), || {
        env.count("SELECT count(*) AS n FROM order_states WHERE order_id = 'ord_0010'") == 0
    });
    let reopened = order_event(
        "ord_0010",
        "order_created",
        Utc::now(),
        json!({"customer_id": "cus_new", "amount": 5.0, "currency": "EUR"}),
    );
    env.produce(&[(None, "y".into(), Some(reopened.text.clone().into_bytes()))]);
    env.wait_drained(3, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));
    assert_eq!(states(&env)["ord_0010"], "cus_new,5.00,,,,1,order_created");
    assert_eq!(
        env.count("SELECT count(*) AS n FROM dead_letters"),
        0,
        "no tombstone was a dead letter"
    );
}

/// A state table made after its events (a new entity, or one dropped by hand) is
/// backfilled from the stored events at start; from then on new events are applied to
/// the rows (a long in-order history in small batches, late events among them), and
/// the rows equal the fold of every event.
#[test]
fn a_state_table_made_after_its_events_is_backfilled_then_kept_exact() {
    let events = orders();
    let (before, after) = events.split_at(events.len() / 2);
    let mut env = TestEnv::new(3);
    env.produce(&shuffled(before, 11));
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    use diesel::RunQueryDsl;
    diesel::sql_query("DROP TABLE order_states").execute(&mut env.pg()).unwrap();
    // One hot order: 300 payments in event-time order, then the second half of the
    // orders shuffled (late arrivals), all in batches of 5.
    let t0: DateTime<Utc> = "2026-11-21T08:00:00Z".parse().unwrap();
    let mut hot: Vec<OrderEvent> = vec![order_event(
        "ord_hot",
        "order_created",
        t0,
        json!({"customer_id": "cus_hot", "amount": 1.0, "currency": "EUR"}),
    )];
    for i in 0..300i64 {
        hot.push(order_event(
            "ord_hot",
            "order_paid",
            t0 + Minutes::seconds(i + 1),
            json!({"payment_id": format!("pay_hot_{i}"), "amount_paid": 0.25, "currency": "EUR", "method": "card"}),
        ));
    }
    let in_order: Vec<TestRecord> = hot
        .iter()
        .map(|e| (Some(0), "ord_hot".to_string(), Some(e.text.clone().into_bytes())))
        .collect();
    env.produce(&in_order);
    env.produce(&shuffled(after, 12));
    let p = env.start_processor(&[("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "5")]);
    env.wait_drained(3, Duration::from_secs(90));
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));
    assert!(
        env.processor_log(p).contains("state of order:"),
        "the start says it backfilled: {}",
        env.processor_log(p)
    );
    let all: Vec<&OrderEvent> = events.iter().chain(&hot).collect();
    let states = states(&env);
    assert_eq!(states["ord_hot"], "cus_hot,1.00,75.00,,,301,order_paid");
    assert_eq!(states, fold(&all), "backfilled, then applied event by event");
}
