//! Kafka headers kept (issue 17): each accepted event stores its record's headers, in
//! order and bounded by `headers.max_bytes`, in Postgres (`events.headers`) and in the
//! lake (`headers`), and the configured correlation header in a `correlation_id` column
//! of its own in both. Headers are not part of the event: a resend with other headers is
//! a duplicate and the first copy's headers stay.

mod helpers;

use diesel::RunQueryDsl;
use helpers::*;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

#[derive(diesel::QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

fn send_with_headers(env: &TestEnv, key: &str, value: &str, headers: &[(&str, Option<&[u8]>)]) {
    let producer: FutureProducer = env.producer();
    let mut owned = OwnedHeaders::new();
    for (k, v) in headers {
        owned = owned.insert(Header { key: k, value: *v });
    }
    let record = FutureRecord::to(&env.topic).key(key).payload(value).headers(owned);
    block_on(producer.send(record, Duration::from_secs(30))).expect("delivered");
}

#[test]
fn headers_are_stored_in_both_sinks_with_the_correlation_id_apart() {
    let mut env = TestEnv::new(1);
    let ids: Vec<String> = (0..4).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let big = vec![b'x'; 600];
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // 1: a correlation id and a trace header; 2: binary and null values;
    // 3: a header over the bound; 4: no headers at all.
    send_with_headers(
        &env,
        "acc-1",
        &account_created(&ids[0], "acc-1"),
        &[("correlation_id", Some(b"req-0001")), ("traceparent", Some(traceparent.as_bytes()))],
    );
    send_with_headers(
        &env,
        "acc-2",
        &account_created(&ids[1], "acc-2"),
        &[("bin", Some(&[0xff, 0x00, b'a'])), ("empty", None)],
    );
    send_with_headers(
        &env,
        "acc-3",
        &account_created(&ids[2], "acc-3"),
        &[("small", Some(b"1")), ("blob", Some(&big)), ("correlation_id", Some(b"req-0003"))],
    );
    send_with_headers(&env, "acc-4", &account_created(&ids[3], "acc-4"), &[]);
    // A resend of event 1 with other headers: a duplicate, its headers not stored.
    send_with_headers(
        &env,
        "acc-1",
        &account_created(&ids[0], "acc-1"),
        &[("correlation_id", Some(b"req-RESEND"))],
    );

    let p = env.start_processor(&[("EVENTLINE__HEADERS__MAX_BYTES", "512")]);
    env.wait_drained(1, Duration::from_secs(60));
    wait_until("the lake holds the four events", Duration::from_secs(30), || env.lake_rows() == 4);
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(env.outcomes().get("duplicate"), Some(&1));

    let pg = |id: &str| {
        diesel::sql_query(format!(
            "SELECT coalesce(correlation_id, '-') || '|' || coalesce(headers::text, '-') AS v \
             FROM events WHERE event_id = '{id}'"
        ))
        .get_result::<Text>(&mut env.pg())
        .expect("the event is stored")
        .v
    };
    let lake = |id: &str| {
        duckdb(&format!(
            "SELECT coalesce(correlation_id, '-') || '|' || coalesce(headers, '-') \
             FROM read_parquet('{}/event_type=*/*/*/*/*.parquet') WHERE event_id = '{id}'",
            env.lake.display()
        ))
        .trim()
        .to_string()
    };
    let as_json = |row: &str| -> (String, serde_json::Value) {
        let (id, json) = row.split_once('|').expect("id|headers");
        (
            id.to_string(),
            if json == "-" { serde_json::Value::Null } else { serde_json::from_str(json).unwrap() },
        )
    };

    let expected = [
        (
            "req-0001",
            serde_json::json!([
                {"key": "correlation_id", "value": "req-0001"},
                {"key": "traceparent", "value": traceparent},
            ]),
        ),
        (
            "-",
            serde_json::json!([
                {"key": "bin", "value": "\u{FFFD}\\u0000a"},
                {"key": "empty", "value": null},
            ]),
        ),
        (
            "req-0003",
            serde_json::json!([
                {"key": "small", "value": "1"},
                {"key": "eventline.headers_dropped",
                 "value": "2 header(s), 626 bytes, over headers.max_bytes = 512"},
            ]),
        ),
        ("-", serde_json::Value::Null),
    ];
    for (id, (correlation, headers)) in ids.iter().zip(expected) {
        for (sink, row) in [("postgres", pg(id)), ("lake", lake(id))] {
            let (got_correlation, got_headers) = as_json(&row);
            assert_eq!(got_correlation, correlation, "{sink} {id}: {row}");
            assert_eq!(got_headers, headers, "{sink} {id}: {row}");
        }
    }
    // The correlation id is a column of its own: a plain lookup finds the event.
    assert_eq!(env.count("SELECT count(*) AS n FROM events WHERE correlation_id = 'req-0001'"), 1);
    assert_eq!(
        env.count("SELECT count(*) AS n FROM events WHERE correlation_id = 'req-RESEND'"),
        0
    );
    println!("headers: 4 events, correlation ids and bounded headers equal in both sinks");
}
