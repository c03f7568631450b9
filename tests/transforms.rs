//! Declarative transforms beside the contracts: values trimmed, lower-cased and mapped
//! (`Healthcare` -> `healthcare`, `US` -> `AMER`), a field lifted out of an object and one
//! derived from others, lookups in a CSV shipped with the contracts and in a Postgres
//! table. The raw payload is kept; the normalised fields are in `events.normalized`, the
//! lake's typed columns and the current state. A rule that fails on a record
//! dead-letters it naming the rule; a broken transforms file stops start-up naming the
//! file and the line.

mod helpers;

use diesel::RunQueryDsl;
use helpers::*;
use serde_json::{json, Value};
use std::time::Duration;

fn record(event_type: &str, payload: Value) -> TestRecord {
    let id = uuid::Uuid::new_v4().to_string();
    let text = json!({"event_id": id, "event_type": event_type, "source": "crm",
        "timestamp": "2026-11-22T10:15:00Z", "payload": payload});
    (None, id, Some(text.to_string().into_bytes()))
}

fn text(env: &TestEnv, sql: &str) -> String {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    diesel::sql_query(sql).get_result::<T>(&mut env.pg()).expect(sql).t
}

#[test]
fn transforms_normalise_derive_and_enrich_and_a_failing_rule_is_a_named_dead_letter() {
    let mut env = TestEnv::new(1);
    let contracts = env.dir().join("contracts");
    copy_contracts(&contracts);
    // A strict map on order_paid, and an enrichment from a Postgres table on order_created.
    let mut paid =
        std::fs::read_to_string(contracts.join("order_paid/v1.transforms.toml")).unwrap();
    paid.push_str("\n[[rule]]\nname = \"method: settled ones only\"\nfield = \"method\"\nmap = { card = \"card\", transfer = \"transfer\" }\nunmapped = \"fail\"\n");
    std::fs::write(contracts.join("order_paid/v1.transforms.toml"), paid).unwrap();
    let mut created =
        std::fs::read_to_string(contracts.join("order_created/v1.transforms.toml")).unwrap();
    created.push_str("\n[[rule]]\nname = \"customer segment\"\nfield = \"segment\"\nlookup = { table = \"postgres:public.ref_customers\", key = \"customer_id\", column = \"segment\" }\n");
    std::fs::write(contracts.join("order_created/v1.transforms.toml"), created).unwrap();
    for sql in [
        "CREATE TABLE ref_customers (customer_id text PRIMARY KEY, segment text)",
        "INSERT INTO ref_customers VALUES ('cus_001', 'enterprise'), ('cus_002', 'smb')",
    ] {
        diesel::sql_query(sql).execute(&mut env.pg()).unwrap();
    }
    let dir = contracts.display().to_string();
    let settings = [("EVENTLINE__PIPELINE__CONTRACTS_DIR", dir.as_str())];

    env.produce(&[
        record(
            "account_created",
            json!({"account_id": "001xx000003DGb2AAG", "industry": " Healthcare ",
            "region": "US", "country": "DE", "name": "Acme"}),
        ),
        record(
            "account_updated",
            json!({"account_id": "001xx000003DGb2AAG",
            "changes": {"employee_count": 120, "industry": "Software"}}),
        ),
        record(
            "contact_created",
            json!({"contact_id": "003xx0001", "account_id": "001xx000003DGb2AAG",
            "email": "Ada.Lovelace@Example.ORG", "first_name": "Ada", "last_name": "Lovelace"}),
        ),
        record(
            "order_created",
            json!({"order_id": "ord_1", "customer_id": "cus_001", "amount": 99.5,
            "currency": "EUR", "country": "FR", "channel": " Web "}),
        ),
        record(
            "order_created",
            json!({"order_id": "ord_2", "customer_id": "cus_404", "amount": 5.0,
            "currency": "EUR"}),
        ),
        record(
            "order_paid",
            json!({"order_id": "ord_1", "amount_paid": 99.5, "currency": "EUR", "method": "card"}),
        ),
        record(
            "order_paid",
            json!({"order_id": "ord_2", "amount_paid": 5.0, "currency": "EUR", "method": "wallet"}),
        ),
    ]);
    let p = env.start_processor(&settings);
    env.wait_drained(1, Duration::from_secs(60));
    wait_until("the lake holds the 6 events", Duration::from_secs(30), || env.lake_rows() == 6);
    assert_eq!(env.stop_processor(p), 0, "{}", env.processor_log(p));

    // The raw payload as sent, the normalised fields next to it.
    let account = "event_type = 'account_created'";
    assert_eq!(
        text(&env, &format!("SELECT payload->>'industry' AS t FROM events WHERE {account}")),
        " Healthcare "
    );
    assert_eq!(
        text(&env, &format!("SELECT concat_ws('|', normalized->>'industry', normalized->>'region', normalized->>'country_name') AS t FROM events WHERE {account}")),
        "healthcare|AMER|Germany"
    );
    // Lifted out of `changes`, folded into the account's state with the created fields.
    assert_eq!(
        text(&env, "SELECT concat_ws('|', industry, region, country_name, employee_count::text, name) AS t FROM account_states"),
        "software|AMER|Germany|120|Acme"
    );
    assert_eq!(
        text(&env, "SELECT concat_ws('|', email, full_name) AS t FROM contact_states"),
        "ada.lovelace@example.org|Ada Lovelace"
    );
    // Enriched from the CSV and from the Postgres table; a key neither has gives no value.
    assert_eq!(
        text(&env, "SELECT string_agg(concat_ws('|', order_id, status, channel, sales_area, segment), ',' ORDER BY order_id) AS t FROM order_states"),
        "ord_1|paid|web|EMEA|enterprise,ord_2|created"
    );
    // The strict map: `wallet` is dead-lettered, naming the rule.
    assert_eq!(
        text(&env, "SELECT error_class || ': ' || error_message AS t FROM dead_letters"),
        "transform_failed: transform rule 'method: settled ones only': /payload/method: value 'wallet' is not in the map"
    );
    // The lake's typed columns hold the normalised values.
    let lake = duckdb_delta(&format!(
        "SELECT industry, region, country_name FROM delta_scan('{}') WHERE event_type = 'account_created'",
        env.lake.display()
    ));
    assert_eq!(lake.trim(), "healthcare,AMER,Germany");

    // A broken transforms file stops start-up, naming the file and the line.
    std::fs::write(
        contracts.join("account_created/v1.transforms.toml"),
        "[[rule]]\nname = \"ok\"\nfield = \"region\"\ntrim = true\n\n[[rule]]\nname = \"broken\"\nfield = \"industry\"\ncase = \"shouting\"\n",
    )
    .unwrap();
    let p = env.start_processor(&settings);
    let code = env.exit_code_within(p, Duration::from_secs(60));
    let log = env.processor_log(p);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(
            "account_created/v1.transforms.toml, line 6: rule 'broken': case = 'shouting'"
        ),
        "{log}"
    );
}
