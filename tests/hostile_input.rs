//! P7, second round: records sent by third-party clients (confluent-kafka, kcat) that
//! once stopped a partition or the process, each among valid traffic through the real
//! broker. For every class: the valid records are stored exactly once in both sinks,
//! the bad record has its outcome at its coordinates, no writer fails or restarts, the
//! process stays up and healthy, and every partition is committed to its end.

mod helpers;

use helpers::hostile::{Delivery, RawRecord};
use helpers::*;
use std::time::Duration;

const PARTITIONS: i32 = 3;

fn envelope(event_type: &str, payload: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": event_type,
        "source": "crm",
        "timestamp": "2026-11-22T10:15:00+01:00",
        "payload": payload,
    })
}

fn account(account: &str) -> serde_json::Value {
    envelope(
        "account_created",
        serde_json::json!({"account_id": account, "industry": "software", "region": "EMEA"}),
    )
}

/// JSON text with `"{from}"` replaced by raw text: for numbers written as the test
/// needs them (`11.0`, 2^63) and keys holding NUL.
fn with_raw(doc: &serde_json::Value, from: &str, raw: &str) -> Vec<u8> {
    doc.to_string().replace(&format!("\"{from}\""), raw).into_bytes()
}

fn valid(n: usize, tag: &str) -> Vec<RawRecord> {
    (0..n)
        .map(|i| {
            let key = format!("acc_{tag}_{i:05}");
            let mut r = RawRecord::new((i % 3) as i32, key.as_bytes(), None);
            r.value = Some(account(&key).to_string().into_bytes());
            r
        })
        .collect()
}

/// (record, partition, the outcome it must get: a dead letter's class, or "accepted").
fn hostile() -> Vec<(RawRecord, &'static str)> {
    let on = |p: i32, key: &[u8], value: Vec<u8>| RawRecord::new(p, key, Some(&value));
    let mut nul_payload_key = account("acc_h_nul_payload");
    nul_payload_key["payload"]["marker_key"] = 1.into();
    let mut nul_envelope_key = account("acc_h_nul_envelope");
    nul_envelope_key["marker_key"] = 1.into();
    let mut eleven = account("acc_h_eleven");
    eleven["payload"]["employee_count"] = "COUNT".into();
    let mut huge = account("acc_h_huge");
    huge["payload"]["employee_count"] = "COUNT".into();
    let mut version = account("acc_h_version");
    version["schema_version"] = "VERSION".into();
    let year_zero = envelope(
        "opportunity_created",
        serde_json::json!({"opportunity_id": "opp_h_year0", "account_id": "acc_h_year0",
            "amount": 10.0, "currency": "EUR", "stage": "prospecting", "close_date": "0000-01-01"}),
    );
    let mut records = vec![
        // JSON Schema quotes the offending property's name in its reason: a NUL in it
        // once went into dead_letters.error_message and stopped the Postgres writer.
        (
            on(0, b"acc_h_nul_payload", with_raw(&nul_payload_key, "marker_key", r#""k\u0000""#)),
            "any",
        ),
        (
            on(1, b"acc_h_nul_envelope", with_raw(&nul_envelope_key, "marker_key", r#""k\u0000""#)),
            "bad_envelope",
        ),
        // Tombstones whose keys no index can hold: a NUL, 3,000 bytes, not UTF-8.
        (RawRecord::new(2, b"acc\0nul", None), "tombstone"),
        (RawRecord::new(0, &[b'k'; 3000], None), "tombstone"),
        (RawRecord::new(1, b"\xff\xfe", None), "tombstone"),
        // Integers JSON Schema accepts that a bigint column does not, as written.
        (on(2, b"acc_h_eleven", with_raw(&eleven, "COUNT", "11.0")), "accepted"),
        (
            on(0, b"acc_h_huge", with_raw(&huge, "COUNT", "9223372036854775808")),
            "contract_violation",
        ),
        (on(1, b"acc_h_version", with_raw(&version, "VERSION", "2.0")), "bad_envelope"),
        (on(2, b"opp_h_year0", year_zero.to_string().into_bytes()), "contract_violation"),
        // Under pipeline.max_record_bytes but, with its headers, over what the DLQ
        // producer may send: once retried every 5 s for ever.
        (on(0, b"big", vec![b'x'; 999_500]), "not_json"),
        // Over max_record_bytes and over the DLQ producer's limit.
        (on(1, b"bigger", vec![b'y'; 1_040_000]), "oversized"),
    ];
    // 60,000 unknown envelope keys: JSON Schema lists every one in its reason.
    let mut many_keys = account("acc_h_many_keys");
    for i in 0..60_000 {
        many_keys[format!("k{i}")] = 0.into();
    }
    records.push((on(2, b"acc_h_many_keys", many_keys.to_string().into_bytes()), "bad_envelope"));
    // A stream of made-up event types: each a dead letter, none a metric label.
    for i in 0..30 {
        let doc = envelope(&format!("made_up_type_{i}"), serde_json::json!({}));
        records.push((on(i % 3, b"made_up", doc.to_string().into_bytes()), "unknown_event_type"));
    }
    records
}

#[test]
fn hostile_records_get_their_outcome_and_never_stop_a_partition() {
    let mut env = TestEnv::new(PARTITIONS);
    let (before, after) = (valid(1500, "a"), valid(1500, "b"));
    let hostile = hostile();
    env.send_confluent(&[
        (Delivery::Plain, before),
        (Delivery::Plain, hostile.iter().map(|(r, _)| r.clone()).collect()),
    ]);
    // A valid event whose header name is not UTF-8 (once a panic in the source thread).
    let header_event = account("acc_h_header");
    env.send_kcat_with_header(2, &header_event.to_string(), b"\xff\xfe");
    env.send_confluent(&[(Delivery::Plain, after)]);
    let p = env.start_processor(&[]);
    let total = 3000 + hostile.len() as i64 + 1;
    env.wait_drained(PARTITIONS, Duration::from_secs(120));
    let accepted = 3000 + 2; // the valid traffic, `11.0` and the kcat event
    wait_until("the lake holds every accepted event", Duration::from_secs(30), || {
        env.lake_rows() == accepted
    });
    let (status, _) = admin_get(&format!("{}/health", env.admin_url(p)));
    let metrics = admin_get(&format!("{}/metrics", env.admin_url(p))).1;
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    assert_eq!(status, 200, "the processor is healthy after the hostile records");
    assert_eq!(env.outcomes_total(), total);
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), accepted);
    assert_eq!(env.lake_counts_duckdb(), (accepted, accepted));
    let class_count = |class: &str| {
        env.count(&format!("SELECT count(*) AS n FROM dead_letters WHERE error_class = '{class}'"))
    };
    let mut expected: std::collections::BTreeMap<&str, i64> = Default::default();
    for (_, outcome) in &hostile {
        if !["accepted", "any"].contains(outcome) {
            *expected.entry(outcome).or_default() += 1;
        }
    }
    for (class, n) in &expected {
        assert_eq!(class_count(class), *n, "dead letters of class {class}");
    }
    assert_eq!(
        env.count("SELECT count(*) AS n FROM dead_letters"),
        hostile.len() as i64 - 1,
        "every hostile record but the `11.0` one is a dead letter"
    );
    // No reason, key or header carries a NUL into Postgres: they are written \u0000.
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM dead_letters WHERE strpos(error_message, E'\\\\u0000') > 0"
        ),
        2,
        "both NUL property names are named, escaped"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM dead_letters WHERE error_class = 'tombstone' \
             AND error_message LIKE 'tombstone key %' AND record_key IS NOT NULL"
        ),
        3,
        "each unusable tombstone key is named, and its bytes kept"
    );
    // `11.0` is the integer 11, in the payload and in the account's state.
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM events WHERE payload->>'account_id' = 'acc_h_eleven' \
             AND jsonb_typeof(payload->'employee_count') = 'number' \
             AND payload->>'employee_count' = '11'"
        ),
        1
    );
    // The header name that is not UTF-8 is kept with U+FFFD in place of its bytes.
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM events WHERE payload->>'account_id' = 'acc_h_header' \
             AND headers->0->>'key' = E'\\uFFFD\\uFFFD'"
        ),
        1
    );
    // The two big dead letters went to the DLQ cut, with their original size said.
    let truncated = dlq_truncations(&env);
    assert!(truncated.contains(&"999500".to_string()), "{truncated:?}");
    assert!(truncated.contains(&"1040000".to_string()), "{truncated:?}");
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM dead_letters WHERE octet_length(record_value) IN (999500, 1040000)"
        ),
        2,
        "the dead_letters table keeps their bytes whole"
    );
    // A reason is bounded, and says how much of it was cut.
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM dead_letters WHERE error_class = 'bad_envelope' \
             AND octet_length(error_message) <= 4096 AND error_message LIKE '%bytes cut]' \
             AND convert_from(record_value, 'UTF8') LIKE '%acc_h_many_keys%'"
        ),
        1,
        "the reason listing 60,000 keys is cut to 4 KiB"
    );
    // Made-up types are one `unknown` label, not thirty.
    assert!(!metrics.contains("made_up_type_"), "an input value became a metric label");
    assert!(metrics.contains(r#"event_type="unknown""#));
    assert_eq!(env.supervision_failures(), Vec::<String>::new(), "no stage or writer failed");
}

/// The `eventline.value_truncated` header of every record on the DLQ topic.
fn dlq_truncations(env: &TestEnv) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("{}-dlq-{}", env.group, uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "10000000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&env.dlq_topic]).expect("subscribe");
    let mut found = Vec::new();
    let mut seen = 0;
    wait_until("the DLQ topic holds the big dead letters", Duration::from_secs(60), || {
        while let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen += 1;
            for h in m.headers().into_iter().flat_map(|h| h.iter()) {
                if h.key == "eventline.value_truncated" {
                    found.push(String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned());
                }
            }
        }
        found.len() >= 2
    });
    assert!(seen > 2);
    found
}

#[test]
fn transaction_markers_are_consumed_and_aborted_transactions_never_stored() {
    let mut env = TestEnv::new(PARTITIONS);
    let aborted = valid(30, "aborted");
    env.send_confluent(&[
        (Delivery::Committed, valid(30, "first")),
        (Delivery::Aborted, aborted.clone()),
        (Delivery::Committed, valid(30, "second")),
    ]);
    let p = env.start_processor(&[]);
    let end = env.high_watermarks(PARTITIONS);
    wait_until("offsets are committed to the very end", Duration::from_secs(60), || {
        env.committed(PARTITIONS) == end
    });
    wait_until("the lake holds the committed events", Duration::from_secs(30), || {
        env.lake_rows() == 60
    });
    let (status, body) = admin_get(&format!("{}/health", env.admin_url(p)));
    assert_eq!(env.stop_processor(p), 0);

    assert_eq!(status, 200, "a partition drained up to its markers is healthy: {body}");
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 60);
    assert_eq!(env.outcomes().get("accepted"), Some(&60));
    assert_eq!(env.outcomes_total(), 60, "markers and aborted records have no outcome");
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM events WHERE payload->>'account_id' LIKE 'acc_aborted_%'"
        ),
        0,
        "an aborted transaction is never stored"
    );
    assert_eq!(env.lake_counts_duckdb(), (60, 60));
    let log = env.processor_log(p);
    assert!(!log.contains("never received"), "markers were taken for lost records");
    for partition in 0..PARTITIONS {
        assert_eq!(env.sink_progress_pg(partition), Some(end[partition as usize]));
    }
}
