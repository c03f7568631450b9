//! The user's own documented event is accepted: seed 000's example (a Salesforce-style
//! account id, industry and region as free text), sent as documented with a client
//! eventline did not write (Apache Kafka's console producer), lands in both sinks.

mod helpers;

use helpers::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn the_seed_example_event_sent_with_kafkas_console_producer_lands_in_both_sinks() {
    let mut env = TestEnv::new(1);
    let id = uuid::Uuid::new_v4().to_string();
    let event = serde_json::json!({
        "event_id": id,
        "event_type": "account_created",
        "timestamp": "2026-11-22T10:15:00Z",
        "source": "salesforce",
        "payload": {
            "account_id": "001xx000003DGb2AAG",
            "account_name": "Acme Corp",
            "industry": "Healthcare",
            "region": "US"
        }
    });
    let mut producer = kafka_java(&env.dir().join("kafka-logs"))
        .args(["kafka.tools.ConsoleProducer", "--bootstrap-server", &env.brokers])
        .args(["--topic", &env.topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("Kafka's console producer starts");
    writeln!(producer.stdin.take().unwrap(), "{event}").unwrap();
    assert!(producer.wait().unwrap().success(), "the console producer sent the event");

    let p = env.start_processor(&[]);
    env.wait_drained(1, Duration::from_secs(60));
    wait_until("the lake holds the event", Duration::from_secs(30), || env.lake_rows() == 1);
    assert_eq!(env.stop_processor(p), 0);

    assert_eq!(env.count("SELECT count(*) AS n FROM dead_letters"), 0, "not dead-lettered");
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM events WHERE event_id = '{id}' \
             AND payload->>'account_id' = '001xx000003DGb2AAG' \
             AND payload->>'industry' = 'Healthcare' AND payload->>'region' = 'US' \
             AND payload->>'account_name' = 'Acme Corp'"
        )),
        1,
        "stored as sent, extra payload fields included"
    );
    let in_lake = duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{}/event_type=*/*/*/*/*.parquet') WHERE event_id = '{id}' \
         AND payload LIKE '%\"industry\":\"Healthcare\"%'",
        env.lake.display()
    ));
    assert_eq!(in_lake.trim(), "1", "in the lake as sent");
}
