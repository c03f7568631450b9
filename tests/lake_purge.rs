//! `eventline lake purge` (erasure requests): after tombstones deleted some events, the
//! purge rewrites the lake files that held them, so no deleted event is left in any
//! file, while every other row reads exactly as before and the lake's progress and
//! exactly-once hold (a restarted processor adds nothing and loses nothing).

mod helpers;

use helpers::*;
use std::time::Duration;

#[test]
fn purge_erases_deleted_events_from_every_file_and_leaves_the_rest_unchanged() {
    let mut env = TestEnv::new(2);
    let records = valid_records(300);
    let id = |i: usize| event_id_of(&records[i]);
    env.produce(&records);
    let p = env.start_processor(&[]);
    env.wait_drained(2, Duration::from_secs(60));
    let deleted: Vec<usize> = (0..300).step_by(10).collect();
    let tombstones: Vec<TestRecord> = deleted.iter().map(|i| (None, id(*i), None)).collect();
    env.produce(&tombstones);
    env.wait_drained(2, Duration::from_secs(60));
    wait_until("the lake has the 30 retractions", Duration::from_secs(30), || {
        env.lake_events().len() == 270
    });
    assert_eq!(env.lake_counts_duckdb().0, 300, "before the purge the files still hold them");
    let lake = env.lake.display().to_string();
    let others = |lake: &str| {
        duckdb(&format!(
            "SELECT md5(string_agg(event_id || payload || \"offset\" || occurred_at, ',' ORDER BY event_id)) \
             FROM read_parquet('{lake}/event_type=*/*/*/*/*.parquet') \
             WHERE event_id NOT IN (SELECT event_id FROM read_parquet('{lake}/_retractions/*.retractions'))"
        ))
    };
    let rows_before = others(&lake);

    let (code, dry, err) = env.eventline_output(&["lake", "purge", "--dry-run", "--root", &lake]);
    assert_eq!(code, 0, "{err}");
    assert!(dry.contains("would rewrite") && dry.contains("30 rows to erase"), "{dry}");
    assert_eq!(env.lake_counts_duckdb().0, 300, "a dry run changes nothing");
    let (code, out, err) = env.eventline_output(&["lake", "purge", "--root", &lake]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("30 deleted event ids known") && out.contains("30 rows erased"), "{out}");

    assert_eq!(env.lake_counts_duckdb(), (270, 270), "no deleted event in any lake file");
    assert_eq!(others(&lake), rows_before, "every other row reads exactly as before");
    for i in &deleted {
        let hits = duckdb(&format!(
            "SELECT count(*) FROM read_parquet('{lake}/event_type=*/*/*/*/*.parquet') WHERE event_id = '{}'",
            id(*i)
        ));
        assert_eq!(hits.trim(), "0");
    }
    let (code, again, err) = env.eventline_output(&["lake", "purge", "--root", &lake]);
    assert_eq!(code, 0, "{err}");
    assert!(again.contains("0 rows erased"), "a second purge finds nothing: {again}");

    // The running processor never noticed; after a restart it adds and loses nothing.
    env.produce(&valid_records(10));
    env.wait_drained(2, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0);
    let p = env.start_processor(&[]);
    wait_until("the 10 new events are in the lake", Duration::from_secs(60), || {
        env.lake_events().len() == 280
    });
    assert_eq!(env.lake_counts_duckdb(), (280, 280));
    assert_eq!(env.lake_events(), env.pg_events(), "the lake and Postgres agree");
    assert_eq!(env.stop_processor(p), 0);
}
