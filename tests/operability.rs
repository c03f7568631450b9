//! The admin endpoint: metrics that match what was produced, readiness that follows
//! the sinks, lag that drains to zero, and dashboards/alerts that only query metrics
//! that exist.

mod helpers;

use eventline::telemetry::metrics::Scrape;
use helpers::*;
use std::collections::BTreeSet;
use std::time::Duration;

fn sum(series: &Scrape, metric: &str, filter: &[(&str, &str)]) -> i64 {
    series.sum(metric, filter) as i64
}

#[test]
fn metrics_match_what_was_produced_and_lag_drains_to_zero() {
    let mut env = TestEnv::new(3);
    let (records, ids) = mixed_records(2_000, 100, 20, 30);
    env.produce(&records);
    let p = env.start_processor(&[]);
    let admin = env.admin_url(p);
    env.wait_drained(3, Duration::from_secs(60));
    let mut series = Scrape::default();
    wait_until("lag per partition drops to 0", Duration::from_secs(30), || {
        series = Scrape::parse(&admin_get(&format!("{admin}/metrics")).1).unwrap();
        let lags: Vec<i64> = (0..3)
            .map(|p| {
                sum(&series, "eventline_consumer_lag_records", &[("partition", &p.to_string())])
            })
            .collect();
        series.count("eventline_consumer_lag_records") == 3 && lags == vec![0, 0, 0]
    });
    let consumed = sum(&series, "eventline_records_consumed_total", &[]);
    let outcome = |o: &str| sum(&series, "eventline_outcomes_total", &[("outcome", o)]);
    assert_eq!(consumed, records.len() as i64);
    assert_eq!(
        outcome("accepted") + outcome("duplicate") + outcome("conflict") + outcome("dead_letter"),
        consumed,
        "P1 in the metrics"
    );
    assert_eq!(outcome("accepted"), ids.len() as i64);
    assert_eq!((outcome("duplicate"), outcome("conflict"), outcome("dead_letter")), (100, 20, 30));
    assert_eq!(
        sum(
            &series,
            "eventline_outcomes_total",
            &[("outcome", "dead_letter"), ("error_class", "not_json")]
        ),
        30
    );
    assert_eq!(
        sum(
            &series,
            "eventline_outcomes_total",
            &[("outcome", "accepted"), ("event_type", "account_created")]
        ),
        ids.len() as i64
    );
    let end = env.high_watermarks(3);
    for p in 0..3 {
        assert_eq!(
            sum(&series, "eventline_committed_offset", &[("partition", &p.to_string())]),
            end[p as usize]
        );
        for sink in ["postgres", "lake"] {
            assert_eq!(
                sum(
                    &series,
                    "eventline_sink_progress_offset",
                    &[("sink", sink), ("partition", &p.to_string())]
                ),
                end[p as usize]
            );
        }
    }
    assert!(sum(&series, "eventline_lake_files_written_total", &[]) > 0);
    assert!(
        sum(&series, "eventline_end_to_end_latency_seconds_count", &[("sink", "postgres")])
            == ids.len() as i64
    );
    let (code, body) = admin_get(&format!("{admin}/health"));
    assert_eq!(code, 200, "{body}");

    let (code, _) = env.eventline(&["status", "--url", &admin]);
    assert_eq!(code, 0);
    let out =
        std::process::Command::new(binary()).args(["status", "--url", &admin]).output().unwrap();
    let view = String::from_utf8_lossy(&out.stdout);
    assert!(view.contains("ready: yes") && view.contains("assigned partitions: 3"), "{view}");
    assert!(view.lines().any(|l| l.starts_with("postgres") && l.contains(" up ")), "{view}");
    assert!(
        view.lines()
            .filter(|l| l.trim_end().ends_with(" 0") && l.starts_with(char::is_numeric))
            .count()
            == 3,
        "lag 0 on each partition: {view}"
    );
    assert_eq!(env.stop_processor(p), 0);
}

#[test]
fn ready_goes_false_while_a_sink_restarts_and_dashboards_query_only_live_metrics() {
    let mut env = TestEnv::new(3);
    let p = env.start_processor(&[
        ("EVENTLINE__FAULTS__PARQUET", "error,error"),
        ("EVENTLINE__FAULTS__AFTER_BATCHES", "1"),
        ("EVENTLINE__SUPERVISION__BACKOFF_INITIAL_MS", "3000"),
    ]);
    let admin = env.admin_url(p);
    wait_until("/ready is true once partitions are assigned", Duration::from_secs(60), || {
        env.produce(&valid_records(1));
        admin_get(&format!("{admin}/ready")).0 == 200
    });
    env.produce(&valid_records(300));
    wait_until(
        "/ready is false while the parquet writer restarts",
        Duration::from_secs(30),
        || admin_get(&format!("{admin}/ready")).0 == 503,
    );
    let (_, body) = admin_get(&format!("{admin}/ready"));
    assert!(body.contains("\"lake_up\":false"), "{body}");
    wait_until("/ready is true again after recovery", Duration::from_secs(60), || {
        admin_get(&format!("{admin}/ready")).0 == 200
    });
    env.wait_drained(3, Duration::from_secs(60));
    let (_, supervision) = admin_get(&format!("{admin}/supervision"));
    assert!(supervision.contains("\"recovered\""), "{supervision}");

    // Every metric the dashboard and the alert rules query exists in a live scrape.
    let scrape = admin_get(&format!("{admin}/metrics")).1;
    let live: BTreeSet<String> = Scrape::parse(&scrape).unwrap().names();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("ops/grafana/eventline-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_string())
        })
        .collect();
    let rules = std::process::Command::new("python3")
        .args(["-c", "import yaml, json, sys; d = yaml.safe_load(open(sys.argv[1])); print(json.dumps([r['expr'] for g in d['groups'] for r in g['rules']]))"])
        .arg(repo().join("ops/prometheus/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        rules.status.success(),
        "alert rules parse: {}",
        String::from_utf8_lossy(&rules.stderr)
    );
    let rule_exprs: Vec<String> = serde_json::from_slice(&rules.stdout).unwrap();
    assert_eq!(rule_exprs.len(), 4);
    exprs.extend(rule_exprs);
    let mut referenced = BTreeSet::new();
    for expr in &exprs {
        for (i, _) in expr.match_indices("eventline_") {
            let name: String =
                expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            referenced.insert(name);
        }
    }
    let missing: Vec<&String> = referenced.iter().filter(|m| !live.contains(*m)).collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}\nlive: {live:?}");
    assert!(referenced.len() >= 12, "{referenced:?}");
    assert_eq!(env.stop_processor(p), 0);
}

#[test]
fn json_logs_are_one_object_per_line_with_the_summary_counters_as_fields() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(50));
    let p = env.start_processor(&[
        ("EVENTLINE_LOG_FORMAT", "json"),
        ("EVENTLINE__PIPELINE__SUMMARY_INTERVAL_S", "1"),
    ]);
    wait_until("a summary line reports the 50 records", Duration::from_secs(60), || {
        env.processor_log(p)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .any(|v| v["consumed"] == 50.0 && v["accepted"] == 50.0)
    });
    assert_eq!(env.stop_processor(p), 0);
    let log = env.processor_log(p);
    assert!(
        log.lines().all(|l| serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|v| v["level"].is_string() && v["message"].is_string())),
        "{log}"
    );
}
