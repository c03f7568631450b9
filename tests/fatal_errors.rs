//! A permanent error is not retried for ever: the process exits non-zero within a
//! bounded time and says what to fix, naming the setting and the path.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

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
    assert!(
        log.contains(&format!("lake.root {}", root.display())),
        "names the key and path: {log}"
    );
    assert!(log.contains("not a writable folder"), "{log}");
    eprintln!("exited with {code} after {:?}", started.elapsed());
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
