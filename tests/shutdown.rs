//! P6: SIGTERM while a backlog is in flight and the lake holds an unflushed buffer: the
//! process stops fetching, flushes both sinks, commits and exits 0 within
//! `pipeline.shutdown_timeout_s`; the committed offsets are exactly what both sinks
//! stored, and the next start stores the rest, each event once.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

#[test]
fn sigterm_mid_backlog_flushes_commits_exits_0_and_loses_nothing() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(99_000, 1_000, 0, 0);
    env.produce(&records);
    // The lake would keep its buffers for a minute: only the shutdown flushes them. The
    // sinks hold at most 4 MiB in flight (not the default 32 MiB, about the whole
    // backlog), so the SIGTERM finds most of the backlog still unread.
    let hold = [
        ("EVENTLINE__LAKE__MAX_FILE_AGE_MS", "60000"),
        ("EVENTLINE__LAKE__IDLE_FLUSH_MS", "0"),
        ("EVENTLINE__PIPELINE__SINK_QUEUE_BYTES", "4194304"),
    ];
    let p = env.start_processor(&hold);
    wait_until("the backlog is being stored", Duration::from_secs(60), || {
        env.outcomes_total() > 5_000
    });
    let signalled = Instant::now();
    let code = env.stop_processor(p);
    let took = signalled.elapsed();
    assert_eq!(code, 0, "{}", env.processor_log(p));
    let limit = Duration::from_secs(stack_settings().pipeline.shutdown_timeout_s);
    assert!(took < limit, "exit within pipeline.shutdown_timeout_s: {took:?}");

    let stored = env.outcomes_total();
    assert!(stored < records.len() as i64, "SIGTERM came mid-backlog ({stored} stored)");
    let committed = env.committed(3);
    for partition in 0..3 {
        let (pg, lake) = env.sink_progress(partition);
        let c = committed[partition as usize];
        assert_eq!((pg, lake), (Some(c), Some(c)), "partition {partition}: committed {c}");
    }
    assert_eq!(env.lake_rows(), env.count("SELECT count(*) AS n FROM events"), "both sinks");

    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(120));
    wait_until("the lake holds every accepted event", Duration::from_secs(60), || {
        env.lake_rows() == ids.len() as i64
    });
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(env.lake_counts_duckdb(), (ids.len() as i64, ids.len() as i64));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), ids.len() as i64);
    eprintln!("SIGTERM at {stored} of {} records: exit 0 after {took:?}", records.len());
}
