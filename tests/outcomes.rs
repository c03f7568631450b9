//! Duplicates and conflicts get one row each and are counted; every kind of bad input
//! reaches the DLQ topic and table with its class, and the partition keeps flowing
//! behind it (P1, P7).

mod helpers;

use helpers::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::ClientConfig;
use std::collections::BTreeMap;
use std::time::Duration;

#[test]
fn duplicates_and_conflicts_are_stored_once_and_counted() {
    let mut env = TestEnv::new(1);
    let id = uuid::Uuid::new_v4().to_string();
    let original = account_created(&id, "acc_0001");
    let changed = original.replace("EMEA", "APAC");
    let other = uuid::Uuid::new_v4().to_string();
    let record = |v: &str| (Some(0), "acc_0001".to_string(), Some(v.as_bytes().to_vec()));
    // Key order differs in the third copy: still the same event.
    let reordered =
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&original).unwrap())
            .unwrap();
    env.produce(&[
        record(&original),
        record(&original),
        record(&reordered),
        record(&changed),
        record(&account_created(&other, "acc_0002")),
    ]);
    let p = env.start_processor(&[]);
    wait_until("all 5 records are accounted for", Duration::from_secs(60), || {
        env.outcomes_total() == 5
    });

    let outcomes = env.outcomes();
    assert_eq!(outcomes.get("accepted"), Some(&2), "{outcomes:?}");
    assert_eq!(outcomes.get("duplicate"), Some(&2), "{outcomes:?}");
    assert_eq!(outcomes.get("conflict"), Some(&1), "{outcomes:?}");
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 2);
    assert_eq!(env.count(&format!("SELECT count(*) AS n FROM events WHERE event_id = '{id}' AND \"offset\" = 0 AND payload->>'region' = 'EMEA'")), 1);
    assert_eq!(env.count(&format!("SELECT count(*) AS n FROM conflicts WHERE event_id = '{id}' AND \"offset\" = 3 AND first_offset = 0")), 1);
    wait_until("the lake has both accepted events", Duration::from_secs(30), || {
        env.lake_rows() == 2
    });
    assert_eq!(env.lake_counts_duckdb(), (2, 2));
    assert_eq!(env.stop_processor(p), 0);
}

#[test]
fn every_kind_of_bad_input_is_dead_lettered_and_the_partition_keeps_flowing() {
    let mut env = TestEnv::new(1);
    let mut deep = String::new();
    for _ in 0..100 {
        deep.push_str("{\"a\":");
    }
    deep.push('1');
    deep.push_str(&"}".repeat(100));
    let valid_id = uuid::Uuid::new_v4().to_string();
    let unknown_type = account_created(&uuid::Uuid::new_v4().to_string(), "acc_0003")
        .replace("account_created", "invoice_paid");
    let bad_payload = account_created(&uuid::Uuid::new_v4().to_string(), "acc_0004")
        .replace("\"region\"", "\"employee_count\":-5,\"region\"");
    let bad_version = account_created(&uuid::Uuid::new_v4().to_string(), "acc_0005")
        .replace("\"source\"", "\"schema_version\":7,\"source\"");
    let bad_envelope = r#"{"event_type":"account_created","payload":{}}"#.to_string();
    let inputs: Vec<(&str, Option<Vec<u8>>)> = vec![
        ("not_json", Some(b"{this is not json".to_vec())),
        ("not_utf8", Some(vec![b'{', 0xC3, 0x28, b'}'])),
        ("tombstone", None),
        ("oversized", Some(format!("\"{}\"", "x".repeat(20_000)).into_bytes())),
        ("too_deep", Some(deep.into_bytes())),
        ("bad_envelope", Some(bad_envelope.into_bytes())),
        ("unknown_event_type", Some(unknown_type.into_bytes())),
        ("unknown_schema_version", Some(bad_version.into_bytes())),
        ("contract_violation", Some(bad_payload.into_bytes())),
    ];
    let mut records: Vec<_> =
    // The tombstone has an empty key: one keyed by anything else deletes that entity.
        inputs
            .iter()
            .map(|(class, v)| {
                let key = if v.is_none() { String::new() } else { class.to_string() };
                (Some(0), key, v.clone())
            })
            .collect();
    records.push((
        Some(0),
        "acc_0009".into(),
        Some(account_created(&valid_id, "acc_0009").into_bytes()),
    ));
    env.produce(&records);
    let p = env.start_processor(&[("EVENTLINE__PIPELINE__MAX_RECORD_BYTES", "10000")]);
    wait_until("all records are accounted for", Duration::from_secs(60), || {
        env.outcomes_total() == records.len() as i64
    });

    assert_eq!(
        env.count(&format!("SELECT count(*) AS n FROM events WHERE event_id = '{valid_id}'")),
        1,
        "the valid record behind the bad ones flowed"
    );
    #[derive(diesel::QueryableByName)]
    struct Dead {
        #[diesel(sql_type = diesel::sql_types::Text)]
        error_class: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        offset: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        error_message: String,
    }
    use diesel::RunQueryDsl;
    let rows: Vec<Dead> = diesel::sql_query(
        "SELECT error_class, \"offset\", error_message FROM dead_letters ORDER BY \"offset\"",
    )
    .load(&mut env.pg())
    .unwrap();
    let classes: Vec<&str> = rows.iter().map(|r| r.error_class.as_str()).collect();
    let expected: Vec<&str> = inputs.iter().map(|(c, _)| *c).collect();
    assert_eq!(classes, expected);
    assert!(rows.iter().enumerate().all(|(i, r)| r.offset == i as i64));
    let violation = &rows[8].error_message;
    assert!(
        violation.starts_with("/payload/employee_count: rule 'minimum'"),
        "names the path and rule: {violation}"
    );
    assert_eq!(env.count("SELECT count(*) AS n FROM dead_letters WHERE error_class = 'not_utf8' AND record_value = '\\x7bc3287d'::bytea"), 1, "bytes kept untouched");

    // The DLQ topic holds the same records, original bytes as value, reason as headers.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("{}-dlq-reader", env.group))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&env.dlq_topic]).unwrap();
    let mut dlq: BTreeMap<i64, (String, Option<Vec<u8>>)> = BTreeMap::new();
    wait_until("the DLQ topic holds every dead letter", Duration::from_secs(30), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
                })
            };
            let offset: i64 = header("eventline.source_offset").unwrap().parse().unwrap();
            dlq.insert(
                offset,
                (header("eventline.error_class").unwrap(), m.payload().map(<[u8]>::to_vec)),
            );
        }
        dlq.len() == inputs.len()
    });
    for (offset, (class, value)) in inputs.iter().enumerate() {
        assert_eq!(dlq[&(offset as i64)], (class.to_string(), value.clone()));
    }
    assert_eq!(env.stop_processor(p), 0);
}
