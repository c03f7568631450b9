//! Late data (DESIGN.md section 6): an event whose record reached Kafka more than
//! `pipeline.late_after_s` (30 s) after its own timestamp is stored like any other, with
//! its lateness and a `late` flag in Postgres and in the lake, in the lake partition of
//! its own date, and counted in the metrics and the summary line.

mod helpers;

use chrono::{Duration as Age, Utc};
use helpers::*;
use std::time::Duration;

fn event_at(age: Age) -> String {
    serde_json::json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "event_type": "account_created",
        "source": "salesforce",
        "timestamp": (Utc::now() - age).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "payload": {"account_id": "001xx000003DGb2AAG", "industry": "Healthcare", "region": "US"}
    })
    .to_string()
}

#[test]
fn late_events_are_stored_marked_and_counted_never_dropped() {
    let mut env = TestEnv::new(1);
    let three_days_ago = Utc::now() - Age::days(3);
    let mut records: Vec<TestRecord> = Vec::new();
    for _ in 0..10 {
        records.push((None, "on-time".into(), Some(event_at(Age::seconds(1)).into_bytes())));
    }
    for _ in 0..3 {
        records.push((None, "minutes".into(), Some(event_at(Age::minutes(2)).into_bytes())));
    }
    records.push((None, "days".into(), Some(event_at(Age::days(3)).into_bytes())));
    env.produce(&records);
    let p = env.start_processor(&[]);
    env.wait_drained(1, Duration::from_secs(60));
    wait_until("the lake holds the 14 events", Duration::from_secs(30), || env.lake_rows() == 14);
    let metrics = admin_get(&format!("{}/metrics", env.admin_url(p))).1;
    wait_until("the summary line counts them", Duration::from_secs(30), || {
        env.processor_log(p).contains("late=4 ")
    });
    assert_eq!(env.stop_processor(p), 0);

    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 14, "late events are stored");
    assert_eq!(env.count("SELECT count(*) AS n FROM events WHERE late"), 4);
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM events WHERE NOT late AND lateness_ms BETWEEN 0 AND 30000"
        ),
        10,
        "on-time events carry their small lateness"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM events WHERE late \
             AND lateness_ms BETWEEN 120000 AND 150000"
        ),
        3
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM events WHERE late AND lateness_ms >= 259200000 \
             AND lateness_ms = (extract(epoch FROM kafka_timestamp - occurred_at) * 1000)::bigint \
             AND received_at >= kafka_timestamp - interval '1 minute'"
        ),
        1,
        "lateness is the Kafka timestamp minus the event's own time"
    );
    let lake = env.lake.display().to_string();
    let in_lake = duckdb(&format!(
        "SELECT count(*) FILTER (WHERE late), \
                count(*) FILTER (WHERE lateness_ms = epoch_ms(kafka_timestamp) - epoch_ms(occurred_at)), \
                count(*) FILTER (WHERE read_at >= kafka_timestamp - INTERVAL 1 MINUTE) \
         FROM read_parquet('{lake}/event_type=*/*/*/*/*.parquet')"
    ));
    assert_eq!(in_lake.trim(), "4,14,14", "the lake has the flag, the lateness, the times");
    let day = three_days_ago.format("year=%Y/month=%m/day=%d").to_string();
    assert!(
        lake_files(&env.lake).iter().any(|f| f.display().to_string().contains(&day)),
        "the 3-day-old event is in its own date's partition ({day})"
    );
    let late_metric: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("eventline_late_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(late_metric, 4.0, "{metrics}");
    assert!(metrics.contains("eventline_event_lateness_seconds_bucket"), "the histogram");
}
