//! P5: lake files are immutable once published and never visible half-written. While a
//! stream is written (and the writer killed with -9 in the middle), a watcher opens every
//! `*.parquet` file the moment it appears: each must be a complete Parquet file. Every
//! file published before the kill keeps its bytes (same SHA-256) after the restart and
//! the replay, and the lake ends with each event exactly once.

mod helpers;

use helpers::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn hashes(root: &Path) -> BTreeMap<PathBuf, String> {
    lake_files(root)
        .into_iter()
        .map(|f| {
            let digest = Sha256::digest(std::fs::read(&f).unwrap());
            (f, digest.iter().map(|b| format!("{b:02x}")).collect())
        })
        .collect()
}

/// Opens every new `*.parquet` file as soon as it is seen, until told to stop; returns
/// (files checked, files that were not complete Parquet files).
fn watch(root: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut seen = std::collections::BTreeSet::new();
        let mut broken = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for file in lake_files(&root) {
                if seen.insert(file.clone()) {
                    let opened =
                        std::fs::File::open(&file).map_err(|e| e.to_string()).and_then(|f| {
                            parquet::file::reader::SerializedFileReader::new(f)
                                .map_err(|e| e.to_string())
                        });
                    if let Err(e) = opened {
                        broken.push(format!("{}: {e}", file.display()));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(10)); // polling interval of the watcher
        }
        (seen.len(), broken)
    })
}

#[test]
fn published_files_never_change_and_are_never_seen_half_written() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(30_000, 1_000, 0, 0);
    let small_files = [
        ("EVENTLINE__LAKE__MAX_FILE_AGE_MS", "200"),
        ("EVENTLINE__LAKE__MAX_ROWS_PER_FILE", "1500"),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch(env.lake.clone(), stop.clone());
    let (brokers, topic, stream) = (env.brokers.clone(), env.topic.clone(), records.clone());
    let producer = std::thread::spawn(move || {
        for chunk in stream.chunks(2_000) {
            produce_to(&brokers, &topic, chunk);
            std::thread::sleep(Duration::from_millis(200)); // pacing of the stream
        }
    });
    let p = env.start_processor(&small_files);
    wait_until("a few files are published", Duration::from_secs(60), || {
        lake_files(&env.lake).len() >= 6
    });
    env.kill_processor(p);
    let before = hashes(&env.lake);

    let p = env.start_processor(&small_files);
    producer.join().unwrap();
    env.wait_drained(3, Duration::from_secs(120));
    wait_until("the lake holds every accepted event", Duration::from_secs(60), || {
        env.lake_rows() == ids.len() as i64
    });
    assert_eq!(env.stop_processor(p), 0);
    // The group rewound to offset 0 (the sinks' progress decides where reading starts):
    // nothing may be rewritten either.
    env.reset_group(3, 0);
    let p = env.start_processor(&small_files);
    env.wait_drained(3, Duration::from_secs(60));
    assert_eq!(env.stop_processor(p), 0);
    stop.store(true, Ordering::Relaxed);
    let (checked, broken) = watcher.join().unwrap();

    let after = hashes(&env.lake);
    for (file, hash) in &before {
        assert_eq!(after.get(file), Some(hash), "{} changed or disappeared", file.display());
    }
    assert!(broken.is_empty(), "half-written files were visible: {broken:?}");
    assert!(checked >= before.len() && checked > 6, "the watcher saw the files ({checked})");
    assert_eq!(env.lake_counts_duckdb(), (ids.len() as i64, ids.len() as i64), "exactly once");
    eprintln!(
        "{} files before the kill, {} at the end, {checked} opened as they appeared",
        before.len(),
        after.len()
    );
}
