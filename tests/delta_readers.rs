//! Readers nobody here wrote read the lake as a Delta table and agree with Postgres:
//! Python `deltalake` (rows, partition columns and each partition's txn version),
//! DuckDB's delta extension, and DuckDB's plain `read_parquet` over the Hive folders
//! after a clean stop.

mod helpers;

use helpers::*;

#[test]
fn delta_readers_see_exactly_what_postgres_holds() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(600, 30, 5, 5);
    env.store_all(3, &records, ids.len());
    let n = ids.len() as i64;

    let summary = deltalake_summary(&env.lake, &env.topic, 3);
    assert_eq!(summary["rows"], serde_json::json!(n), "{summary}");
    assert_eq!(
        summary["partition_columns"],
        serde_json::json!(["event_type", "year", "month", "day"])
    );
    let watermarks = env.high_watermarks(3);
    for (partition, high) in watermarks.iter().enumerate() {
        let (pg, lake) = env.sink_progress(partition as i32);
        assert_eq!(summary["txn"][partition], serde_json::json!(high), "{summary}");
        assert_eq!((pg, lake), (Some(*high), Some(*high)), "partition {partition}");
    }
    assert!(summary["version"].as_i64().unwrap() >= 1, "{summary}");

    let lake = env.lake.display().to_string();
    let through_delta = duckdb_delta(&format!(
        "SELECT count(*), count(DISTINCT event_id), md5(string_agg(event_id, ',' ORDER BY event_id)) FROM delta_scan('{lake}')"
    ));
    let through_glob = duckdb(&format!(
        "SELECT count(*), count(DISTINCT event_id), md5(string_agg(event_id, ',' ORDER BY event_id)) \
         FROM read_parquet('{lake}/event_type=*/*/*/*/*.parquet', hive_partitioning = true)"
    ));
    assert_eq!(through_delta, through_glob, "the delta extension and the glob agree");
    let expected_ids: Vec<String> = ids.iter().cloned().collect();
    let expected = duckdb(&format!("SELECT {n}, {n}, md5('{}')", expected_ids.join(",")));
    assert_eq!(through_delta, expected, "exactly the accepted events, once each");

    // The partition columns keep their types through Delta.
    let typed = duckdb_delta(&format!(
        "SELECT DISTINCT event_type, typeof(year), typeof(month), typeof(day) FROM delta_scan('{lake}')"
    ));
    assert_eq!(typed.trim(), "account_created,INTEGER,INTEGER,INTEGER", "{typed}");
    let retractions =
        duckdb_delta(&format!("SELECT count(*) FROM delta_scan('{lake}/_retractions')"));
    assert_eq!(retractions.trim(), "0");
}
