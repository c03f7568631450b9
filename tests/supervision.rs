//! A failing sink is restarted with backoff while the other keeps writing; afterwards
//! it holds every event exactly once, and the supervision log tells the story (P4).

mod helpers;

use eventline::telemetry::supervision_log::{read_entries, EntryKind};
use helpers::*;
use std::time::Duration;

#[test]
fn a_crashing_parquet_writer_restarts_while_postgres_keeps_consuming() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(1_000, 50, 0, 5);
    // An error, another error, then a panic, after two good writes: with a 1 s initial
    // backoff the lake is down for about 1 + 2 + 4 seconds. The records go in three
    // parts, each after the lake writer finished a write, so that two writes pass
    // before the faults (a writer busy with its first write once took every batch
    // that queued meanwhile in its second, and no fault was left to fire).
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__PARQUET", "error,error,panic"),
        ("EVENTLINE__FAULTS__AFTER_BATCHES", "2"),
        ("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "50"),
        ("EVENTLINE__SUPERVISION__BACKOFF_INITIAL_MS", "1000"),
    ]);
    env.produce(&records[..50]);
    wait_until("the lake's first write", Duration::from_secs(60), || {
        env.sink_writes(p, "lake") >= 1
    });
    env.produce(&records[50..100]);
    wait_until("the lake's second write", Duration::from_secs(60), || {
        env.sink_writes(p, "lake") >= 2
    });
    env.produce(&records[100..]);
    let log = env.supervision_log.clone();
    let recovered = |actor: &str| {
        read_entries(&log)
            .unwrap_or_default()
            .iter()
            .any(|e| e.actor == actor && e.kind == EntryKind::Recovered)
    };

    wait_until("Postgres has every accepted event", Duration::from_secs(60), || {
        env.count("SELECT count(*) AS n FROM events") == ids.len() as i64
    });
    assert!(
        !recovered("parquet_writer"),
        "Postgres finished while the lake writer was still down: consumption went on"
    );
    env.wait_drained(3, Duration::from_secs(60));
    assert_eq!(
        env.lake_counts_duckdb(),
        (1_000, 1_000),
        "the lake caught up with every event exactly once"
    );

    let entries = read_entries(&log).unwrap();
    let lake: Vec<_> = entries.iter().filter(|e| e.actor == "parquet_writer").collect();
    let kinds: Vec<EntryKind> = lake.iter().map(|e| e.kind).collect();
    use EntryKind::*;
    assert_eq!(
        kinds,
        vec![Start, Failure, Restart, Failure, Restart, Failure, Restart, Recovered],
        "{lake:#?}"
    );
    let causes: Vec<&str> =
        lake.iter().filter(|e| e.kind == Failure).map(|e| e.cause.as_deref().unwrap()).collect();
    assert_eq!(
        causes,
        vec!["injected fault", "injected fault", "panicked: injected panic in parquet_writer"]
    );
    let backoffs: Vec<u64> = lake.iter().filter_map(|e| e.backoff_ms).collect();
    assert_eq!(backoffs, vec![1000, 2000, 4000], "exponential backoff");
    let downtime = lake.last().unwrap().downtime_ms.unwrap();
    assert!(downtime >= 7000, "downtime covers the three backoffs: {downtime} ms");
    assert!(
        entries.iter().all(|e| e.actor != "postgres_writer" || e.kind == Start),
        "Postgres never failed"
    );

    assert_eq!(env.stop_processor(p), 0);
    let table = std::process::Command::new(binary())
        .args(["supervision", "--actor", "parquet_writer", "--file"])
        .arg(&log)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("restart") && table.contains("injected panic") && table.contains("4000"),
        "{table}"
    );
}

#[test]
fn a_writer_that_keeps_failing_makes_the_supervisor_give_up_and_the_process_exit_non_zero() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(10));
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__POSTGRES", "error,error,error,error"),
        ("EVENTLINE__SUPERVISION__MAX_RESTARTS", "2"),
        ("EVENTLINE__SUPERVISION__BACKOFF_INITIAL_MS", "10"),
    ]);
    let log = env.supervision_log.clone();
    wait_until("the supervisor gives up", Duration::from_secs(30), || {
        read_entries(&log)
            .unwrap_or_default()
            .iter()
            .any(|e| e.actor == "postgres_writer" && e.kind == EntryKind::GiveUp)
    });
    let code = env.stop_processor(p);
    assert_eq!(code, 3, "exit code 3 after giving up:\n{}", env.processor_log(p));
    assert_eq!(env.committed(1), vec![-1], "nothing committed past what Postgres stored");
}

#[test]
fn a_crashing_lake_writer_on_s3_restarts_and_the_bucket_holds_every_event_once() {
    let mut env = TestEnv::new(2);
    let s3 = S3Lake::new();
    let records = valid_records(600);
    let ids: std::collections::BTreeSet<String> = records.iter().map(event_id_of).collect();
    let mut settings = s3.env();
    for (k, v) in [
        ("EVENTLINE__FAULTS__PARQUET", "error,panic"),
        ("EVENTLINE__FAULTS__AFTER_BATCHES", "1"),
        ("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "50"),
        ("EVENTLINE__SUPERVISION__BACKOFF_INITIAL_MS", "200"),
    ] {
        settings.push((k.to_string(), v.to_string()));
    }
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = env.start_processor(&extra);
    // One good write to the bucket first, then the faults on the next ones.
    env.produce(&records[..50]);
    wait_until("the lake's first write", Duration::from_secs(60), || {
        env.sink_writes(p, "lake") >= 1
    });
    env.produce(&records[50..]);
    env.wait_drained(2, Duration::from_secs(90));
    wait_until("the bucket holds every event", Duration::from_secs(60), || {
        s3.event_ids(&env.topic).len() >= ids.len()
    });
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    let in_bucket = s3.event_ids(&env.topic);
    assert_eq!(in_bucket.len(), ids.len(), "each event once in the bucket");
    assert_eq!(in_bucket.into_iter().collect::<std::collections::BTreeSet<_>>(), ids);
    let summary = s3.deltalake_summary(&env.topic, 2);
    assert_eq!(summary["distinct"].as_i64(), Some(600), "{summary}");
    let pg: Vec<serde_json::Value> =
        (0..2).map(|p| serde_json::json!(env.sink_progress_pg(p))).collect();
    assert_eq!(summary["txn"], serde_json::json!(pg), "the bucket's progress is Postgres's");
    let kinds: Vec<EntryKind> = read_entries(&env.supervision_log)
        .unwrap()
        .iter()
        .filter(|e| e.actor == "parquet_writer")
        .map(|e| e.kind)
        .collect();
    use EntryKind::*;
    assert_eq!(kinds, vec![Start, Failure, Restart, Failure, Restart, Recovered, Stop]);
}
