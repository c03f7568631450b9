//! Secrets are never printed (issue 17): a password in the Postgres URL, a
//! `kafka.client` secret and one read from a `*_file` setting are set to recognisable
//! values, the processor runs at debug level (librdkafka's `security` and `conf`
//! debugging on too), and every output is searched: `eventline config`, the processor
//! log, a start-up error, the supervision log, `/metrics`, `/supervision`, and a drill's
//! output and report.

mod helpers;

use helpers::*;
use std::time::Duration;

const PG_SECRET: &str = "Pg-S3cret-4711";
const KAFKA_SECRET: &str = "Kafka-S3cret-4712";
const FILE_SECRET: &str = "File-S3cret-4713";

fn assert_clean(what: &str, text: &str) {
    for secret in [PG_SECRET, KAFKA_SECRET, FILE_SECRET] {
        assert!(!text.contains(secret), "{what} prints a secret ({secret}):\n{text}");
    }
}

/// `eventline ARGS` with the test's settings and `extra`: (exit code, stdout and stderr).
fn run(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (i32, String) {
    let (code, stdout, stderr) = env.eventline_with(args, extra);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn no_output_ever_shows_a_secret() {
    let mut env = TestEnv::new(1);
    let url = env.db_url.replacen("://eventline@", &format!("://eventline:{PG_SECRET}@"), 1);
    assert_ne!(url, env.db_url, "the test URL has the expected user");
    env.use_database(&url);
    let key_password = env.dir().join("ssl-key-password");
    std::fs::write(&key_password, format!("{FILE_SECRET}\n")).unwrap();
    let key_password = key_password.display().to_string();
    let extra = [
        ("EVENTLINE__KAFKA__CLIENT__SASL_USERNAME", "eventline"),
        ("EVENTLINE__KAFKA__CLIENT__SASL_PASSWORD", KAFKA_SECRET),
        ("EVENTLINE__KAFKA__CLIENT__SSL_KEY_PASSWORD_FILE", key_password.as_str()),
        ("EVENTLINE__KAFKA__CLIENT__DEBUG", "security,conf"),
        ("RUST_LOG", "debug"),
    ];
    let (code, config) = run(&env, &["config"], &extra);
    assert_eq!(code, 0, "{config}");
    assert_clean("eventline config", &config);
    assert!(
        config.contains("eventline:[redacted]@") && config.matches("[redacted]").count() >= 3,
        "the secrets are shown as redacted: {config}"
    );
    assert!(config.contains("\"sasl.username\": \"eventline\""), "the rest is shown: {config}");

    let dead = format!("postgres://eventline:{PG_SECRET}@127.0.0.1:1/nowhere");
    let (code, error) = run(
        &env,
        &["migrate"],
        &[("EVENTLINE__POSTGRES__URL", dead.as_str()), ("RUST_LOG", "debug")],
    );
    assert_ne!(code, 0, "{error}");
    assert_clean("a start-up error", &error);

    let mut records = valid_records(50);
    records.push((None, "bad".into(), Some(b"{not json".to_vec())));
    env.produce(&records);
    let p = env.start_processor(&extra);
    env.wait_drained(1, Duration::from_secs(60));
    let admin = env.admin_url(p);
    let metrics = admin_get(&format!("{admin}/metrics")).1;
    let supervision = admin_get(&format!("{admin}/supervision")).1;
    assert!(metrics.contains("eventline_records_consumed_total"), "{metrics}");
    assert_eq!(env.stop_processor(p), 0);
    let log = env.processor_log(p);
    assert!(log.contains("DEBUG"), "the processor ran at debug level");
    assert_clean("the processor log", &log);
    assert_clean("/metrics", &metrics);
    assert_clean("/supervision", &supervision);
    assert_clean(
        "the supervision log",
        &std::fs::read_to_string(&env.supervision_log).unwrap_or_default(),
    );

    let reports = env.dir().join("reports");
    let reports_arg = reports.display().to_string();
    let (code, drill) =
        run(&env, &["drill", "verify", "--reports-dir", &reports_arg, "--timeout", "60s"], &extra);
    assert_eq!(code, 0, "{drill}");
    assert_clean("the drill's output", &drill);
    for report in std::fs::read_dir(&reports).unwrap() {
        assert_clean("a drill report", &std::fs::read_to_string(report.unwrap().path()).unwrap());
    }
}
