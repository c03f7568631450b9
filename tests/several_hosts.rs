//! Several machines in one consumer group, one lake on S3 (issue 18): three processes,
//! each in a working folder of its own with its own admin port and supervision log,
//! share nothing but Kafka, Postgres and an S3 bucket (the stack's S3 server). Under a
//! paced stream one is killed with kill -9 and another stopped with SIGTERM; every
//! event is exactly once in Postgres and in the Delta table on S3, and both agree.

mod helpers;

use helpers::*;
use std::time::Duration;

#[test]
fn three_hosts_share_one_lake_on_s3_through_kill_9_and_sigterm() {
    let mut env = TestEnv::new(6);
    let s3 = S3Lake::new();
    let (records, ids) = mixed_records(30_000, 1_000, 100, 100);
    let total = records.len() as i64;
    let settings = s3.env();
    let mut extra: Vec<(&str, &str)> =
        settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    extra.push(("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "500"));
    let hosts: Vec<usize> = (0..3)
        .map(|i| {
            let dir = env.dir().join(format!("host-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            env.start_processor_in(&dir, &extra)
        })
        .collect();

    // The stream: 31,200 records at about 3,000 per second.
    let (brokers, topic, stream) = (env.brokers.clone(), env.topic.clone(), records.clone());
    let producer = std::thread::spawn(move || {
        for chunk in stream.chunks(600) {
            produce_to(&brokers, &topic, chunk);
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    wait_until("all three hosts have partitions and store", Duration::from_secs(60), || {
        hosts.iter().all(|h| env.processor_log(*h).contains("assigned"))
            && env.outcomes_total() > 3_000
    });
    env.kill_processor(hosts[0]);
    let at_kill = env.outcomes_total();
    wait_until("the others go on storing", Duration::from_secs(90), || {
        env.outcomes_total() > at_kill + 6_000
    });
    assert_eq!(env.stop_processor(hosts[1]), 0, "{}", env.processor_log(hosts[1]));
    let at_stop = env.outcomes_total();
    assert!(at_stop < total, "both stops came mid-stream ({at_kill}, {at_stop} of {total})");
    producer.join().unwrap();
    env.wait_drained(6, Duration::from_secs(180));
    let watermarks = env.high_watermarks(6);
    wait_until("the lake on S3 holds every partition", Duration::from_secs(60), || {
        (0..6).all(|p| s3.progress(&env.topic, p) == Some(watermarks[p as usize]))
    });

    let n = ids.len() as i64;
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), n, "rows in events");
    assert_eq!(env.outcomes_total(), total, "P1: one outcome per record");
    let expected: Vec<String> = ids.iter().cloned().collect();
    let pg: Vec<String> = env.pg_events().into_keys().collect();
    assert!(pg == expected, "Postgres holds exactly the accepted events");
    let in_lake = s3.event_ids(&env.topic);
    let missing: Vec<&String> =
        expected.iter().filter(|id| in_lake.binary_search(id).is_err()).take(3).collect();
    assert!(
        in_lake == expected,
        "the Delta table on S3 holds the same, once: {} rows for {} events, missing e.g. {missing:?}",
        in_lake.len(),
        expected.len()
    );
    let summary = s3.deltalake_summary(&env.topic, 6);
    assert_eq!(
        (&summary["rows"], &summary["scanned"], &summary["distinct"]),
        (&serde_json::json!(n), &serde_json::json!(n), &serde_json::json!(n)),
        "Python deltalake: {summary}"
    );
    for (p, high) in watermarks.iter().enumerate() {
        assert_eq!(summary["txn"][p], serde_json::json!(high), "txn of partition {p}: {summary}");
        assert_eq!(env.sink_progress_pg(p as i32), Some(*high), "Postgres, partition {p}");
    }
    assert_eq!(env.stop_processor(hosts[2]), 0);
}
