//! P2 and liveness under a zombie. Process A is frozen (SIGSTOP) while one of its
//! Postgres sessions sits inside a writer transaction that has already written rows.
//! Process B, in the same group, takes A's partitions once A's session times out and
//! stores everything produced before the takeover within a bounded time, while A is
//! still frozen: the server rolls A's transaction back (`idle_in_transaction_timeout`)
//! and B's writes that waited on its locks fail fast (`lock_timeout`) and retry. Then A
//! is woken (SIGCONT): its late writes are fenced in both sinks (the lake's is a
//! `fenced` entry, not a restart) and every event is stored exactly once.

mod helpers;

use eventline::telemetry::supervision_log::{read_entries, EntryKind};
use helpers::*;
use std::time::{Duration, Instant};

#[test]
fn a_frozen_process_holds_no_one_hostage_and_its_late_writes_are_fenced() {
    frozen_process(None);
}

#[test]
fn the_same_with_the_lake_in_s3() {
    frozen_process(Some(S3Lake::new()));
}

/// (rows, distinct event ids) in the lake: DuckDB over the local folder, or eventline's
/// reader of the Delta table in the bucket.
fn lake_counts(env: &TestEnv, s3: &Option<S3Lake>) -> (i64, i64) {
    match s3 {
        None if env.lake_rows() == 0 => (0, 0),
        None => env.lake_counts_duckdb(),
        Some(s3) => {
            let ids = s3.event_ids(&env.topic);
            let distinct = ids.iter().collect::<std::collections::BTreeSet<_>>().len();
            (ids.len() as i64, distinct as i64)
        }
    }
}

fn frozen_process(s3: Option<S3Lake>) {
    let mut env = TestEnv::new(3);
    let before_takeover = valid_records(3000);
    env.produce(&before_takeover);
    let bucket: Vec<(String, String)> = s3.as_ref().map(S3Lake::env).unwrap_or_default();
    let b_settings: Vec<(&str, &str)> =
        bucket.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // A: every transaction waits 3 s after its rows; the lake holds its buffers (60 s
    // files, no idle flush), so A has late writes in both sinks when it wakes.
    let mut a_settings = b_settings.clone();
    a_settings.extend([
        ("EVENTLINE__FAULTS__POSTGRES_PAUSE_IN_TRANSACTION_MS", "3000"),
        ("EVENTLINE__LAKE__MAX_FILE_AGE_MS", "60000"),
        ("EVENTLINE__LAKE__IDLE_FLUSH_MS", "0"),
    ]);
    let a = env.start_processor(&a_settings);
    let in_transaction = "SELECT count(*) AS n FROM pg_stat_activity \
        WHERE datname = current_database() AND state = 'idle in transaction' \
        AND pid <> pg_backend_pid()";
    // Only once A's lake writer has buffered a batch (the first write loads the Delta
    // table, which can take longer than Postgres takes to open its transaction): A
    // must hold a late lake write when it wakes. This also rules out taking one of A's
    // migrations for a writer transaction.
    wait_until("A's lake writer holds a batch", Duration::from_secs(60), || {
        env.sink_writes(a, "lake") >= 1
    });
    wait_until("A is inside a writer transaction", Duration::from_secs(60), || {
        env.count(in_transaction) >= 1
    });
    env.signal_processor(a, "STOP");
    let frozen = Instant::now();

    let b = env.start_processor(&b_settings);
    wait_until("B stored everything produced before the takeover", Duration::from_secs(90), || {
        env.count("SELECT count(*) AS n FROM events") == 3000 && lake_counts(&env, &s3).0 == 3000
    });
    let takeover = frozen.elapsed();
    assert_eq!(env.count(in_transaction), 0, "the server rolled A's frozen transaction back");
    // More traffic while A is still frozen: B alone stores it.
    env.produce(&valid_records(1000));
    wait_until("B stored the traffic sent while A is frozen", Duration::from_secs(60), || {
        env.count("SELECT count(*) AS n FROM events") == 4000
    });

    env.signal_processor(a, "CONT");
    env.produce(&valid_records(1000));
    env.wait_drained(3, Duration::from_secs(120));
    wait_until("the lake holds every event", Duration::from_secs(60), || {
        lake_counts(&env, &s3).0 == 5000
    });
    let a_pid = env.processor_pid(a);
    assert_eq!(env.stop_processor(b), 0, "{}", env.processor_log(b));
    assert_eq!(env.stop_processor(a), 0, "{}", env.processor_log(a));

    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 5000);
    assert_eq!(lake_counts(&env, &s3), (5000, 5000), "each event once in the lake");
    let outcomes = env.outcomes();
    assert_eq!(outcomes.get("accepted"), Some(&5000), "{outcomes:?}");
    assert_eq!(env.outcomes_total(), 5000, "one outcome per record");
    let entries = read_entries(&env.supervision_log).unwrap();
    let a_lake: Vec<_> =
        entries.iter().filter(|e| e.pid == a_pid && e.actor == "parquet_writer").collect();
    assert!(
        a_lake.iter().any(|e| e.kind == EntryKind::Fenced),
        "A's late lake flush was fenced: {a_lake:#?}"
    );
    assert!(
        !a_lake.iter().any(|e| matches!(e.kind, EntryKind::Failure | EntryKind::Restart)),
        "a fenced lake flush is not a failure: {a_lake:#?}"
    );
    for e in a_lake.iter().filter(|e| e.kind == EntryKind::Fenced) {
        eprintln!("A's lake writer: fenced: {}", e.cause.as_deref().unwrap_or(""));
    }
    eprintln!(
        "B stored the 3,000 events produced before the takeover {takeover:?} after A froze \
         (session timeout 6 s, idle-in-transaction limit 10 s, lock timeout 5 s)"
    );
}
