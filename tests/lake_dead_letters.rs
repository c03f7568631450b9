//! The dead letters land in the lake too, as a Delta table of their own
//! (`lake/_dead_letters`), exactly once, with the raw bytes, the reason and the
//! coordinates: after kill -9 mid-stream and a restart, Python `deltalake` and DuckDB's
//! delta extension read the same dead letters as Postgres's `dead_letters`, byte for
//! byte.

mod helpers;

use helpers::*;
use std::process::Command;
use std::time::Duration;

/// (partition, offset, error_class, hex of the value) of every row of the dead letters'
/// table, sorted, read with Python `deltalake`.
fn lake_dead_letters(table: &std::path::Path) -> Vec<(i64, i64, String, String)> {
    let script = "import json, sys\nfrom deltalake import DeltaTable, QueryBuilder\nt = DeltaTable(sys.argv[1])\nr = QueryBuilder().register('d', t).execute('SELECT \"partition\", \"offset\", error_class, encode(record_value, \\'hex\\') AS v FROM d').read_all()\nrows = [[r['partition'][i].as_py(), r['offset'][i].as_py(), r['error_class'][i].as_py(), r['v'][i].as_py()] for i in range(len(r['offset']))]\nprint(json.dumps(sorted(rows)))";
    let out = Command::new("python3")
        .args(["-c", script, &table.display().to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "deltalake: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON rows")
}

fn pg_dead_letters(env: &TestEnv) -> Vec<(i64, i64, String, String)> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        partition: i32,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        offset: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        error_class: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        v: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT \"partition\", \"offset\", error_class, encode(record_value, 'hex') AS v \
         FROM dead_letters",
    )
    .load(&mut env.pg())
    .expect("dead letters read");
    let mut rows: Vec<_> =
        rows.into_iter().map(|r| (i64::from(r.partition), r.offset, r.error_class, r.v)).collect();
    rows.sort();
    rows
}

#[test]
fn dead_letters_land_once_in_a_delta_table_of_their_own_through_kill_9() {
    let mut env = TestEnv::new(2);
    let (mut records, _) = mixed_records(3000, 0, 0, 150);
    // Dead letters all through the stream, so the kill falls among them.
    use rand::seq::SliceRandom;
    records.shuffle(&mut rand::thread_rng());
    env.produce(&records);
    let small = [("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "100")];
    let p = env.start_processor(&small);
    wait_until("the first records are stored", Duration::from_secs(60), || {
        env.count("SELECT count(*) AS n FROM events") > 300
    });
    env.kill_processor(p);
    let p = env.start_processor(&small);
    env.wait_drained(2, Duration::from_secs(120));
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    let pg = pg_dead_letters(&env);
    assert_eq!(pg.len(), 150, "Postgres holds every dead letter");
    let table = env.lake.join("_dead_letters");
    let lake = lake_dead_letters(&table);
    assert_eq!(lake, pg, "the lake's dead letters are Postgres's, byte for byte, once each");
    let counted = duckdb_delta(&format!(
        "SELECT count(*), count(DISTINCT \"offset\" * 10 + \"partition\") FROM delta_scan('{}')",
        table.display()
    ));
    assert_eq!(counted.trim(), "150,150");
    // The events table is untouched by them.
    assert_eq!(env.lake_counts_duckdb(), (3000, 3000));
}
