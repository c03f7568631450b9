//! Small files: `eventline lake compact` merges them while a processor keeps writing,
//! and `eventline lake vacuum` deletes the replaced ones once the retention allows.
//! Every event stays exactly once in the Delta table (read by DuckDB's delta extension
//! and Python `deltalake`), each partition's progress (txn) is untouched, a reader of
//! the version before the compaction still reads it, a processor restarting meanwhile
//! does not take the replaced files for orphans, and after the vacuum plain
//! `read_parquet` over the folders gives the same rows again.

mod helpers;

use helpers::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn parquet_files_on_disk(lake: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|e| e == "parquet")
                && path.to_string_lossy().contains("event_type=")
            {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(lake, &mut n);
    n
}

fn delta_counts(lake: &Path) -> (i64, i64) {
    let out = duckdb_delta(&format!(
        "SELECT count(*), count(DISTINCT event_id) FROM delta_scan('{}')",
        lake.display()
    ));
    let mut parts = out.trim().split(',').map(|v| v.trim().parse::<i64>().expect("a number"));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// Rows of the table at an older version, read by Python `deltalake` (time travel).
fn rows_at_version(lake: &Path, version: u64) -> i64 {
    let script = "import sys\nfrom deltalake import DeltaTable\nfrom deltalake import QueryBuilder\nt = DeltaTable(sys.argv[1], version=int(sys.argv[2]))\nprint(QueryBuilder().register('t', t).execute('SELECT count(*) AS n FROM t').read_all()['n'][0].as_py())";
    let out = Command::new("python3")
        .args(["-c", script, &lake.display().to_string(), &version.to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "deltalake: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a count")
}

#[test]
fn compaction_merges_small_files_under_a_running_processor_and_vacuum_deletes_the_old_ones() {
    let mut env = TestEnv::new(2);
    // Small files on purpose: traffic in 20 bursts, each flushed as soon as it ends.
    let small = [("EVENTLINE__LAKE__IDLE_FLUSH_MS", "100")];
    let p = env.start_processor(&small);
    for burst in 1..=20 {
        env.produce(&valid_records(100));
        wait_until("the burst is in the lake", Duration::from_secs(60), || {
            env.lake_rows() == burst * 100
        });
    }
    let before = deltalake_summary(&env.lake, &env.topic, 2);
    let version_before = before["version"].as_u64().expect("a version");
    let files_before = lake_files(&env.lake).len();
    assert!(files_before >= 40, "small files to merge: {files_before}");

    // Compact while more traffic arrives and the processor keeps committing.
    env.produce(&valid_records(2000));
    let (code, stdout, stderr) =
        env.eventline_output(&["lake", "compact", "--target-mb", "64", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    eprintln!("compaction: {report}");
    assert!(report["files_replaced"].as_u64().unwrap() >= 40, "{report}");
    assert!(report["files_after"].as_u64() < report["files_before"].as_u64(), "{report}");

    env.wait_drained(2, Duration::from_secs(90));
    wait_until("the table holds all 4,000", Duration::from_secs(60), || {
        delta_counts(&env.lake) == (4000, 4000)
    });
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 4000);
    let after = deltalake_summary(&env.lake, &env.topic, 2);
    assert_eq!((after["rows"].as_i64(), after["distinct"].as_i64()), (Some(4000), Some(4000)));
    let pg: Vec<serde_json::Value> =
        (0..2).map(|p| serde_json::json!(env.sink_progress_pg(p))).collect();
    assert_eq!(
        after["txn"],
        serde_json::json!(pg),
        "the txn versions are the partitions' progress"
    );
    // A reader of the version before the compaction still reads it.
    assert_eq!(rows_at_version(&env.lake, version_before), 2000);

    // A restart meanwhile keeps the replaced files: they are tombstones, not orphans.
    let on_disk = parquet_files_on_disk(&env.lake);
    assert_eq!(env.stop_processor(p), 0);
    let p = env.start_processor(&small);
    wait_until("the restarted processor has partitions", Duration::from_secs(60), || {
        env.processor_log(p).contains("assigned")
    });
    assert_eq!(parquet_files_on_disk(&env.lake), on_disk, "{}", env.processor_log(p));
    assert_eq!(rows_at_version(&env.lake, version_before), 2000);
    assert_eq!(env.stop_processor(p), 0);

    // The default retention keeps them; a zero retention deletes them.
    let (code, stdout, stderr) = env.eventline_output(&["lake", "vacuum", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"files_deleted\":[]"), "7 days of retention: {stdout}");
    let (code, stdout, stderr) =
        env.eventline_output(&["lake", "vacuum", "--retention", "0s", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let vacuumed: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    let deleted = vacuumed["files_deleted"].as_array().expect("a list").len();
    assert!(deleted as u64 >= report["files_replaced"].as_u64().unwrap(), "{vacuumed}");
    assert_eq!(parquet_files_on_disk(&env.lake), lake_files(&env.lake).len());
    assert_eq!(env.lake_counts_duckdb(), (4000, 4000), "plain read_parquet after the vacuum");
    assert_eq!(delta_counts(&env.lake), (4000, 4000));
    eprintln!(
        "lake files: {files_before} before compaction, {} after, {on_disk} on disk until the \
         vacuum deleted {deleted}",
        lake_files(&env.lake).len()
    );
}

#[test]
fn compaction_and_vacuum_work_on_a_lake_in_s3() {
    let mut env = TestEnv::new(2);
    let s3 = S3Lake::new();
    let mut settings: Vec<(String, String)> = s3.env();
    settings.push(("EVENTLINE__LAKE__IDLE_FLUSH_MS".into(), "100".into()));
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let p = env.start_processor(&extra);
    for burst in 1..=8 {
        env.produce(&valid_records(100));
        wait_until("the burst is in the S3 lake", Duration::from_secs(60), || {
            s3.event_ids(&env.topic).len() == burst * 100
        });
    }
    assert_eq!(env.stop_processor(p), 0);
    let before = s3.deltalake_summary(&env.topic, 2);

    let (code, stdout, stderr) = env.eventline_with(&["lake", "compact", "--json"], &extra);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert!(report["files_replaced"].as_u64().unwrap() >= 16, "{report}");
    assert!(report["files_after"].as_u64().unwrap() <= 2 * 4, "{report}");

    let (code, stdout, stderr) =
        env.eventline_with(&["lake", "vacuum", "--retention", "0s", "--json"], &extra);
    assert_eq!(code, 0, "{stderr}");
    let vacuumed: serde_json::Value = serde_json::from_str(stdout.trim()).expect("a JSON report");
    assert_eq!(
        vacuumed["files_deleted"].as_array().map(Vec::len),
        report["files_replaced"].as_u64().map(|n| n as usize),
        "{vacuumed}"
    );
    let after = s3.deltalake_summary(&env.topic, 2);
    assert_eq!((after["rows"].as_i64(), after["distinct"].as_i64()), (Some(800), Some(800)));
    assert_eq!(after["txn"], before["txn"], "compaction leaves the progress as it was");
    let ids = s3.event_ids(&env.topic);
    assert_eq!(ids.len(), 800);
    assert_eq!(ids.iter().collect::<std::collections::BTreeSet<_>>().len(), 800);
}
