//! The short form of every drill (`make drill` runs the long form against the local
//! stack), each against this test's own topic, database and lake, plus proof that
//! `verify` fails when the sinks disagree.

mod helpers;

use helpers::*;
use std::time::Duration;

fn drill(env: &TestEnv, args: &[&str]) -> (i32, String) {
    drill_with(env, args, &[])
}

/// [`drill`] with settings of its own (a lake in the S3 server).
fn drill_with(env: &TestEnv, args: &[&str], extra: &[(String, String)]) -> (i32, String) {
    let reports = env.dir().join("reports");
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    let reports = reports.display().to_string();
    all.extend_from_slice(&["--reports-dir", &reports, "--timeout", "120s"]);
    let mut command = std::process::Command::new(binary());
    command.args(&all).current_dir(repo());
    for (k, v) in env.processor_env().into_iter().chain(extra.iter().cloned()) {
        command.env(k, v);
    }
    let out = command.output().expect("eventline drill runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The drill's verdict checked from outside, against the sinks themselves: both hold
/// the same events with the same validity (the lake read the README's way, deleted
/// events left out), each once; every record in the topic has one outcome; the
/// committed offsets are at the end of the topic.
fn sinks_agree(env: &TestEnv) {
    let events = env.count("SELECT count(*) AS n FROM events");
    assert!(events > 0, "the drill stored events");
    let lake = env.lake_events();
    assert_eq!(lake.len() as i64, events, "the lake holds each event once");
    assert!(lake == env.pg_events(), "the same events, the same validity");
    assert!(lake.values().any(|valid| !valid), "the drill's invalidations are in both sinks");
    let deleted =
        env.count("SELECT count(*) AS n FROM processed_events WHERE deleted_at IS NOT NULL");
    assert!(deleted > 0, "the drill's deletions were recorded");
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM processed_events WHERE topic IS NOT NULL AND deleted_at IS NULL"
        ),
        events,
        "every first sighting not deleted is stored"
    );
    let high = env.high_watermarks(3);
    assert_eq!(env.outcomes_total(), high.iter().sum::<i64>(), "one outcome per record");
    assert_eq!(env.committed(3), high, "committed to the end of the topic");
}

/// `n` events with duplicates, conflicts and invalid records, then invalidations of
/// `n / 50` of them and deletions of another `n / 50`; returns how many events remain.
fn processed(env: &mut TestEnv, n: usize) -> usize {
    let (records, _) = mixed_records(n, n / 20, n / 100, n / 100);
    env.produce(&records);
    let k = n / 50;
    let event = |i: usize| String::from_utf8(records[i].2.clone().unwrap()).unwrap();
    let id = |i: usize| event_id_of(&records[i]);
    let invalidations =
        (0..k).map(|i| (None, records[i].1.clone(), Some(invalidation_of(&event(i)).into_bytes())));
    let deletions = (k..2 * k).map(|i| (None, id(i), None));
    env.produce(&invalidations.chain(deletions).collect::<Vec<TestRecord>>());
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    let left = n - k;
    wait_until("the lake is flushed", Duration::from_secs(30), || env.lake_events().len() == left);
    assert_eq!(env.stop_processor(p), 0);
    left
}

#[test]
fn verify_passes_on_agreeing_sinks_and_lists_what_differs_when_they_do_not() {
    let mut env = TestEnv::new(3);
    let left = processed(&mut env, 500);
    let (code, out) = drill(&env, &["verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("PASS  every Postgres event is in the lake: {left} events")),
        "{out}"
    );
    assert!(
        out.contains("PASS  the same events invalidated in both sinks: 10 invalidated"),
        "{out}"
    );

    let victim = lake_files(&env.lake).into_iter().next().unwrap();
    std::fs::remove_file(&victim).unwrap();
    let (code, out) = drill(&env, &["verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  every Postgres event is in the lake: missing from the lake:"),
        "{out}"
    );
    assert!(out.contains("FAIL  same events per day and event type"), "{out}");
    assert!(out.contains("verdict: FAIL"));
}

#[test]
fn verify_against_the_sent_file_passes_then_names_an_event_removed_behind_its_back() {
    let mut env = TestEnv::new(3);
    let sent = env.dir().join("sent.jsonl");
    let sent_text = sent.display().to_string();
    let (code, out) = env.eventline(&[
        "produce",
        "--generate",
        "2000",
        "--seed",
        "5",
        "--duplicate-ratio",
        "0.05",
        "--conflict-ratio",
        "0.02",
        "--invalid-ratio",
        "0.02",
        "--invalidate-ratio",
        "0.02",
        "--delete-ratio",
        "0.01",
        "--write-jsonl",
        &sent_text,
    ]);
    assert_eq!(code, 0, "{out}");
    let p = env.start_processor(&[]);
    env.wait_drained(3, Duration::from_secs(60));
    let stored = env.count("SELECT count(*) AS n FROM events");
    wait_until("the lake is flushed", Duration::from_secs(30), || {
        env.lake_events().len() as i64 == stored
    });
    assert_eq!(env.stop_processor(p), 0);

    let (code, out) = drill(&env, &["verify", "--against", &sent_text]);
    assert_eq!(code, 0, "{out}");
    for check in [
        "PASS  no deleted event is in Postgres",
        "PASS  no deleted event is in the lake",
        "PASS  exactly the invalidated events are invalid in Postgres",
        "PASS  exactly the invalidated events are invalid in the lake",
    ] {
        assert!(out.contains(check), "{check} missing:\n{out}");
    }
    assert!(env.count("SELECT count(*) AS n FROM events WHERE NOT is_valid") > 0, "{out}");
    assert!(
        out.contains(&format!("PASS  every event sent is in Postgres: {stored} of {stored}")),
        "{out}"
    );
    assert!(out.contains("PASS  every event sent is in the lake"), "{out}");
    assert!(
        out.contains("ingestion success rate, Postgres (%)") && out.contains("100.00"),
        "{out}"
    );

    #[derive(diesel::QueryableByName)]
    struct Removed {
        #[diesel(sql_type = diesel::sql_types::Text)]
        id: String,
    }
    use diesel::RunQueryDsl;
    let removed: Removed = diesel::sql_query(
        "DELETE FROM events WHERE event_id = (SELECT min(event_id::text)::uuid FROM events) \
         RETURNING event_id::text AS id",
    )
    .get_result(&mut env.pg())
    .unwrap();
    let (code, out) = drill(&env, &["verify", "--against", &sent_text]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "FAIL  every event sent is in Postgres: missing from Postgres: {}",
            removed.id
        )),
        "names the removed event: {out}"
    );
}

#[test]
fn kill_drill_passes_and_shows_the_numbers() {
    let env = TestEnv::new(3);
    let (code, out) = drill(&env, &["kill", "--events", "20000", "--kills", "2"]);
    assert_eq!(code, 0, "{out}");
    for check in [
        "PASS  postgres: each new event stored exactly once",
        "PASS  lake: each new event exactly once",
        "PASS  P1: one outcome per record sent",
    ] {
        assert!(out.contains(check), "{check} missing:\n{out}");
    }
    assert!(
        out.contains("rows in events") && out.contains("committed offsets"),
        "figures are shown: {out}"
    );
    sinks_agree(&env);
}

#[test]
fn sink_crash_drills_pass_for_both_sinks() {
    let env = TestEnv::new(3);
    for sink in ["parquet", "postgres"] {
        let (code, out) = drill(&env, &["sink-crash", "--sink", sink, "--events", "8000"]);
        assert_eq!(code, 0, "{sink}: {out}");
        assert!(out.contains("PASS  the failing sink was restarted and recovered"), "{out}");
        let other = match sink {
            "parquet" => "PASS  postgres kept storing while parquet_writer was down",
            _ => "PASS  the lake never ran ahead of postgres",
        };
        assert!(out.contains(other), "{out}");
        sinks_agree(&env);
    }
}

#[test]
fn db_outage_drill_passes() {
    let pg = PrivatePostgres::start();
    let mut env = TestEnv::new(3);
    env.use_database(&pg.url);
    let (stop, start) = pg.stop_and_start_commands();
    let (code, out) = drill(
        &env,
        &[
            "db-outage",
            "--events",
            "20000",
            "--outage",
            "3s",
            "--pg-stop-cmd",
            &stop,
            "--pg-start-cmd",
            &start,
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS  the processor rode out the outage"), "{out}");
    sinks_agree(&env);
}

#[test]
fn resend_and_replay_drills_pass_on_processed_data() {
    let mut env = TestEnv::new(3);
    let left = processed(&mut env, 600);
    let (code, out) = drill(&env, &["resend", "--resend", "50"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("duplicate +50, accepted +0, conflict +0 for 50 resent"), "{out}");
    let (code, out) = drill(&env, &["replay", "--rebuild-lake"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "PASS  rebuilt lake: exactly the same events: {left} rows, {left} distinct"
        )),
        "{out}"
    );
    sinks_agree(&env);
}

#[test]
fn replay_rebuilds_a_lake_in_s3() {
    let mut env = TestEnv::new(2);
    let s3 = S3Lake::new();
    let settings = s3.env();
    let extra: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (records, ids) = mixed_records(400, 20, 0, 10);
    env.produce(&records);
    let p = env.start_processor(&extra);
    env.wait_drained(2, Duration::from_secs(60));
    wait_until("the bucket holds every event", Duration::from_secs(30), || {
        s3.event_ids(&env.topic).len() == ids.len()
    });
    assert_eq!(env.stop_processor(p), 0);
    let before = s3.deltalake_summary(&env.topic, 2);

    let (code, out) = drill_with(&env, &["replay", "--rebuild-lake"], &settings);
    assert_eq!(code, 0, "{out}");
    let rebuilt = format!(
        "PASS  rebuilt lake: exactly the same events: {n} rows, {n} distinct",
        n = ids.len()
    );
    assert!(out.contains(&rebuilt), "{out}");
    assert!(out.contains("-before-replay-"), "moved aside within the bucket: {out}");
    let in_bucket = s3.event_ids(&env.topic);
    assert_eq!(in_bucket.into_iter().collect::<std::collections::BTreeSet<_>>(), ids);
    let after = s3.deltalake_summary(&env.topic, 2);
    assert_eq!(after["txn"], before["txn"], "the rebuilt table holds the same progress");
    assert_eq!(after["distinct"], before["distinct"]);
    let aside = eventline::sinks::lake::store::LakeStore::open(
        std::path::Path::new(&format!("s3://{}", s3.bucket)),
        &eventline::sinks::lake::store::S3Options {
            endpoint: Some(s3.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("eventline".into()),
            secret_access_key: Some("eventline".into()),
            allow_http: true,
        },
    )
    .expect("the bucket");
    let left: Vec<String> = aside
        .list_everything()
        .expect("the bucket lists")
        .into_iter()
        .map(|o| o.path)
        .filter(|p| p.contains("-before-replay-"))
        .collect();
    assert!(left.is_empty(), "the old lake is deleted once the rebuilt one passed: {left:?}");
}
