//! `/health` sees a partition that makes no progress while records wait, even though the
//! process itself is alive (its source loop beats): here a deduplicator that panics on
//! every attempt for a while. It turns unhealthy after `admin.stall_timeout_s`, names the
//! stalled partitions, and turns healthy again once the partition moves; nothing is lost.

mod helpers;

use helpers::*;
use std::time::Duration;

fn health(admin: &str) -> (u16, serde_json::Value) {
    let (status, body) = admin_get(&format!("{admin}/health"));
    (status, serde_json::from_str(&body).unwrap())
}

#[test]
fn a_stuck_partition_fails_health_while_the_process_is_alive_and_recovers() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(500));
    // Eight panics in a row: with the flow's backoff, about 15 s without progress.
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__DEDUPLICATOR", "panic,panic,panic,panic,panic,panic,panic,panic"),
        ("EVENTLINE__ADMIN__STALL_TIMEOUT_S", "3"),
    ]);
    let admin = env.admin_url(p);
    let mut seen = serde_json::Value::Null;
    wait_until("/health reports the stalled partition", Duration::from_secs(20), || {
        let (status, body) = health(&admin);
        seen = body;
        status == 503 && seen["stalled_partitions"] == 1
    });
    assert!(seen["source_heartbeat_ms_ago"].as_i64().unwrap() < 2_000, "alive: {seen}");
    wait_until("/health recovers once the partition moves", Duration::from_secs(60), || {
        health(&admin).0 == 200
    });
    env.wait_drained(1, Duration::from_secs(60));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 500);
    assert_eq!(env.stop_processor(p), 0);
}
