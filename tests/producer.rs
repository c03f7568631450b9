//! `eventline produce`: invalid events never reach Kafka, a seed reproduces its output,
//! and keys keep an entity on one stable partition.

mod helpers;

use helpers::*;
use std::collections::HashMap;

#[test]
fn invalid_lines_are_rejected_before_kafka_and_valid_ones_are_sent() {
    let env = TestEnv::new(3);
    let dir = env.dir().to_path_buf();
    let mixed = dir.join("mixed.jsonl");
    let valid: Vec<String> = std::fs::read_to_string(repo().join("fixtures/crm-sample.jsonl"))
        .unwrap()
        .lines()
        .take(20)
        .map(String::from)
        .collect();
    let invalid = std::fs::read_to_string(repo().join("fixtures/crm-invalid.jsonl")).unwrap();
    std::fs::write(&mixed, format!("{}\n{invalid}", valid.join("\n"))).unwrap();

    let (code, stderr) = env.eventline(&["produce", "--file", mixed.to_str().unwrap()]);
    assert_eq!(code, 1, "rejected lines make the exit code non-zero: {stderr}");
    assert!(
        stderr.contains("line 21: event_id")
            && stderr.contains("/payload/employee_count: rule 'minimum'"),
        "{stderr}"
    );
    assert!(stderr.contains("rejected before Kafka: bad_envelope=2 contract_violation=2 not_json=1 unknown_event_type=1"), "{stderr}");
    let sent = env.read_topic(&env.topic, 20);
    assert_eq!(sent.len(), 20, "only the valid lines reached the topic");
    let values: Vec<String> =
        sent.iter().map(|(_, _, v)| String::from_utf8(v.clone().unwrap()).unwrap()).collect();
    assert!(valid.iter().all(|v| values.contains(v)));

    let (code, _) = env.eventline(&[
        "produce",
        "--file",
        mixed.to_str().unwrap(),
        "--skip-invalid",
        "--dry-run",
    ]);
    assert_eq!(code, 0, "--skip-invalid");
}

#[test]
fn the_same_seed_writes_the_same_records_and_keys_stay_on_one_partition() {
    let env = TestEnv::new(3);
    let (a, b) = (env.dir().join("a.jsonl"), env.dir().join("b.jsonl"));
    let args = |out: &std::path::Path| {
        vec![
            "produce",
            "--generate",
            "3000",
            "--seed",
            "11",
            "--start-time",
            "2026-11-22T08:00:00Z",
            "--duplicate-ratio",
            "0.05",
            "--invalid-ratio",
            "0.02",
            "--tombstone-ratio",
            "0.01",
            "--write-jsonl",
        ]
        .into_iter()
        .map(String::from)
        .chain([out.display().to_string()])
        .collect::<Vec<_>>()
    };
    let run = |out: &std::path::Path| {
        let args = args(out);
        let (code, stderr) = env.eventline(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(code, 0, "{stderr}");
        assert!(stderr.contains("3000 confirmed"), "{stderr}");
    };
    run(&a);
    run(&b);
    assert_eq!(
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        "identical output for the same seed"
    );

    let records = env.read_topic(&env.topic, 6000);
    let mut partition_of: HashMap<String, i32> = HashMap::new();
    for (partition, key, _) in &records {
        let first = *partition_of.entry(key.clone()).or_insert(*partition);
        assert_eq!(first, *partition, "entity {key} stays on one partition across both runs");
    }
    assert!(
        partition_of.values().collect::<std::collections::HashSet<_>>().len() == 3,
        "entities spread over all partitions"
    );
    assert!(records.iter().any(|(_, _, v)| v.is_none()), "tombstones were sent");
}
