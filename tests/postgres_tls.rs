//! Postgres over TLS (issue 17): the local cluster serves a certificate from the CA that
//! `make up` generates under `.dev/tls/`. With `sslmode = verify-full` the processor
//! stores events over encrypted connections, set through the `postgres.ssl*` keys or
//! the URL alike, and a server whose certificate does not chain to `sslrootcert` is
//! refused at start with libpq's reason.

mod helpers;

use helpers::*;
use std::time::{Duration, Instant};

fn ca() -> String {
    repo().join(".dev/tls/ca.crt").display().to_string()
}

/// Connections to this test's database that use TLS, and all of them.
fn tls_connections(env: &TestEnv) -> (i64, i64) {
    let db = env.db_url.rsplit('/').next().unwrap().to_string();
    let q = |filter: &str| {
        env.count(&format!(
            "SELECT count(*) AS n FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = '{db}' AND a.pid <> pg_backend_pid() {filter}"
        ))
    };
    (q("AND s.ssl"), q(""))
}

#[test]
fn events_are_stored_over_verified_tls_set_by_keys_or_by_url() {
    let mut env = TestEnv::new(1);
    env.produce(&valid_records(50));
    let p = env.start_processor(&[
        ("EVENTLINE__POSTGRES__SSLMODE", "verify-full"),
        ("EVENTLINE__POSTGRES__SSLROOTCERT", &ca()),
    ]);
    env.wait_drained(1, Duration::from_secs(60));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 50);
    let (tls, all) = tls_connections(&env);
    assert!(tls > 0 && tls == all, "every processor connection uses TLS: {tls} of {all}");
    assert_eq!(env.stop_processor(p), 0);
    println!("keys: 50 events stored, {tls} of {all} connections over TLS");

    // The same through the URL alone.
    env.produce(&valid_records(50));
    let url = format!("{}?sslmode=verify-full&sslrootcert={}", env.db_url, ca());
    let p = env.start_processor(&[("EVENTLINE__POSTGRES__URL", &url)]);
    env.wait_drained(1, Duration::from_secs(60));
    assert_eq!(env.count("SELECT count(*) AS n FROM events"), 100);
    let (tls, all) = tls_connections(&env);
    assert!(tls > 0 && tls == all, "every processor connection uses TLS: {tls} of {all}");
    assert_eq!(env.stop_processor(p), 0);
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_at_start() {
    let env = TestEnv::new(1);
    let other_ca = env.dir().join("other-ca.crt");
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=some other CA", "-keyout"])
        .arg(env.dir().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let started = Instant::now();
    let (code, out, err) = env.eventline_with(
        &["run"],
        &[
            ("EVENTLINE__POSTGRES__SSLMODE", "verify-full"),
            ("EVENTLINE__POSTGRES__SSLROOTCERT", other_ca.to_str().unwrap()),
        ],
    );
    let text = format!("{out}{err}");
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("certificate verify failed"), "libpq's reason: {text}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn a_bad_sslmode_names_the_key() {
    let env = TestEnv::new(1);
    let (code, out, err) =
        env.eventline_with(&["config"], &[("EVENTLINE__POSTGRES__SSLMODE", "sometimes")]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(format!("{out}{err}").contains("key `postgres.sslmode`"), "{out}{err}");
}
