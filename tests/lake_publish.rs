//! P5 and P2 in the lake: a flush whose log entry was committed but whose files were
//! not yet renamed into their Hive folders (the process was killed in between) is
//! finished when the partition is next assigned, even if no new record ever arrives for
//! it. Before, the files stayed staged and invisible to readers while the lake's
//! progress, and so the committed offsets, counted them.

mod helpers;

use eventline::sinks::lake::commit_log;
use helpers::*;
use std::time::Duration;

#[test]
fn a_committed_but_unpublished_flush_is_published_on_the_next_assignment() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(300, 0, 0, 0);
    env.produce(&records);
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds every accepted event", Duration::from_secs(30), || {
        env.lake_rows() == ids.len() as i64
    });
    assert_eq!(env.stop_processor(p), 0);

    // Undo the publish of one partition's latest entry, as a kill -9 between creating
    // the log entry and renaming its files would have left it.
    let entry = (0..3)
        .filter_map(|p| commit_log::latest(&env.lake, &env.topic, p).unwrap())
        .find(|e| !e.files.is_empty())
        .expect("a committed entry with files");
    let unpublished: u64 = entry.files.iter().map(|f| f.rows).sum();
    for file in &entry.files {
        let staged = env.lake.join(&file.staged);
        std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
        std::fs::rename(env.lake.join(&file.path), &staged).unwrap();
    }
    assert_eq!(env.lake_rows(), ids.len() as i64 - unpublished as i64, "the files are hidden");

    // No new records: only the assignment can finish the publish.
    let p = env.start_processor(&[]);
    wait_until("the staged files are published again", Duration::from_secs(60), || {
        env.lake_rows() == ids.len() as i64
    });
    assert!(entry.files.iter().all(|f| env.lake.join(&f.path).exists()));
    assert!(entry.files.iter().all(|f| !env.lake.join(&f.staged).exists()));
    assert_eq!(env.stop_processor(p), 0);
    let (rows, distinct) = env.lake_counts_duckdb();
    assert_eq!((rows, distinct), (ids.len() as i64, ids.len() as i64), "exactly once");
}
