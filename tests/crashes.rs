//! Exactly once in both sinks whatever happens to the process or the database (P2):
//! a Postgres crash mid-run, kill -9 at random moments (also during a stream of
//! invalidations and deletions: validity and deletions right in both sinks), a second
//! process in the group.

mod helpers;

use eventline::telemetry::supervision_log::{read_entries, EntryKind};
use helpers::*;
use rand::Rng;
use std::time::Duration;

fn assert_exactly_once(env: &TestEnv, accepted: usize, total: usize) {
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), accepted as i64, "rows in events");
    assert_eq!(
        env.count("SELECT count(*) AS n FROM processed_events"),
        accepted as i64,
        "first sightings"
    );
    assert_eq!(
        env.lake_counts_duckdb(),
        (accepted as i64, accepted as i64),
        "lake rows and distinct ids"
    );
    assert_eq!(env.outcomes_total(), total as i64, "P1: one outcome per record");
    let snapshot = env.snapshot();
    assert_eq!(
        snapshot.lake_ids_hash, snapshot.pg_ids_hash,
        "the lake and Postgres hold the same events"
    );
}

/// Four times: starts a processor, waits until it stores records (a killed member keeps
/// its partitions until the session timeout), and kills it with SIGKILL at a random
/// moment. Returns the outcome total at each kill.
fn kill_four_times_while_storing(env: &mut TestEnv) -> Vec<i64> {
    let mut rng = rand::thread_rng();
    let mut killed_at = Vec::new();
    for _ in 0..4 {
        let before = env.outcomes_total();
        let p = env.start_processor(&[]);
        wait_until("the restarted processor stores records", Duration::from_secs(90), || {
            env.outcomes_total() > before
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..1_000)));
        env.kill_processor(p);
        killed_at.push(env.outcomes_total());
    }
    killed_at
}

#[test]
fn a_postgres_crash_mid_run_loses_nothing_and_duplicates_nothing() {
    let pg = PrivatePostgres::start();
    let mut env = TestEnv::new(3);
    env.use_database(&pg.url);
    let (first, ids_a) = mixed_records(3_000, 100, 10, 10);
    let (second, ids_b) = mixed_records(3_000, 100, 10, 10);
    env.produce(&first);
    let p = env.start_processor(&[("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "200")]);
    wait_until("some events are in Postgres", Duration::from_secs(60), || {
        env.count("SELECT count(*) AS n FROM events") > 0
    });

    pg.crash();
    env.produce(&second);
    wait_until("the processor notices the outage", Duration::from_secs(30), || {
        let log = env.processor_log(p);
        log.contains("failed, retrying")
            || log.contains("Cannot read")
            || read_entries(&env.supervision_log)
                .unwrap_or_default()
                .iter()
                .any(|e| e.kind == EntryKind::Failure)
    });
    std::thread::sleep(Duration::from_secs(2)); // keep the database down a little longer: an outage, not a blip
    pg.start_again();

    env.wait_drained(3, Duration::from_secs(120));
    wait_until("the lake holds every accepted event", Duration::from_secs(30), || {
        env.lake_rows() == (ids_a.len() + ids_b.len()) as i64
    });
    assert_exactly_once(&env, ids_a.len() + ids_b.len(), first.len() + second.len());
    assert_eq!(
        env.stop_processor(p),
        0,
        "still running and exits cleanly:\n{}",
        env.processor_log(p)
    );
}

#[test]
fn kill_9_four_times_at_random_moments_during_a_100k_stream_stores_each_exactly_once() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(95_000, 4_000, 500, 500);
    let total = records.len() as i64;
    // The stream: 100,000 records at about 3,000 per second, while the processor is killed.
    let (brokers, topic, stream) = (env.brokers.clone(), env.topic.clone(), records.clone());
    let producer = std::thread::spawn(move || {
        for chunk in stream.chunks(1_000) {
            produce_to(&brokers, &topic, chunk);
            std::thread::sleep(Duration::from_millis(300)); // pacing of the stream
        }
    });
    let killed_at = kill_four_times_while_storing(&mut env);
    producer.join().unwrap();
    assert!(
        killed_at.windows(2).all(|w| w[0] < w[1]),
        "each kill hit a working process: {killed_at:?}"
    );
    assert!(
        killed_at.iter().all(|k| *k < total),
        "every kill happened mid-stream: {killed_at:?} of {total}"
    );
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(180));
    wait_until("the lake holds every accepted event", Duration::from_secs(60), || {
        env.lake_rows() == ids.len() as i64
    });
    assert_exactly_once(&env, ids.len(), records.len());
    let outcomes = env.outcomes();
    assert_eq!(
        (
            outcomes["accepted"],
            outcomes["duplicate"],
            outcomes["conflict"],
            outcomes["dead_letter"]
        ),
        (95_000, 4_000, 500, 500)
    );
    assert_eq!(env.stop_processor(p), 0);
}

#[test]
fn two_processes_in_one_group_with_one_stopped_mid_run_store_each_event_once() {
    let mut env = TestEnv::new(4);
    let (records, ids) = mixed_records(20_000, 500, 50, 50);
    let a = env.start_processor(&[("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "500")]);
    let b = env.start_processor(&[("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "500")]);
    env.produce(&records[..10_000]);
    wait_until("both processes have partitions and are storing", Duration::from_secs(60), || {
        env.processor_log(a).contains("assigned")
            && env.processor_log(b).contains("assigned")
            && env.outcomes_total() > 2_000
    });
    assert_eq!(env.stop_processor(a), 0);
    env.produce(&records[10_000..]);
    env.wait_drained(4, Duration::from_secs(120));
    wait_until("the lake holds every accepted event", Duration::from_secs(60), || {
        env.lake_rows() == ids.len() as i64
    });
    assert_exactly_once(&env, ids.len(), records.len());
    assert_eq!(env.stop_processor(b), 0);
}

#[test]
fn kill_9_four_times_during_a_stream_of_corrections_and_deletes_keeps_both_sinks_right() {
    use eventline::cli::drill::against::read_sent;
    use eventline::stages::contract::{Contracts, Limits};
    let mut env = TestEnv::new(3);
    let sent_file = env.dir().join("sent.jsonl");
    // 60,000 generated records at 2,000 per second mixing every kind: duplicates,
    // conflicts, invalid records, late events, invalidations and deletions.
    let mut producer = std::process::Command::new(binary());
    producer
        .args(["produce", "--generate", "60000", "--rate", "2000", "--seed", "9"])
        .args(["--duplicate-ratio", "0.03", "--conflict-ratio", "0.01", "--invalid-ratio", "0.01"])
        .args(["--late-ratio", "0.05", "--invalidate-ratio", "0.02", "--delete-ratio", "0.01"])
        .arg("--write-jsonl")
        .arg(&sent_file)
        .current_dir(repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in env.processor_env() {
        producer.env(k, v);
    }
    let mut producer = producer.spawn().expect("eventline produce starts");
    let killed_at = kill_four_times_while_storing(&mut env);
    assert!(producer.wait().expect("produce ran").success(), "every record was delivered");
    assert!(killed_at.iter().all(|k| *k < 60_000), "every kill hit mid-stream: {killed_at:?}");
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(180));

    let contracts =
        Contracts::load(&repo().join("contracts"), Limits::default()).expect("contracts load");
    let sent = read_sent(&std::fs::read_to_string(&sent_file).unwrap(), &contracts);
    assert!(sent.invalidated.len() > 500 && sent.deleted.len() > 300, "{sent:?}");
    let expected: std::collections::BTreeMap<String, bool> =
        sent.to_hold().map(|id| (id.to_string(), !sent.invalidated.contains(id))).collect();
    wait_until("the lake holds every event", Duration::from_secs(60), || {
        env.lake_events().len() == expected.len()
    });
    env.assert_sinks_hold(&expected);
    let (rows, distinct) = env.lake_counts_duckdb();
    assert_eq!(rows, distinct, "no event twice in the lake files");
    let outcomes = env.outcomes();
    let get = |o: &str| outcomes.get(o).copied().unwrap_or(0);
    assert_eq!(env.outcomes_total(), 60_000, "P1: one outcome per record");
    assert_eq!(
        (get("duplicate"), get("conflict"), get("invalidated"), get("dead_letter")),
        (
            sent.duplicates as i64,
            sent.conflicts as i64,
            sent.invalidated.len() as i64,
            (sent.invalid + sent.tombstones) as i64
        ),
        "{outcomes:?}"
    );
    assert_eq!(
        get("accepted") + get("deleted"),
        (sent.expected.len() + sent.deleted.len()) as i64,
        "an event deleted later counts accepted or deleted, never both: {outcomes:?}"
    );
    assert_eq!(env.stop_processor(p), 0);
}
