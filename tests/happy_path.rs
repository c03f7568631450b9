//! N events in: N rows in `events`, N records in the lake (read with the parquet crate
//! and with DuckDB), offsets committed to the end, clean exit on SIGTERM.

mod helpers;

use helpers::*;
use parquet::file::reader::{FileReader, SerializedFileReader};
use std::time::Duration;

#[test]
fn every_event_lands_once_in_postgres_and_once_in_the_lake() {
    let mut env = TestEnv::new(3);
    let n = 600;
    env.produce(&valid_records(n));
    let p = env.start_processor(&[]);

    wait_until("all events are in Postgres", Duration::from_secs(60), || {
        env.count("SELECT count(*) AS n FROM events") == n as i64
    });
    wait_until("all events are in the lake", Duration::from_secs(60), || {
        env.lake_rows() == n as i64
    });
    let end = env.high_watermarks(3);
    wait_until("offsets are committed to the end", Duration::from_secs(30), || {
        env.committed(3) == end
    });

    assert_eq!(env.lake_counts_duckdb(), (n as i64, n as i64), "DuckDB sees each event once");
    let parquet_rows: i64 = lake_files(&env.lake)
        .iter()
        .map(|f| {
            SerializedFileReader::new(std::fs::File::open(f).unwrap())
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum();
    assert_eq!(parquet_rows, n as i64, "the parquet crate sees the same rows");
    assert_eq!(env.outcomes().get("accepted"), Some(&(n as i64)));
    assert_eq!(env.count("SELECT count(*) AS n FROM processed_events"), n as i64);
    let hive = duckdb(&format!(
        "SELECT event_type, year, month, day, count(*) FROM read_parquet('{}/event_type=*/*/*/*/*.parquet', hive_partitioning=true) GROUP BY ALL",
        env.lake.display()
    ));
    assert_eq!(
        hive.trim(),
        format!("account_created,2026,11,22,{n}"),
        "Hive partitions by the event's UTC date"
    );

    assert_eq!(
        env.stop_processor(p),
        0,
        "SIGTERM exits 0 after flushing:\n{}",
        env.processor_log(p)
    );
}
