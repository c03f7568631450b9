//! Every stage is supervised, not only the sinks: a panic in the validator sets aside
//! the one record it was checking (dead-lettered as `checker_panicked`) and the partition
//! goes on; a panic in the deduplicator is caught and the batch retried with backoff, so
//! nothing is lost. Both show in the supervision log and in
//! `eventline_stage_failures_total`.

mod helpers;

use eventline::telemetry::supervision_log::{read_entries, EntryKind};
use helpers::*;
use std::time::Duration;

fn failures_of(env: &TestEnv, actor: &str) -> Vec<String> {
    read_entries(&env.supervision_log)
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == actor && e.kind == EntryKind::Failure)
        .map(|e| e.cause.unwrap_or_default())
        .collect()
}

#[test]
fn a_validator_panic_sets_aside_one_record_and_the_partition_goes_on() {
    let mut env = TestEnv::new(3);
    env.produce(&valid_records(2000));
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__VALIDATOR", "panic"),
        ("EVENTLINE__FAULTS__AFTER_BATCHES", "1"),
    ]);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds the accepted events", Duration::from_secs(30), || {
        env.lake_rows() == 1999
    });
    assert_eq!(env.stop_processor(p), 0, "the process rode it out");
    let outcomes = env.outcomes();
    assert_eq!((outcomes.get("accepted"), outcomes.get("dead_letter")), (Some(&1999), Some(&1)));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 1999);
    let set_aside = env.count(
        "SELECT count(*) AS n FROM dead_letters WHERE error_class = 'checker_panicked' \
         AND error_message LIKE 'the contract check panicked: injected panic%'",
    );
    assert_eq!(set_aside, 1, "the record is in the dead letters with the panic");
    let failures = failures_of(&env, "validator");
    assert_eq!(failures.len(), 1, "{failures:?}");
}

#[test]
fn a_deduplicator_panic_is_retried_and_nothing_is_lost() {
    let mut env = TestEnv::new(3);
    env.produce(&valid_records(2000));
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__DEDUPLICATOR", "panic,panic"),
        ("EVENTLINE__FAULTS__AFTER_BATCHES", "1"),
    ]);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds every event", Duration::from_secs(30), || env.lake_rows() == 2000);
    assert_eq!(env.stop_processor(p), 0, "the process rode it out");
    assert_eq!(env.outcomes().get("accepted"), Some(&2000));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 2000);
    assert_eq!(env.lake_counts_duckdb(), (2000, 2000));
    let failures = failures_of(&env, "deduplicator");
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(failures.iter().all(|c| c.contains("injected panic in the deduplicator")));
}

/// A task nothing else supervises (a partition's flow) that panics does not die unseen:
/// the process writes a give-up entry and exits non-zero at once, instead of staying up
/// with a partition that no longer moves; the next start stores everything, once.
#[test]
fn a_flow_panic_ends_the_process_at_once_and_a_restart_loses_nothing() {
    let mut env = TestEnv::new(3);
    env.produce(&valid_records(2000));
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__FLOW", "panic"),
        ("EVENTLINE__FAULTS__AFTER_BATCHES", "1"),
    ]);
    let code = env.exit_code_within(p, Duration::from_secs(30));
    assert_ne!(code, 0, "the process exits non-zero: {}", env.processor_log(p));
    let gave_up: Vec<_> = read_entries(&env.supervision_log)
        .unwrap()
        .into_iter()
        .filter(|e| e.actor == "partition_flow" && e.kind == EntryKind::GiveUp)
        .collect();
    assert_eq!(gave_up.len(), 1, "one give-up entry for the flow");
    assert!(gave_up[0].cause.as_deref().unwrap_or_default().contains("injected panic"));

    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    wait_until("the lake holds every event", Duration::from_secs(30), || env.lake_rows() == 2000);
    assert_eq!(env.stop_processor(p), 0);
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 2000);
    assert_eq!(env.lake_counts_duckdb(), (2000, 2000));
}
