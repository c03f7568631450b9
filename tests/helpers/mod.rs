//! Shared by the integration tests: each test gets its own topics, consumer group,
//! database and lake folder (random suffix), so tests run in parallel against the one
//! local stack and leave nothing behind. The processor under test is the real
//! `eventline` binary, configured through `EVENTLINE__SECTION__KEY` variables.
//!
//! By concern: [`kafka`], [`postgres`], [`lake`], [`processor`], [`records`]; this file
//! holds the test's environment and what they share.
// Each test binary uses only a part of the helpers.
#![allow(dead_code, unused_imports)]

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use eventline::settings::Settings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod hostile;
mod kafka;
mod lake;
mod postgres;
mod processor;
mod records;

pub use kafka::*;
pub use lake::*;
pub use postgres::*;
pub use processor::*;
pub use records::*;

/// A record to produce: (partition, or by key when `None`; key; value, `None` for a tombstone).
pub type TestRecord = (Option<i32>, String, Option<Vec<u8>>);

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The stack's settings (settings/default.toml + settings/local.toml).
pub fn stack_settings() -> Settings {
    Settings::load(&repo().join("settings")).expect("settings/local.toml loads")
}

fn reachable(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

fn host_port(url: &str) -> String {
    let after = url.split('@').next_back().unwrap_or(url);
    after.split('/').next().unwrap_or(after).to_string()
}

/// Polls `check` until it returns true or `timeout` passes; panics naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One test's private slice of the stack.
pub struct TestEnv {
    /// Kafka bootstrap servers.
    pub brokers: String,
    /// The source topic.
    pub topic: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// Consumer group of the processor.
    pub group: String,
    /// URL of this test's database.
    pub db_url: String,
    db_name: String,
    admin_url: String,
    /// This test's lake root.
    pub lake: PathBuf,
    /// This test's supervision log.
    pub supervision_log: PathBuf,
    dir: tempfile::TempDir,
    processors: Vec<Child>,
}

/// The binary under test.
pub fn binary() -> PathBuf {
    std::env::var_os("EVENTLINE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/release/eventline"))
}

/// Runs a future to completion on a small runtime.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

impl TestEnv {
    /// Creates topics (with `partitions`), a database and a lake folder.
    pub fn new(partitions: i32) -> TestEnv {
        let settings = stack_settings();
        let brokers = settings.kafka.brokers.clone();
        let admin_url = settings.postgres.url.clone();
        assert!(
            reachable(&brokers) && reachable(&host_port(&admin_url)),
            "the local stack is down (Kafka {brokers}, Postgres {admin_url}): run `make up`"
        );
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let db_name = format!("eventline_test_{suffix}");
        let mut admin =
            PgConnection::establish(&admin_url).expect("connect to the stack's Postgres");
        diesel::sql_query(format!("CREATE DATABASE {db_name}"))
            .execute(&mut admin)
            .expect("create test database");
        let db_url =
            format!("{}/{db_name}", admin_url.rsplit_once('/').expect("url has a database").0);
        let dir = tempfile::tempdir().expect("temp dir");
        let env = TestEnv {
            brokers,
            topic: format!("crm.events.raw.{suffix}"),
            dlq_topic: format!("crm.events.dlq.{suffix}"),
            group: format!("eventline-test-{suffix}"),
            db_url,
            db_name,
            admin_url,
            lake: dir.path().join("lake"),
            supervision_log: dir.path().join("supervision.jsonl"),
            dir,
            processors: Vec::new(),
        };
        env.create_topics(partitions);
        env
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("admin client")
    }

    fn create_topics(&self, partitions: i32) {
        let topics = [
            NewTopic::new(&self.topic, partitions, TopicReplication::Fixed(1)),
            NewTopic::new(&self.dlq_topic, 1, TopicReplication::Fixed(1)),
        ];
        let results = block_on(self.admin().create_topics(&topics, &AdminOptions::new()))
            .expect("create topics");
        for result in results {
            result.expect("topic created");
        }
    }

    /// The test's working folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for child in &mut self.processors {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            for i in 0..self.processors.len() {
                eprintln!("--- processor {i} log (tail) ---\n{}", tail(&self.processor_log(i), 60));
            }
        }
        let _ = block_on(
            self.admin().delete_topics(&[&self.topic, &self.dlq_topic], &AdminOptions::new()),
        );
        if let Ok(mut admin) = PgConnection::establish(&self.admin_url) {
            let _ =
                diesel::sql_query(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                    .execute(&mut admin);
        }
    }
}
