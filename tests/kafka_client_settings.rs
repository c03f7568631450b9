//! `[kafka.client]` (issue 17): librdkafka properties pass through to every client; a
//! property librdkafka does not know, a bad value, or one eventline sets itself fails at
//! start naming the key; an unreachable broker fails within `kafka.connect_timeout_s`
//! with a clear message instead of a process that waits silently.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

fn eventline(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, Duration) {
    let started = Instant::now();
    let (code, stdout, stderr) = env.eventline_with(args, extra);
    (code, format!("{stdout}{stderr}"), started.elapsed())
}

#[test]
fn bad_client_properties_fail_at_start_naming_the_key() {
    let env = TestEnv::new(1);
    for (variable, value, expected) in [
        ("EVENTLINE__KAFKA__CLIENT__NO_SUCH_PROPERTY", "1", "key `kafka.client.no.such.property`"),
        (
            "EVENTLINE__KAFKA__CLIENT__SECURITY_PROTOCOL",
            "carrier_pigeon",
            "key `kafka.client.security.protocol`",
        ),
        ("EVENTLINE__KAFKA__CLIENT__ENABLE_AUTO_COMMIT", "true", "sets this property itself"),
    ] {
        for command in ["config", "run"] {
            let (code, out, _) = eventline(&env, &[command], &[(variable, value)]);
            assert_eq!(code, 1, "{command} with {variable}: {out}");
            assert!(out.contains(expected), "{command} with {variable}: {out}");
        }
    }
    // A good property passes, in both spellings, and shows in the effective settings.
    let (code, out, _) = eventline(
        &env,
        &["config"],
        &[
            ("EVENTLINE__KAFKA__CLIENT__CLIENT_ID", "eventline-test"),
            ("EVENTLINE__KAFKA__CLIENT__SOCKET_KEEPALIVE_ENABLE", "true"),
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"client.id\": \"eventline-test\"")
            && out.contains("\"socket.keepalive.enable\": \"true\""),
        "{out}"
    );
}

#[test]
fn an_unreachable_broker_fails_the_start_within_the_connect_timeout() {
    let env = TestEnv::new(1);
    let (code, out, took) = eventline(
        &env,
        &["run"],
        &[
            ("EVENTLINE__KAFKA__BROKERS", "127.0.0.1:1"),
            ("EVENTLINE__KAFKA__CONNECT_TIMEOUT_S", "3"),
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach Kafka at 127.0.0.1:1 within 3 s"), "{out}");
    assert!(took < Duration::from_secs(15), "bounded: took {took:?}");
    println!("unreachable broker: exit {code} after {took:?}");
}

#[test]
fn client_properties_reach_the_consumer_and_the_producers() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(20));
    // A client id of our own shows in the broker's view of the group's members.
    let p =
        env.start_processor(&[("EVENTLINE__KAFKA__CLIENT__CLIENT_ID", "eventline-pass-through")]);
    env.wait_drained(1, Duration::from_secs(60));
    let members = kafka_group_client_ids(&env);
    assert!(members.iter().any(|m| m == "eventline-pass-through"), "{members:?}");
    assert_eq!(env.stop_processor(p), 0);
}

fn kafka_group_client_ids(env: &TestEnv) -> Vec<String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .create()
        .expect("consumer");
    let groups =
        consumer.fetch_group_list(Some(&env.group), Duration::from_secs(10)).expect("groups");
    groups
        .groups()
        .iter()
        .flat_map(|g| g.members().iter().map(|m| m.client_id().to_string()))
        .collect()
}
