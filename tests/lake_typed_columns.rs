//! The lake stores each event type's payload fields as typed columns, as its contract
//! types them, next to the raw payload: DuckDB reads them without JSON functions, over
//! the Delta table and over the files (`union_by_name`). A contract version that adds a
//! field adds a column that older files read as null; one that changes a column's type
//! stops start-up, naming the column.

mod helpers;

use helpers::*;
use std::time::Duration;

fn event(event_type: &str, version: i32, day: &str, payload: serde_json::Value) -> TestRecord {
    let id = uuid::Uuid::new_v4().to_string();
    let record = serde_json::json!({
        "event_id": id, "event_type": event_type, "schema_version": version, "source": "crm",
        "timestamp": format!("{day}T10:15:00+01:00"), "payload": payload
    });
    (None, id, Some(record.to_string().into_bytes()))
}

/// `column -> DuckDB type` of a query's result.
fn described(source: &str) -> std::collections::BTreeMap<String, String> {
    duckdb_delta(&format!("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {source})"))
        .lines()
        .filter_map(|l| l.split_once(','))
        .map(|(c, t)| (c.to_string(), t.to_string()))
        .collect()
}

#[test]
fn payload_fields_are_typed_columns_and_a_new_contract_version_adds_one() {
    let mut env = TestEnv::new(1);
    let contracts = env.dir().join("contracts");
    copy_contracts(&contracts);
    let dir = contracts.display().to_string();
    let settings = [("EVENTLINE__PIPELINE__CONTRACTS_DIR", dir.as_str())];
    let account = |region: &str, day: &str, employees: i64| {
        let payload = serde_json::json!({"account_id": format!("acc_{}", uuid::Uuid::new_v4().simple()),
            "industry": "software", "region": region, "employee_count": employees});
        event("account_created", 1, day, payload)
    };
    let opportunity = event(
        "opportunity_created",
        1,
        "2026-11-23",
        serde_json::json!({"opportunity_id": "opp_001", "account_id": "acc_1", "amount": 1234.5,
            "currency": "EUR", "stage": "proposal", "close_date": "2026-12-31"}),
    );
    env.produce(&[
        account("EMEA", "2026-11-22", 10),
        account("AMER", "2026-11-22", 20),
        account("EMEA", "2026-11-22", 30),
        account("EMEA", "2026-11-23", 40),
        opportunity,
    ]);
    let p = env.start_processor(&settings);
    env.wait_drained(1, Duration::from_secs(60));
    wait_until("the lake holds the 5 events", Duration::from_secs(30), || env.lake_rows() == 5);
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    let table = format!("delta_scan('{}')", env.lake.display());
    let types = described(&table);
    for (column, expected) in [
        ("region", "VARCHAR"),
        ("industry", "VARCHAR"),
        ("employee_count", "BIGINT"),
        ("amount", "DOUBLE"),
        ("close_date", "DATE"),
        ("stage", "VARCHAR"),
        ("payload", "VARCHAR"),
    ] {
        assert_eq!(types.get(column).map(String::as_str), Some(expected), "{column}: {types:?}");
    }
    // The README's query: accounts created per region per day, no JSON functions.
    let per_region = duckdb_delta(&format!(
        "SELECT region, make_date(year, month, day) AS day, count(*) FROM {table} \
         WHERE event_type = 'account_created' GROUP BY ALL ORDER BY ALL"
    ));
    assert_eq!(per_region, "AMER,2026-11-22,1\nEMEA,2026-11-22,2\nEMEA,2026-11-23,1\n");
    let sums = duckdb_delta(&format!(
        "SELECT sum(employee_count), sum(amount), max(close_date) FROM {table}"
    ));
    assert_eq!(sums.trim(), "100,1234.5,2026-12-31");

    // v2 adds `tier` and `signed_at`; v1 files stay as they are.
    let v2 = serde_json::json!({
        "type": "object",
        "required": ["account_id", "industry", "region"],
        "properties": {
            "account_id": {"type": "string"}, "industry": {"type": "string"},
            "region": {"type": "string"}, "employee_count": {"type": "integer"},
            "tier": {"type": "string"}, "signed_at": {"type": "string", "format": "date-time"}
        }
    });
    std::fs::write(contracts.join("account_created/v2.schema.json"), v2.to_string()).unwrap();
    let payload = |tier: &str| {
        serde_json::json!({"account_id": "acc_v2", "industry": "retail", "region": "APAC",
            "tier": tier, "signed_at": "2026-11-24T08:00:00Z"})
    };
    env.produce(&[
        event("account_created", 2, "2026-11-24", payload("gold")),
        event("account_created", 2, "2026-11-24", payload("silver")),
    ]);
    let p = env.start_processor(&settings);
    env.wait_drained(1, Duration::from_secs(60));
    wait_until("the lake holds the 7 events", Duration::from_secs(30), || env.lake_rows() == 7);
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    let types = described(&table);
    assert_eq!(types.get("tier").map(String::as_str), Some("VARCHAR"));
    assert_eq!(types.get("signed_at").map(String::as_str), Some("TIMESTAMP WITH TIME ZONE"));
    let tiers = duckdb_delta(&format!(
        "SELECT schema_version, count(*), count(tier), string_agg(DISTINCT tier, '|' ORDER BY tier) \
         FROM {table} WHERE event_type = 'account_created' GROUP BY 1 ORDER BY 1"
    ));
    assert_eq!(tiers, "1,4,0,None\n2,2,2,gold|silver\n");
    // The files alone, v1 and v2 together, by column name.
    let files = format!(
        "read_parquet('{}/event_type=account_created/*/*/*/*.parquet', union_by_name=true, hive_partitioning=true)",
        env.lake.display()
    );
    let by_name = duckdb(&format!(
        "SELECT count(*), count(tier), count(employee_count), min(signed_at)::VARCHAR FROM {files}"
    ));
    assert_eq!(by_name.trim(), "6,2,4,2026-11-24 08:00:00+00");

    // v3 makes employee_count a string: Delta cannot change the column's type in place.
    let mut v3 = v2.clone();
    v3["properties"]["employee_count"] = serde_json::json!({"type": "string"});
    std::fs::write(contracts.join("account_created/v3.schema.json"), v3.to_string()).unwrap();
    let p = env.start_processor(&settings);
    let code = env.exit_code_within(p, Duration::from_secs(60));
    let log = env.processor_log(p);
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("column `employee_count` is long in the table"), "{log}");
}
