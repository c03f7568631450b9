//! The local stack works: a real broker round trip through rdkafka and the diesel
//! migrations against the real Postgres.

mod helpers;

use diesel_migrations::MigrationHarness;
use helpers::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use std::time::Duration;

#[test]
fn produces_to_and_consumes_from_the_real_broker() {
    let env = TestEnv::new(1);
    env.produce(&[
        (None, "k1".into(), Some(b"hello".to_vec())),
        (None, "k2".into(), Some(b"world".to_vec())),
    ]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", &env.group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&env.topic]).unwrap();
    let mut seen = Vec::new();
    wait_until("both records are consumed", Duration::from_secs(30), || {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            seen.push(
                m.payload().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default(),
            );
        }
        seen.len() == 2
    });
    assert_eq!(seen, vec!["hello", "world"]);
}

#[test]
fn migrations_run_against_the_real_postgres_and_twice_is_harmless() {
    let env = TestEnv::new(1);
    let mut conn = env.pg();
    let all = std::fs::read_dir(repo().join("migrations")).unwrap().count();
    assert_eq!(eventline::db::migrate(&mut conn).unwrap(), all);
    assert_eq!(eventline::db::migrate(&mut conn).unwrap(), 0);
    assert!(!conn.has_pending_migration(eventline::db::MIGRATIONS).unwrap());
    for table in [
        "processed_events",
        "events",
        "dead_letters",
        "conflicts",
        "outcome_counts",
        "sink_progress",
    ] {
        assert_eq!(
            env.count(&format!("SELECT count(*) AS n FROM {table}")),
            0,
            "{table} exists and is empty"
        );
    }
}
