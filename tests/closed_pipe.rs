//! Every command exits cleanly when the reader of its output goes away, as in
//! `eventline produce ... | head -1` under `set -o pipefail`: exit 0, no panic, and a
//! producer still sends every record.

mod helpers;

use helpers::*;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs `eventline ARGS 2>&1 | head -1` under bash's pipefail with this test's settings.
fn through_head(env: &TestEnv, args: &str) -> Output {
    let script = format!("set -o pipefail; '{}' {args} 2>&1 | head -1", binary().display());
    let mut command = Command::new("bash");
    command.args(["-c", &script]).current_dir(repo());
    for (k, v) in env.processor_env() {
        command.env(k, v);
    }
    command.output().expect("bash runs")
}

fn assert_clean(what: &str, out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{what}: pipeline exit status; first line: {stdout}");
    assert!(!stdout.contains("panicked"), "{what}: {stdout}");
}

#[test]
fn produce_into_a_closed_pipe_exits_0_and_sends_every_record() {
    let env = TestEnv::new(3);
    // A cold-broker warning or the first progress line is all `head` reads; the rest of
    // the producer's writes meet a closed pipe.
    let out = through_head(&env, "produce --generate 20000 --seed 5");
    assert_clean("produce | head -1", &out);
    assert_eq!(env.read_topic(&env.topic, 20000).len(), 20000, "every record reached the topic");
}

#[test]
fn supervision_and_config_into_a_closed_pipe_exit_0() {
    let env = TestEnv::new(1);
    // More than a pipe's 64 KiB buffer, so the writes really meet the closed end.
    let line = r#"{"at":"2026-11-23T08:00:00Z","actor":"postgres_writer","kind":"failure","pid":1,"cause":"connection refused"}"#;
    let log = env.dir().join("supervision.jsonl");
    std::fs::write(&log, format!("{line}\n").repeat(5000)).unwrap();
    let file = log.display();
    assert_clean(
        "supervision | head -1",
        &through_head(&env, &format!("supervision --file {file}")),
    );
    assert_clean(
        "supervision --json | head -1",
        &through_head(&env, &format!("supervision --json --file {file}")),
    );
    assert_clean("config | head -1", &through_head(&env, "config"));
}

#[test]
fn status_into_a_closed_pipe_exits_0_also_when_watching() {
    let mut env = TestEnv::new(1);
    let index = env.start_processor(&[]);
    let url = env.admin_url(index);
    assert_clean("status | head -1", &through_head(&env, &format!("status --url {url}")));
    // --watch redraws for ever; a closed pipe must end it rather than spin or panic.
    let started = std::time::Instant::now();
    assert_clean(
        "status --watch | head -1",
        &through_head(&env, &format!("status --watch --url {url}")),
    );
    assert!(started.elapsed() < Duration::from_secs(30), "status --watch ended with its reader");
    assert_eq!(env.stop_processor(index), 0);
}
