//! A rebalance while Postgres is down does not freeze the process: the rebalance
//! callback only records the change, and where each partition starts is read off the
//! event loop. Measured from outside through `/health`: the source loop's heartbeat
//! stays fresh while a second process joins the group and both wait for Postgres, and
//! once Postgres is back every event is stored exactly once.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

fn heartbeat_age_ms(admin: &str) -> i64 {
    let health: serde_json::Value =
        serde_json::from_str(&admin_get(&format!("{admin}/health")).1).unwrap();
    health["source_heartbeat_ms_ago"].as_i64().unwrap()
}

#[test]
fn a_rebalance_during_a_postgres_outage_leaves_the_event_loop_running() {
    let pg = PrivatePostgres::start();
    let mut env = TestEnv::new(3);
    env.use_database(&pg.url);
    let (first, ids_a) = mixed_records(1_000, 0, 0, 0);
    env.produce(&first);
    let a = env.start_processor(&[]);
    let admin = env.admin_url(a);
    env.wait_drained(3, Duration::from_secs(60));

    let b = env.start_processor(&[]);
    wait_until("the second process has partitions", Duration::from_secs(60), || {
        env.processor_log(b).contains("assigned")
    });
    // Postgres goes down, then the second process dies: its partitions come back to the
    // first one, which must learn where they start while Postgres cannot answer.
    pg.crash();
    env.kill_processor(b);
    wait_until("the first process waits for the progress", Duration::from_secs(60), || {
        env.processor_log(a).contains("Cannot read the sinks' progress")
    });
    // The first process now waits for Postgres to learn where its partitions start.
    let (mut worst, started) = (0, Instant::now());
    while started.elapsed() < Duration::from_secs(8) {
        worst = worst.max(heartbeat_age_ms(&admin));
        std::thread::sleep(Duration::from_millis(200)); // sampling interval
    }
    assert!(worst < 2_000, "the source loop kept beating during the outage: worst {worst} ms");

    pg.start_again();
    let (second, ids_b) = mixed_records(1_000, 0, 0, 0);
    env.produce(&second);
    env.wait_drained(3, Duration::from_secs(120));
    wait_until("the lake holds every event", Duration::from_secs(60), || {
        env.lake_rows() == (ids_a.len() + ids_b.len()) as i64
    });
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 2_000);
    assert_eq!(env.lake_counts_duckdb(), (2_000, 2_000));
    assert_eq!(env.stop_processor(a), 0);
    eprintln!("worst heartbeat age during the outage: {worst} ms");
}
