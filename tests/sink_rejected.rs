//! P7 and P1 for a record a sink refuses: among 3,000 events, one passes its contract
//! but breaks a constraint a database administrator added to `events`. That record alone
//! is dead-lettered as `sink_rejected` with Postgres's reason (in `dead_letters` and on
//! the DLQ topic), the rest is stored exactly once in both sinks, no writer fails or
//! restarts, and rebuilding the lake from the log keeps the refused record out of it.

mod helpers;

use eventline::telemetry::supervision_log::{read_entries, EntryKind};
use helpers::*;
use std::time::{Duration, Instant};

const BLOCKED: &str = "acc_blocked";

#[test]
fn a_record_postgres_refuses_is_dead_lettered_alone_and_kept_out_of_both_sinks() {
    let mut env = TestEnv::new(3);
    let p = env.start_processor(&[]);
    wait_until("the migrations ran", Duration::from_secs(30), || {
        env.count(
            "SELECT count(*) AS n FROM information_schema.columns \
             WHERE table_name = 'processed_events' AND column_name = 'sink_rejected'",
        ) == 1
    });
    use diesel::RunQueryDsl;
    diesel::sql_query(format!(
        "ALTER TABLE events ADD CONSTRAINT no_blocked_accounts \
         CHECK (payload->>'account_id' <> '{BLOCKED}')"
    ))
    .execute(&mut env.pg())
    .expect("add the constraint");

    let mut records = valid_records(3000);
    let id = uuid::Uuid::new_v4().to_string();
    records.insert(1500, (None, BLOCKED.into(), Some(account_created(&id, BLOCKED).into())));
    let started = Instant::now();
    env.produce(&records);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds the 3,000 stored events", Duration::from_secs(30), || {
        env.lake_rows() == 3000
    });
    eprintln!("3,001 records with 1 refused by Postgres drained in {:?}", started.elapsed());
    assert_eq!(env.stop_processor(p), 0);

    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 3000);
    assert_eq!(env.lake_counts_duckdb(), (3000, 3000), "the lake holds the same events");
    let blocked_in_lake = duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{}/event_type=*/*/*/*/*.parquet') WHERE payload LIKE '%{BLOCKED}%'",
        env.lake.display()
    ));
    assert_eq!(blocked_in_lake.trim(), "0", "the refused record is kept out of the lake");
    let outcomes = env.outcomes();
    assert_eq!(outcomes.get("accepted"), Some(&3000), "{outcomes:?}");
    assert_eq!(outcomes.get("dead_letter"), Some(&1), "{outcomes:?}");
    assert_eq!(env.outcomes_total(), 3001, "one outcome per record");
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM dead_letters WHERE error_class = 'sink_rejected' \
             AND event_type = 'account_created' AND error_message LIKE '%no_blocked_accounts%' \
             AND convert_from(record_value, 'UTF8')::jsonb->>'event_id' = '{id}'"
        )),
        1,
        "the dead letter names the constraint and carries the event"
    );
    assert_eq!(
        env.count("SELECT count(*) AS n FROM processed_events WHERE sink_rejected IS NOT NULL"),
        1,
        "the refusal is remembered for replays"
    );
    let dlq = env.read_topic(&env.dlq_topic, 1);
    let published = dlq
        .iter()
        .filter(|(_, _, value)| {
            value.as_deref().is_some_and(|v| String::from_utf8_lossy(v).contains(&id))
        })
        .count();
    assert_eq!(published, 1, "the refused record is on the DLQ topic");
    let entries = read_entries(&env.supervision_log).unwrap();
    let failures = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::Failure | EntryKind::Restart))
        .count();
    assert_eq!(failures, 0, "no writer failed or restarted: {entries:#?}");
    assert_eq!(entries.iter().filter(|e| e.kind == EntryKind::Rejected).count(), 1);

    // Rebuild the lake from the log: the dedup decision remembers the refusal.
    std::fs::remove_dir_all(&env.lake).expect("delete the lake");
    let p = env.start_processor(&[]);
    wait_until("the lake is rebuilt", Duration::from_secs(60), || env.lake_rows() == 3000);
    env.wait_drained(3, Duration::from_secs(30));
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(env.lake_counts_duckdb(), (3000, 3000), "rebuilt without the refused record");
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 3000);
    assert_eq!(env.outcomes_total(), 3001, "the replay added no outcome");
}

/// Rows of other kinds than events can be refused too: a dead letter and an entity's
/// tombstone that break constraints added to their tables are each stored as a dead
/// letter at their coordinates (bare, when the first one is refused as well), the rest
/// is stored, and no writer fails or restarts.
#[test]
fn a_refused_dead_letter_or_tombstone_is_still_recorded_and_the_rest_stored() {
    let mut env = TestEnv::new(3);
    let p = env.start_processor(&[]);
    wait_until("the migrations ran", Duration::from_secs(30), || {
        env.count("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'entity_tombstones'") == 1
    });
    use diesel::RunQueryDsl;
    for constraint in [
        "ALTER TABLE dead_letters ADD CONSTRAINT no_not_json CHECK (error_class <> 'not_json')",
        "ALTER TABLE entity_tombstones ADD CONSTRAINT no_blocked CHECK (entity_key <> 'acc_gone')",
    ] {
        diesel::sql_query(constraint).execute(&mut env.pg()).expect("add the constraint");
    }
    let mut records = valid_records(2000);
    records.insert(700, (Some(1), "junk".into(), Some(b"{not json".to_vec())));
    records.insert(1400, (Some(2), "acc_gone".into(), None));
    env.produce(&records);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds the 2,000 events", Duration::from_secs(30), || {
        env.lake_rows() == 2000
    });
    assert_eq!(env.stop_processor(p), 0);

    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 2000);
    assert_eq!(env.outcomes().get("dead_letter"), Some(&2), "{:?}", env.outcomes());
    assert_eq!(env.outcomes_total(), 2002, "one outcome per record");
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM dead_letters WHERE error_class = 'sink_rejected' \
             AND record_value IS NULL AND (error_message LIKE '%no_not_json%' OR error_message LIKE '%no_blocked%')"
        ),
        2,
        "each refused row is a dead letter at its coordinates, naming the constraint"
    );
    assert_eq!(env.count("SELECT count(*) AS n FROM entity_tombstones"), 0);
    assert_eq!(env.supervision_failures(), Vec::<String>::new(), "no writer failed or restarted");
}
