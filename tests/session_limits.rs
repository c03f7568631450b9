//! No process holds another hostage through Postgres: a session frozen inside a
//! transaction (a process stopped with SIGSTOP mid-write) has its transaction rolled back
//! by the server after `postgres.idle_in_transaction_timeout_ms`, and a writer waiting on
//! its locks fails after `postgres.lock_timeout_ms` (transient, retried) instead of
//! waiting for ever. Both are set on every connection of eventline's pool.

mod helpers;

use diesel::connection::SimpleConnection;
use helpers::*;
use std::time::{Duration, Instant};

#[test]
fn a_frozen_transaction_is_rolled_back_and_a_waiting_writer_times_out() {
    let env = TestEnv::new(1);
    let mut settings = stack_settings();
    settings.postgres.url = env.db_url.clone();
    settings.postgres.lock_timeout_ms = 300;
    settings.postgres.idle_in_transaction_timeout_ms = 1500;
    let pool = eventline::db::pool(&settings.postgres);

    let mut frozen = pool.get().unwrap();
    frozen
        .batch_execute(
            "CREATE TABLE hostage (id int PRIMARY KEY, n int); INSERT INTO hostage VALUES (1, 0);",
        )
        .unwrap();
    // A write that took its row lock, then its process stopped answering.
    frozen.batch_execute("BEGIN; UPDATE hostage SET n = 1 WHERE id = 1;").unwrap();

    let mut live = pool.get().unwrap();
    let started = Instant::now();
    let waited = live.batch_execute("UPDATE hostage SET n = 2 WHERE id = 1");
    let error = waited.expect_err("the lock is held").to_string();
    assert!(error.contains("lock timeout"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded wait: {:?}", started.elapsed());

    wait_until("the frozen session's transaction is rolled back", Duration::from_secs(15), || {
        live.batch_execute("UPDATE hostage SET n = 2 WHERE id = 1").is_ok()
    });
    let released = started.elapsed();
    assert!(frozen.batch_execute("COMMIT").is_err(), "the server ended the frozen session");
    let n = env.count("SELECT n::bigint AS n FROM hostage WHERE id = 1");
    assert_eq!(n, 2, "the frozen write was rolled back, the live one stored");
    eprintln!("lock released after {released:?} (idle_in_transaction_timeout 1.5 s)");
}
