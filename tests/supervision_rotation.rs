//! The supervision log in a long-lived deployment (issue 17): it rotates by size and
//! keeps `supervision.keep_files` rotated files, and `eventline supervision` and
//! `/supervision` read across them, oldest first.

mod helpers;

use helpers::*;
use std::time::Duration;

#[test]
fn the_log_rotates_and_is_read_across_its_files() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(10));
    let rotation = [
        ("EVENTLINE__SUPERVISION__MAX_FILE_BYTES", "300"),
        ("EVENTLINE__SUPERVISION__KEEP_FILES", "20"),
    ];
    // Each run writes a start and a stop for each of the two writers (about 100 bytes
    // an entry), so three runs fill several files.
    for _ in 0..3 {
        let p = env.start_processor(&rotation);
        // Past start-up (the Delta tables opened, the signal handler set): a SIGTERM
        // before that ends the process by the default action, not by a clean stop.
        wait_until("the processor has its partition", Duration::from_secs(60), || {
            env.processor_log(p).contains("assigned")
        });
        env.wait_drained(1, Duration::from_secs(60));
        assert_eq!(env.stop_processor(p), 0);
    }
    let log = env.supervision_log.clone();
    let name = log.file_name().unwrap().to_string_lossy().into_owned();
    let rotated = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with(&format!("{name}.")))
        .filter(|f| !f.file_name().to_string_lossy().ends_with(".lock"))
        .count();
    assert!(rotated >= 2, "{rotated} rotated files");
    for file in std::fs::read_dir(log.parent().unwrap()).unwrap().flatten() {
        let size = file.metadata().unwrap().len();
        if file.file_name().to_string_lossy().starts_with(&name) {
            assert!(size < 300 + 200, "{:?} holds {size} bytes", file.file_name());
        }
    }

    // Read across every file: 12 entries, in time order, starts before stops per run.
    let path = log.display().to_string();
    let (code, out, err) = env
        .eventline_with(&["supervision", "--json"], &[("EVENTLINE__SUPERVISION__LOG_PATH", &path)]);
    assert_eq!(code, 0, "{err}");
    let entries: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.len(), 12, "{out}");
    assert_eq!(kinds.iter().filter(|k| **k == "start").count(), 6, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| **k == "stop").count(), 6, "{kinds:?}");
    let times: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");
    println!("{rotated} rotated files; `eventline supervision` read all 12 entries in order");

    // With fewer files kept, the oldest go; the newest entries stay readable.
    let p = env.start_processor(&[
        ("EVENTLINE__SUPERVISION__MAX_FILE_BYTES", "300"),
        ("EVENTLINE__SUPERVISION__KEEP_FILES", "1"),
    ]);
    let admin = env.admin_url(p);
    let (status, body) = admin_get(&format!("{admin}/supervision"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"start\""), "{body}");
    assert_eq!(env.stop_processor(p), 0);
    let files = std::fs::read_dir(log.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|f| f.file_name().to_string_lossy().starts_with(&format!("{name}.")))
        .filter(|f| !f.file_name().to_string_lossy().ends_with(".lock"))
        .count();
    assert_eq!(files, 1, "with keep_files = 1, one rotated file is left");
}
