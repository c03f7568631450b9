//! A secured cluster (issue 17): the local broker's second listener, SASL_SSL with
//! SCRAM-SHA-512 and a certificate from the CA that `make up` generates under
//! `.dev/tls/`. The processor, its dead-letter producer and `eventline produce` all go
//! through it with `[kafka.client]` settings alone; a wrong password ends the start at
//! once with the broker's reason, and the password is never printed.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

/// The stack's secured listener: the PLAINTEXT port + 2.
fn secured_brokers(env: &TestEnv) -> String {
    let (host, port) = env.brokers.rsplit_once(':').expect("host:port");
    format!("{host}:{}", port.parse::<u16>().expect("port") + 2)
}

fn tls_dir() -> std::path::PathBuf {
    repo().join(".dev/tls")
}

/// The settings a user of a SCRAM cluster writes, as environment variables; the password
/// comes from a file, as container platforms mount it.
fn secured_settings(env: &TestEnv, password_file: &str) -> Vec<(String, String)> {
    vec![
        ("EVENTLINE__KAFKA__BROKERS".into(), secured_brokers(env)),
        ("EVENTLINE__KAFKA__CLIENT__SECURITY_PROTOCOL".into(), "SASL_SSL".into()),
        ("EVENTLINE__KAFKA__CLIENT__SASL_MECHANISMS".into(), "SCRAM-SHA-512".into()),
        ("EVENTLINE__KAFKA__CLIENT__SASL_USERNAME".into(), "eventline".into()),
        ("EVENTLINE__KAFKA__CLIENT__SASL_PASSWORD_FILE".into(), password_file.into()),
        (
            "EVENTLINE__KAFKA__CLIENT__SSL_CA_LOCATION".into(),
            tls_dir().join("ca.crt").display().to_string(),
        ),
        ("EVENTLINE__KAFKA__CONNECT_TIMEOUT_S".into(), "20".into()),
    ]
}

fn as_refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn the_pipeline_runs_end_to_end_through_sasl_ssl() {
    let mut env = TestEnv::new(3);
    let password_file = tls_dir().join("kafka-password").display().to_string();
    let password = std::fs::read_to_string(&password_file).expect("make up wrote the password");
    let secured = secured_settings(&env, &password_file);

    // The producer: 300 generated events and one that breaks its contract, through the
    // secured listener.
    let (code, out, err) =
        env.eventline_with(&["produce", "--generate", "300", "--seed", "17"], &as_refs(&secured));
    assert_eq!(code, 0, "{out}{err}");
    env.produce(&[(Some(0), "bad".into(), Some(b"{\"event_id\": 7}".to_vec()))]);

    // The consumer, the offset commits and the dead-letter producer.
    let p = env.start_processor(&as_refs(&secured));
    env.wait_drained(3, Duration::from_secs(90));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 300);
    wait_until("the lake holds every event", Duration::from_secs(30), || env.lake_rows() == 300);
    let dead = env.read_topic(&env.dlq_topic.clone(), 1);
    assert_eq!(dead.len(), 1, "one dead letter, published over SASL_SSL");
    assert_eq!(env.stop_processor(p), 0);

    let log = env.processor_log(p);
    let running = format!("at {} (SASL_SSL)", secured_brokers(&env));
    assert!(log.contains(&running), "the log names the secured listener: {log}");
    assert!(!log.contains(password.trim()), "the password is never printed");
    println!("SASL_SSL end to end: 300 events in Postgres and the lake, 1 dead letter");
}

#[test]
fn a_wrong_password_fails_the_start_at_once_with_the_reason() {
    let env = TestEnv::new(1);
    let wrong = env.dir().join("wrong-password");
    std::fs::write(&wrong, "not-the-password-4711\n").unwrap();
    let secured = secured_settings(&env, &wrong.display().to_string());
    for args in [&["run"][..], &["produce", "--generate", "1"][..]] {
        let started = Instant::now();
        let (code, out, err) = env.eventline_with(args, &as_refs(&secured));
        let took = started.elapsed();
        let text = format!("{out}{err}");
        assert_eq!(code, 1, "{args:?}: {text}");
        assert!(
            text.contains(&format!("cannot reach Kafka at {}", secured_brokers(&env))),
            "{text}"
        );
        assert!(text.contains("Authentication failed"), "{args:?}: the broker's reason: {text}");
        assert!(
            !text.contains("not-the-password-4711"),
            "{args:?}: the password is printed: {text}"
        );
        // Authentication failures end the start at once, not after the connect timeout.
        assert!(took < Duration::from_secs(15), "{args:?}: took {took:?}");
        println!("wrong password, {args:?}: exit {code} after {took:?}");
    }
    // Nothing was stored (the start ended before the tables were even made: -1).
    assert!(env.count("SELECT count(*) AS n FROM events") <= 0);
}
