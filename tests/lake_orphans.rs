//! P5 and P2 in the lake, a Delta table: the files of a flush that wrote them and then
//! died before its commit are never in the table, and are removed from the disk once
//! no commit can hold them any more: at the next start when they lie below the
//! partition's progress, otherwise once this process's own commits pass them (they
//! might be a flush in progress in another process until then).

mod helpers;

use helpers::*;
use std::path::PathBuf;
use std::time::Duration;

#[test]
fn files_of_a_flush_that_never_committed_are_removed_and_never_read() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(300, 0, 0, 0);
    env.store_all(3, &records, ids.len());

    // Two files no commit names, as a kill -9 between writing and committing leaves
    // them: a copy of a committed range (below the progress), and one at the progress.
    let committed = lake_files(&env.lake).into_iter().next().expect("a data file");
    let name = committed.file_name().unwrap().to_string_lossy().into_owned();
    let origin = eventline::sinks::lake::layout::parse_file_name(&name).expect("our name");
    let folder = committed.parent().unwrap().to_path_buf();
    let below = folder.join(eventline::sinks::lake::layout::data_file_name(
        &origin.topic,
        origin.partition,
        origin.first,
        origin.last,
        "crashed0below",
    ));
    std::fs::copy(&committed, &below).unwrap();
    let progress = env.sink_progress(origin.partition).1.expect("lake progress");
    let at: PathBuf = folder.join(eventline::sinks::lake::layout::data_file_name(
        &origin.topic,
        origin.partition,
        progress,
        progress + 5,
        "crashed0at",
    ));
    std::fs::copy(&committed, &at).unwrap();
    let copied = 2 * rows_in(&committed);
    assert_eq!(env.lake_rows(), ids.len() as i64 + copied, "a glob reader sees the orphans");
    assert_eq!(
        lake_files(&env.lake).len(),
        lake_files(&env.lake).iter().filter(|f| **f != below && **f != at).count(),
        "the Delta table never names them"
    );

    // The next start removes the one below the progress; the one at it might still be
    // committed by someone, until this process's own commit on the partition passes it.
    let p = env.start_processor(&[]);
    wait_until("the file below the progress is removed", Duration::from_secs(30), || {
        !below.exists()
    });
    assert!(at.exists(), "a file at the progress may be a flush in progress elsewhere");
    let (more, more_ids) = mixed_records(300, 0, 0, 0);
    env.produce(&more);
    env.wait_drained(3, Duration::from_secs(60));
    let total = (ids.len() + more_ids.len()) as i64;
    wait_until("the lake holds every event", Duration::from_secs(30), || {
        env.sink_progress(origin.partition).1 > Some(progress) && !at.exists()
    });
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(env.lake_counts_duckdb(), (total, total), "exactly once, orphans gone");
}

fn rows_in(file: &std::path::Path) -> i64 {
    let out = duckdb(&format!("SELECT count(*) FROM read_parquet('{}')", file.display()));
    out.trim().parse().expect("a count")
}
