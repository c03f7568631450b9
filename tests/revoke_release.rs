//! On revoke, a process makes what its sinks hold durable and commits it before it
//! releases the partitions, so the next owner starts where it stopped. Both processes
//! here keep lake buffers for a minute (file age 60 s, no idle flush): only the release
//! can flush them in time.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

#[test]
fn revoked_partitions_are_flushed_and_committed_before_they_are_released() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(3_000, 0, 0, 0);
    env.produce(&records);
    let hold =
        [("EVENTLINE__LAKE__MAX_FILE_AGE_MS", "60000"), ("EVENTLINE__LAKE__IDLE_FLUSH_MS", "0")];
    let a = env.start_processor(&hold);
    wait_until("Postgres holds every event", Duration::from_secs(60), || {
        env.outcomes_total() == records.len() as i64
    });
    assert_eq!(env.lake_rows(), 0, "the lake still holds its buffers");

    let joined = Instant::now();
    let b = env.start_processor(&hold);
    let end = env.high_watermarks(3);
    wait_until("the lake has everything and it is committed", Duration::from_secs(20), || {
        env.lake_rows() == ids.len() as i64 && env.committed(3) == end
    });
    let took = joined.elapsed();
    assert!(
        env.processor_log(a).contains("released: stored and committed"),
        "{}",
        env.processor_log(a)
    );
    assert_eq!(env.lake_counts_duckdb(), (ids.len() as i64, ids.len() as i64));
    assert_eq!(env.stop_processor(b), 0);
    assert_eq!(env.stop_processor(a), 0);
    eprintln!("lake complete and committed {took:?} after the second process joined");
}
