//! A permanent error is not retried for ever: the process exits non-zero within a
//! bounded time and says what to fix, naming the setting and the path.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

/// Checked with the settings: `eventline config` refuses the root as `run` does, and
/// `run` stops before it connects to anything.
#[test]
fn a_lake_root_that_cannot_be_a_folder_stops_the_process_with_its_path() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(10));
    // A file where the lake's parent folder should be: not writable even for root.
    let blocker = env.dir().join("blocker");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let root = blocker.join("lake");
    let started = Instant::now();
    let p = env.start_processor(&[("EVENTLINE__LAKE__ROOT", root.to_str().unwrap())]);
    let code = env.exit_code_within(p, Duration::from_secs(30));
    let log = env.processor_log(p);
    assert_ne!(code, 0, "{log}");
    let names_it = |text: &str| {
        text.contains("key `lake.root`")
            && text.contains(&root.display().to_string())
            && text.contains("not a writable folder")
    };
    assert!(names_it(&log), "names the key and path: {log}");
    eprintln!("exited with {code} after {:?}", started.elapsed());
    let (code, _, stderr) =
        env.eventline_with(&["config"], &[("EVENTLINE__LAKE__ROOT", root.to_str().unwrap())]);
    assert_ne!(code, 0, "config accepted an unwritable lake root");
    assert!(names_it(&stderr), "{stderr}");
    assert!(!blocker.join("lake").exists() && blocker.is_file(), "config created nothing");
}

#[test]
fn a_fatal_writer_error_gives_up_at_once_instead_of_restarting() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(200));
    let started = Instant::now();
    let p = env.start_processor(&[("EVENTLINE__FAULTS__PARQUET", "fatal")]);
    let code = env.exit_code_within(p, Duration::from_secs(30));
    let log = env.processor_log(p);
    assert_eq!(code, 3, "a sink that gave up exits with 3: {log}");
    assert!(log.contains("parquet_writer gave up at once on a fatal error"), "{log}");
    let entries =
        eventline::telemetry::supervision_log::read_entries(&env.supervision_log).unwrap();
    let kinds: Vec<_> =
        entries.iter().filter(|e| e.actor == "parquet_writer").map(|e| e.kind).collect();
    use eventline::telemetry::supervision_log::EntryKind::*;
    assert!(kinds.contains(&GiveUp) && !kinds.contains(&Restart), "no restart: {kinds:?}");
    eprintln!("gave up after {:?}", started.elapsed());
}

/// `eventline config` refuses the lake roots `eventline run` cannot use, naming the key,
/// instead of printing them as if they were fine.
#[test]
fn config_and_run_refuse_a_lake_root_of_another_scheme_naming_the_key() {
    let env = TestEnv::new(1);
    for command in ["config", "run"] {
        let (code, _, stderr) =
            env.eventline_with(&[command], &[("EVENTLINE__LAKE__ROOT", "gs://bucket/lake")]);
        assert_ne!(code, 0, "{command} accepted gs://");
        assert!(
            stderr.contains("key `lake.root`") && stderr.contains("not gs://"),
            "{command}: {stderr}"
        );
    }
}

/// Values that were once clamped silently where they were used are refused by the
/// settings, naming the key, by `config` and `run` alike.
#[test]
fn values_once_clamped_are_refused_naming_the_key() {
    let env = TestEnv::new(1);
    for (variable, value, key) in [
        ("EVENTLINE__PIPELINE__SUMMARY_INTERVAL_S", "0", "pipeline.summary_interval_s"),
        ("EVENTLINE__PIPELINE__BATCH_LINGER_MS", "1", "pipeline.batch_linger_ms"),
        ("EVENTLINE__PIPELINE__BATCH_LINGER_MS", "600000", "pipeline.batch_linger_ms"),
        ("EVENTLINE__KAFKA__CONNECT_TIMEOUT_S", "0", "kafka.connect_timeout_s"),
    ] {
        for command in ["config", "run"] {
            let (code, _, stderr) = env.eventline_with(&[command], &[(variable, value)]);
            assert_ne!(code, 0, "{command} accepted {variable}={value}");
            assert!(stderr.contains(&format!("key `{key}`")), "{command}: {stderr}");
        }
    }
}
