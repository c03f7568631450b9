//! Shared by the integration tests: each test gets its own topics, consumer group,
//! database and lake folder (random suffix), so tests run in parallel against the one
//! local stack and leave nothing behind. The processor under test is the real
//! `eventline` binary, configured through `EVENTLINE__SECTION__KEY` variables.
#![allow(dead_code)]

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

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
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

    /// A producer to the local broker.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("producer")
    }

    /// Produces `(key, value)` records to the source topic and waits for every delivery.
    /// Records without a partition go where their key hashes.
    pub fn produce(&self, records: &[TestRecord]) {
        produce_to(&self.brokers, &self.topic, records);
    }
}

/// Produces records to `topic` and waits for every delivery (usable from a thread).
pub fn produce_to(brokers: &str, topic: &str, records: &[TestRecord]) {
    {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .create()
            .expect("producer");
        block_on(async {
            let sends = records.iter().map(|(partition, key, value)| {
                let mut record = FutureRecord::<str, [u8]>::to(topic).key(key.as_str());
                if let Some(p) = partition {
                    record = record.partition(*p);
                }
                if let Some(v) = value {
                    record = record.payload(v.as_slice());
                }
                producer.send(record, Duration::from_secs(30))
            });
            for result in futures::future::join_all(sends).await {
                if let Err((error, _)) = result {
                    panic!("record not delivered: {error}");
                }
            }
        });
    }
}

impl TestEnv {
    /// The environment that points the processor at this test's slice.
    pub fn processor_env(&self) -> Vec<(String, String)> {
        [
            ("EVENTLINE_ENV", "local".to_string()),
            ("EVENTLINE_SETTINGS_DIR", repo().join("settings").display().to_string()),
            ("EVENTLINE__KAFKA__BROKERS", self.brokers.clone()),
            ("EVENTLINE__KAFKA__TOPIC", self.topic.clone()),
            ("EVENTLINE__KAFKA__DLQ_TOPIC", self.dlq_topic.clone()),
            ("EVENTLINE__KAFKA__GROUP_ID", self.group.clone()),
            ("EVENTLINE__KAFKA__SESSION_TIMEOUT_MS", "6000".to_string()),
            ("EVENTLINE__POSTGRES__URL", self.db_url.clone()),
            ("EVENTLINE__LAKE__ROOT", self.lake.display().to_string()),
            ("EVENTLINE__LAKE__MAX_FILE_AGE_MS", "500".to_string()),
            ("EVENTLINE__PIPELINE__CONTRACTS_DIR", repo().join("contracts").display().to_string()),
            ("EVENTLINE__PIPELINE__SUMMARY_INTERVAL_S", "2".to_string()),
            ("EVENTLINE__SUPERVISION__LOG_PATH", self.supervision_log.display().to_string()),
            ("EVENTLINE__ADMIN__LISTEN", "127.0.0.1:0".to_string()),
            ("RUST_LOG", std::env::var("EVENTLINE_TEST_RUST_LOG").unwrap_or("info".into())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Produces `records` to a topic of `partitions` partitions, runs a processor until
    /// both sinks hold the `accepted` events, and stops it (exit 0).
    pub fn store_all(&mut self, partitions: i32, records: &[TestRecord], accepted: usize) {
        self.produce(records);
        let p = self.start_processor(&[]);
        self.wait_drained(partitions, Duration::from_secs(60));
        wait_until("the lake holds every accepted event", Duration::from_secs(30), || {
            self.lake_rows() == accepted as i64
        });
        assert_eq!(self.stop_processor(p), 0);
    }

    /// Starts the real binary with this test's settings plus `extra` variables.
    pub fn start_processor(&mut self, extra: &[(&str, &str)]) -> usize {
        self.start_processor_in(&repo(), extra)
    }

    /// Starts the real binary in its own working folder `dir`, as on a host of its own:
    /// its supervision log is there too (the settings and contracts paths are absolute).
    pub fn start_processor_in(&mut self, dir: &Path, extra: &[(&str, &str)]) -> usize {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("processor-{}.log", self.processors.len())))
            .expect("processor log");
        let mut command = Command::new(binary());
        command.arg("run").current_dir(dir).stdout(Stdio::null()).stderr(log);
        for (k, v) in self.processor_env() {
            command.env(k, v);
        }
        if dir != repo() {
            let own_log = dir.join("supervision.jsonl").display().to_string();
            command.env("EVENTLINE__SUPERVISION__LOG_PATH", own_log);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        self.processors.push(command.spawn().expect("start eventline"));
        self.processors.len() - 1
    }

    /// The processor's log so far (for assertion messages).
    pub fn processor_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("processor-{index}.log")))
            .unwrap_or_default()
    }

    /// How many write calls a processor's `sink` writer (`postgres` or `lake`) has
    /// completed (from its metrics; 0 until its admin server answers).
    pub fn sink_writes(&self, index: usize, sink: &str) -> u64 {
        if !self.processor_log(index).contains("Admin server listening") {
            return 0;
        }
        let (_, metrics) = admin_get(&format!("{}/metrics", self.admin_url(index)));
        let prefix = format!("eventline_sink_write_seconds_count{{sink=\"{sink}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// The admin server's base URL, read from the processor's start-up log line.
    pub fn admin_url(&self, index: usize) -> String {
        let mut url = String::new();
        wait_until("the admin server is listening", Duration::from_secs(30), || {
            let log = self.processor_log(index);
            if let Some(rest) = log.split("Admin server listening on ").nth(1) {
                url = rest.split_whitespace().next().unwrap_or_default().to_string();
            }
            !url.is_empty()
        });
        url
    }

    /// SIGTERM, then waits for the exit code.
    pub fn stop_processor(&mut self, index: usize) -> i32 {
        let child = &mut self.processors[index];
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "processor did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit code of a processor that must stop by itself within `timeout`.
    pub fn exit_code_within(&mut self, index: usize, timeout: Duration) -> i32 {
        let child = &mut self.processors[index];
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "processor still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The operating system's process id of a processor.
    pub fn processor_pid(&self, index: usize) -> u32 {
        self.processors[index].id()
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to a processor.
    pub fn signal_processor(&self, index: usize, signal: &str) {
        let pid = self.processors[index].id().to_string();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -{signal} failed");
    }

    /// kill -9.
    pub fn kill_processor(&mut self, index: usize) {
        let child = &mut self.processors[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    /// A connection to this test's database.
    pub fn pg(&self) -> PgConnection {
        PgConnection::establish(&self.db_url).expect("connect to the test database")
    }

    /// Runs a `SELECT count(*) AS n ...`-style query returning one bigint named `n`.
    pub fn count(&self, sql: &str) -> i64 {
        diesel::sql_query(sql).get_result::<Count>(&mut self.pg()).map(|c| c.n).unwrap_or(-1)
    }

    /// Outcome counts per outcome, summed over partitions.
    pub fn outcomes(&self) -> HashMap<String, i64> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            outcome: String,
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(
            "SELECT outcome, sum(count)::bigint AS n FROM outcome_counts GROUP BY outcome",
        )
        .load::<Row>(&mut self.pg())
        .map(|rows| rows.into_iter().map(|r| (r.outcome, r.n)).collect())
        .unwrap_or_default()
    }

    /// Every event id in Postgres's `events`.
    pub fn event_ids_pg(&self) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Id {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
        }
        diesel::sql_query("SELECT event_id::text AS id FROM events")
            .load::<Id>(&mut self.pg())
            .expect("events read")
            .into_iter()
            .map(|r| r.id)
            .collect()
    }

    /// The supervision log's failures, restarts and give-ups, as `actor kind: cause`.
    pub fn supervision_failures(&self) -> Vec<String> {
        use eventline::telemetry::supervision_log::{read_entries, EntryKind};
        read_entries(&self.supervision_log)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| {
                matches!(e.kind, EntryKind::Failure | EntryKind::Restart | EntryKind::GiveUp)
            })
            .map(|e| format!("{} {:?}: {}", e.actor, e.kind, e.cause.unwrap_or_default()))
            .collect()
    }

    /// Whether a processor has exited (without waiting).
    pub fn processor_exited(&mut self, index: usize) -> bool {
        self.processors[index].try_wait().expect("wait").is_some()
    }

    /// Sum of all outcomes: records the Postgres sink has accounted for.
    pub fn outcomes_total(&self) -> i64 {
        self.outcomes().values().sum()
    }

    /// Committed offsets of the processor's group, per partition (-1: none).
    pub fn committed(&self, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.topic, p);
        }
        let committed =
            consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        (0..partitions)
            .map(|p| match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    }

    /// High watermarks of the source topic per partition.
    pub fn high_watermarks(&self, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().expect("consumer");
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1
            })
            .collect()
    }

    /// Reads the lake with DuckDB (a reader nobody here wrote): (rows, distinct event_ids).
    pub fn lake_counts_duckdb(&self) -> (i64, i64) {
        let out = duckdb(&format!(
            "SELECT count(*), count(DISTINCT event_id) FROM read_parquet('{}/event_type=*/*/*/*/*.parquet', hive_partitioning=true)",
            self.lake.display()
        ));
        let mut parts =
            out.trim().split(',').map(|v| v.trim().parse::<i64>().expect("a number from duckdb"));
        (parts.next().unwrap(), parts.next().unwrap())
    }

    /// Number of rows in the lake, 0 when it holds no file yet.
    pub fn lake_rows(&self) -> i64 {
        if lake_files(&self.lake).is_empty() {
            return 0;
        }
        self.lake_counts_duckdb().0
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

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Every published Parquet file under a lake root.
pub fn lake_files(root: &Path) -> Vec<PathBuf> {
    let store = eventline::sinks::lake::store::LakeStore::local(root).expect("a local lake");
    let files = eventline::sinks::lake::reader::data_files(&store).expect("the lake reads");
    files.into_iter().map(|f| root.join(f)).collect()
}

/// Runs one SQL statement in DuckDB (Python package) and returns its rows as CSV.
pub fn duckdb(sql: &str) -> String {
    let script = "import duckdb, sys\nfor row in duckdb.sql(sys.argv[1]).fetchall():\n    print(','.join(str(v) for v in row))";
    let out =
        Command::new("python3").arg("-c").arg(script).arg(sql).output().expect("python3 runs");
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs one SQL statement in DuckDB with its delta extension loaded (from the PyPI
/// package, no download at run time) and returns its rows as CSV.
pub fn duckdb_delta(sql: &str) -> String {
    let script = "import duckdb, sys\nfrom duckdb_extensions import import_extension\nimport_extension('delta')\nduckdb.sql('LOAD delta')\nfor row in duckdb.sql(sys.argv[1]).fetchall():\n    print(','.join(str(v) for v in row))";
    let out =
        Command::new("python3").arg("-c").arg(script).arg(sql).output().expect("python3 runs");
    assert!(out.status.success(), "duckdb failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Reads a Delta table with Python `deltalake` (delta-rs's own Python reader): its
/// version, row count and the txn version of each of `partitions` of `topic`, as JSON.
pub fn deltalake_summary(table: &Path, topic: &str, partitions: i32) -> serde_json::Value {
    deltalake_summary_at(&table.display().to_string(), &serde_json::json!({}), topic, partitions)
}

/// [`deltalake_summary`] of a table at a URI (`s3://...`), with deltalake's storage
/// options.
pub fn deltalake_summary_at(
    uri: &str,
    options: &serde_json::Value,
    topic: &str,
    partitions: i32,
) -> serde_json::Value {
    // Rows and distinct ids counted by deltalake's own query engine (DataFusion) over the
    // files the table names.
    let script = "import json, sys\nfrom deltalake import DeltaTable, QueryBuilder\nt = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[4]))\ntopic, n = sys.argv[2], int(sys.argv[3])\nr = QueryBuilder().register('events', t).execute('SELECT count(*) AS n, count(DISTINCT event_id) AS d FROM events').read_all()\nprint(json.dumps({'version': t.version(), 'rows': t.count(), 'scanned': r['n'][0].as_py(), 'distinct': r['d'][0].as_py(), 'partition_columns': t.metadata().partition_columns, 'txn': [t.transaction_version(f'eventline/{topic}/{p}') for p in range(n)]}))";
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(uri)
        .arg(topic)
        .arg(partitions.to_string())
        .arg(options.to_string())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "deltalake failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from the script")
}

/// A bucket of its own on the stack's S3 server (moto), for a lake on object storage.
pub struct S3Lake {
    /// The bucket.
    pub bucket: String,
    /// The server's URL.
    pub endpoint: String,
}

impl S3Lake {
    /// Creates a bucket with a random name (the stack's S3 server must be up:
    /// `scripts/stack.sh up-s3`, which `make test` runs).
    pub fn new() -> Self {
        let stack = repo().join("scripts/stack.sh");
        let endpoint = Command::new(&stack).arg("s3-endpoint").output().expect("stack.sh runs");
        let endpoint = String::from_utf8(endpoint.stdout).expect("utf-8").trim().to_string();
        let bucket = format!("lake-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let made =
            Command::new(&stack).args(["s3-bucket", &bucket]).status().expect("stack.sh runs");
        assert!(
            made.success(),
            "creating bucket {bucket} (is the S3 server up? make test starts it)"
        );
        S3Lake { bucket, endpoint }
    }

    /// `lake.root` for this bucket.
    pub fn root(&self) -> String {
        format!("s3://{}/lake", self.bucket)
    }

    /// The processor's settings for a lake in this bucket.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("EVENTLINE__LAKE__ROOT", self.root()),
            ("EVENTLINE__LAKE__S3_ENDPOINT", self.endpoint.clone()),
            ("EVENTLINE__LAKE__S3_REGION", "us-east-1".to_string()),
            ("EVENTLINE__LAKE__S3_ACCESS_KEY_ID", "eventline".to_string()),
            ("EVENTLINE__LAKE__S3_SECRET_ACCESS_KEY", "eventline".to_string()),
            ("EVENTLINE__LAKE__S3_ALLOW_HTTP", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The lake's store, as the processor opens it.
    pub fn store(&self) -> eventline::sinks::lake::store::LakeStore {
        let options = eventline::sinks::lake::store::S3Options {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
            access_key_id: Some("eventline".into()),
            secret_access_key: Some("eventline".into()),
            allow_http: true,
        };
        eventline::sinks::lake::store::LakeStore::open(Path::new(&self.root()), &options)
            .expect("an S3 lake")
    }

    /// The lake's progress on a partition (the Delta tables' txn versions).
    pub fn progress(&self, topic: &str, partition: i32) -> Option<i64> {
        eventline::sinks::lake::writer::lake_progress(&self.store(), topic, partition)
            .expect("the lake's tables read")
    }

    /// Python deltalake's view of the events table.
    pub fn deltalake_summary(&self, topic: &str, partitions: i32) -> serde_json::Value {
        let options = serde_json::json!({
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "eventline",
            "AWS_SECRET_ACCESS_KEY": "eventline",
            "AWS_ALLOW_HTTP": "true",
        });
        deltalake_summary_at(&self.root(), &options, topic, partitions)
    }

    /// The events the lake holds (eventline's reader of the Delta table), sorted ids.
    pub fn event_ids(&self, topic: &str) -> Vec<String> {
        let rows = eventline::sinks::lake::reader::read_rows(&self.store(), Some(topic))
            .expect("the lake reads");
        let mut ids: Vec<String> = rows.into_iter().map(|r| r.event_id).collect();
        ids.sort();
        ids
    }
}

impl Default for S3Lake {
    fn default() -> Self {
        Self::new()
    }
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

/// A valid `account_created` event as JSON text.
pub fn account_created(event_id: &str, account: &str) -> String {
    serde_json::json!({
        "event_id": event_id,
        "event_type": "account_created",
        "source": "crm",
        "timestamp": "2026-11-22T10:15:00+01:00",
        "payload": {"account_id": account, "industry": "software", "region": "EMEA"}
    })
    .to_string()
}

/// `n` valid events with fresh ids, keyed by account, as records for [`TestEnv::produce`].
pub fn valid_records(n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| {
            let account = format!("acc_{i:06}");
            let id = uuid::Uuid::new_v4().to_string();
            (None, account.clone(), Some(account_created(&id, &account).into_bytes()))
        })
        .collect()
}

/// A point-in-time picture of both sinks, to compare before and after a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Row counts per table.
    pub tables: Vec<(String, i64)>,
    /// Outcome counts.
    pub outcomes: std::collections::BTreeMap<String, i64>,
    /// Lake rows and distinct event ids.
    pub lake: (i64, i64),
    /// A hash of the sorted event ids in the lake.
    pub lake_ids_hash: String,
    /// A hash of the sorted event ids in Postgres.
    pub pg_ids_hash: String,
}

impl TestEnv {
    /// Takes a [`Snapshot`].
    pub fn snapshot(&self) -> Snapshot {
        let tables = ["events", "processed_events", "dead_letters", "conflicts"]
            .iter()
            .map(|t| (t.to_string(), self.count(&format!("SELECT count(*) AS n FROM {t}"))))
            .collect();
        let lake_ids = duckdb(&format!(
            "SELECT md5(string_agg(event_id, ',' ORDER BY event_id)) FROM read_parquet('{}/event_type=*/*/*/*/*.parquet', hive_partitioning=true)",
            self.lake.display()
        ));
        #[derive(QueryableByName)]
        struct Hash {
            #[diesel(sql_type = diesel::sql_types::Text)]
            h: String,
        }
        let pg_ids = diesel::sql_query(
            "SELECT md5(string_agg(event_id::text, ',' ORDER BY event_id::text)) AS h FROM events",
        )
        .get_result::<Hash>(&mut self.pg())
        .map(|h| h.h)
        .unwrap_or_default();
        Snapshot {
            tables,
            outcomes: self.outcomes().into_iter().collect(),
            lake: self.lake_counts_duckdb(),
            lake_ids_hash: lake_ids.trim().to_string(),
            pg_ids_hash: pg_ids,
        }
    }

    /// Commits `offset` for every partition of the source topic in the processor's
    /// group (what `kafka-consumer-groups --reset-offsets` does); the group must be idle.
    pub fn reset_group(&self, partitions: i32, offset: i64) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .create()
            .expect("consumer");
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(&self.topic, p, rdkafka::Offset::Offset(offset)).unwrap();
        }
        consumer
            .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
            .expect("reset committed offsets");
    }

    /// Waits until the processor has consumed, stored and committed everything produced.
    pub fn wait_drained(&self, partitions: i32, timeout: Duration) {
        let end = self.high_watermarks(partitions);
        let total: i64 = end.iter().sum();
        wait_until("every record is accounted for in Postgres", timeout, || {
            self.outcomes_total() == total
        });
        wait_until("offsets are committed to the end", timeout, || {
            self.committed(partitions) == end
        });
    }
}

/// Records with `n` fresh valid events, `dups` repeats of some of them, `conflicts`
/// changed repeats and `invalid` contract violations, spread over the partitions by key.
/// Returns the records and the set of event ids that must be accepted.
pub fn mixed_records(
    n: usize,
    dups: usize,
    conflicts: usize,
    invalid: usize,
) -> (Vec<TestRecord>, std::collections::BTreeSet<String>) {
    let mut records = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut originals = Vec::new();
    for i in 0..n {
        let account = format!("acc_{i:06}");
        let id = uuid::Uuid::new_v4().to_string();
        let value = account_created(&id, &account);
        originals.push((account.clone(), value.clone()));
        ids.insert(id);
        records.push((None, account, Some(value.into_bytes())));
    }
    for i in 0..dups {
        let (account, value) = &originals[(i * 7) % n];
        records.push((None, account.clone(), Some(value.clone().into_bytes())));
    }
    for i in 0..conflicts {
        let (account, value) = &originals[(i * 13 + 1) % n];
        records.push((
            None,
            account.clone(),
            Some(value.replace("software", "finance").into_bytes()),
        ));
    }
    for i in 0..invalid {
        records.push((None, format!("bad_{i}"), Some(format!("{{\"broken\": {i}").into_bytes())));
    }
    (records, ids)
}

/// A PostgreSQL cluster of the test's own, so an outage test can stop it without
/// disturbing the tests that share the stack's server.
pub struct PrivatePostgres {
    /// Its URL (database `eventline`).
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn as_postgres_user(program: &str, args: &[&str]) -> std::process::Output {
    let is_root =
        Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let mut command = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    };
    command.args(args).output().expect("postgres binaries run")
}

impl PrivatePostgres {
    /// initdb + start on a free port.
    pub fn start() -> PrivatePostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::Builder::new().prefix("eventline-pg-").tempdir_in("/tmp").unwrap();
        let _ =
            Command::new("chown").args(["postgres:", &dir.path().display().to_string()]).status();
        let data = dir.path().join("data").display().to_string();
        let out = as_postgres_user(
            &format!("{PG_BIN}/initdb"),
            &["-D", &data, "-U", "eventline", "--auth=trust", "-E", "UTF8"],
        );
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let pg = PrivatePostgres {
            url: format!("postgres://eventline@127.0.0.1:{port}/eventline"),
            port,
            dir,
        };
        pg.start_again();
        let mut admin =
            PgConnection::establish(&format!("postgres://eventline@127.0.0.1:{port}/postgres"))
                .unwrap();
        diesel::sql_query("CREATE DATABASE eventline").execute(&mut admin).unwrap();
        pg
    }

    /// Starts the stopped server and waits until it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres_user(
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", &data, "-l", &log, "-o", &options, "-w", "start"],
        );
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Shell commands that stop (like a crash) and start this server, for drills.
    pub fn stop_and_start_commands(&self) -> (String, String) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let prefix =
            if Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false) {
                "runuser -u postgres -- "
            } else {
                ""
            };
        (
            format!("{prefix}{PG_BIN}/pg_ctl -D {data} -m immediate -w stop"),
            format!("{prefix}{PG_BIN}/pg_ctl -D {data} -l {log} -o '-p {} -c listen_addresses=127.0.0.1 -k {}' -w start", self.port, self.dir.path().display()),
        )
    }

    /// Stops the server the hard way (like a crash: WAL recovery at the next start).
    pub fn crash(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let out = as_postgres_user(
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = as_postgres_user(
            &format!("{PG_BIN}/pg_ctl"),
            &["-D", &data, "-m", "immediate", "-w", "stop"],
        );
    }
}

impl TestEnv {
    /// Points the processor and the assertions at another database.
    pub fn use_database(&mut self, url: &str) {
        self.db_url = url.to_string();
    }

    /// Points the processor and the assertions at another broker, with the topics made
    /// there.
    pub fn use_brokers(&mut self, brokers: &str, partitions: i32) {
        self.brokers = brokers.to_string();
        self.create_topics(partitions);
    }
}

/// A Kafka broker of the test's own (single-node KRaft, the jars `make up` fetched), so a
/// test can stop and start it without disturbing the tests that share the stack's.
pub struct PrivateKafka {
    /// Its bootstrap address.
    pub brokers: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Java with Apache Kafka's own jars (those `make up` fetched) on the class path; its
/// log4j output goes under `logs`.
pub fn kafka_java(logs: &Path) -> Command {
    let libs = std::fs::read_dir(repo().join(".cache"))
        .expect(".cache/ exists: run `make up`")
        .filter_map(Result::ok)
        .map(|e| e.path().join("libs"))
        .find(|libs| libs.is_dir())
        .expect("the Kafka jars under .cache/kafka-*/libs: run `make up`");
    let mut java = Command::new("java");
    java.args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-cp"])
        .arg(format!("{}/*", libs.display()))
        .arg(format!(
            "-Dlog4j.configuration=file:{}",
            repo().join("scripts/kafka/log4j.properties").display()
        ))
        .arg(format!("-Dkafka.logs.dir={}", logs.display()));
    java
}

impl PrivateKafka {
    fn java(&self) -> Command {
        kafka_java(&self.dir.path().join("logs"))
    }

    /// Formats its storage and starts it on free ports.
    pub fn start() -> PrivateKafka {
        let (port, controller) = (free_port(), free_port());
        let dir = tempfile::Builder::new().prefix("eventline-kafka-").tempdir().unwrap();
        let props = format!(
            "process.roles=broker,controller\nnode.id=1\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\nlog.dirs={}\n\
             auto.create.topics.enable=false\noffsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\ntransaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\ngroup.initial.rebalance.delay.ms=0\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("server.properties"), props).unwrap();
        let mut kafka = PrivateKafka { brokers: format!("127.0.0.1:{port}"), dir, child: None };
        let id = kafka.java().args(["kafka.tools.StorageTool", "random-uuid"]).output().unwrap();
        let id = String::from_utf8_lossy(&id.stdout).trim().to_string();
        let props = kafka.dir.path().join("server.properties").display().to_string();
        let out = kafka
            .java()
            .args(["kafka.tools.StorageTool", "format", "-t", &id, "-c", &props])
            .output()
            .unwrap();
        assert!(out.status.success(), "format: {}", String::from_utf8_lossy(&out.stderr));
        kafka.start_again();
        kafka
    }

    /// Starts the stopped broker and waits until it answers.
    pub fn start_again(&mut self) {
        let props = self.dir.path().join("server.properties").display().to_string();
        let log = std::fs::File::create(self.dir.path().join("stdout.log")).unwrap();
        let child = self
            .java()
            .args(["kafka.Kafka", &props])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("java runs");
        self.child = Some(child);
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &self.brokers).create().unwrap();
        wait_until("the private broker answers", Duration::from_secs(90), || {
            consumer
                .fetch_metadata(None, Duration::from_secs(1))
                .is_ok_and(|m| !m.brokers().is_empty())
        });
    }

    /// Stops the broker (SIGTERM, then SIGKILL after 30 s) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestEnv {
    /// Runs `eventline ARGS` with this test's settings; returns (exit code, stderr).
    pub fn eventline(&self, args: &[&str]) -> (i32, String) {
        let (code, _, stderr) = self.eventline_output(args);
        (code, stderr)
    }

    /// Runs `eventline ARGS` with this test's settings; returns (exit code, stdout, stderr).
    pub fn eventline_output(&self, args: &[&str]) -> (i32, String, String) {
        self.eventline_with(args, &[])
    }

    /// Runs `eventline ARGS` with this test's settings plus `extra` variables; returns
    /// (exit code, stdout, stderr).
    pub fn eventline_with(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
        let mut command = Command::new(binary());
        command.args(args).current_dir(repo());
        for (k, v) in self.processor_env() {
            command.env(k, v);
        }
        for (k, v) in extra {
            command.env(k, v);
        }
        let out = command.output().expect("eventline runs");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    }

    /// Reads every record of `topic` from the start: (partition, key, value).
    pub fn read_topic(&self, topic: &str, expected: usize) -> Vec<(i32, String, Option<Vec<u8>>)> {
        use rdkafka::message::Message;
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("{}-reader-{}", self.group, uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribe");
        let mut out = Vec::new();
        wait_until(
            &format!("{expected} records are read from {topic}"),
            Duration::from_secs(60),
            || {
                while let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    out.push((
                        m.partition(),
                        String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                        m.payload().map(<[u8]>::to_vec),
                    ));
                }
                out.len() >= expected
            },
        );
        out
    }
}

/// GET `url` on a processor's admin endpoint: (status, body). Any status is an answer.
pub fn admin_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(url).call().expect("admin endpoint answers");
    let status = response.status().as_u16();
    (status, response.body_mut().read_to_string().expect("a text body"))
}

impl TestEnv {
    /// Postgres's durable progress on a partition (`sink_progress`).
    pub fn sink_progress_pg(&self, partition: i32) -> Option<i64> {
        eventline::db::read_progress(&mut self.pg(), "postgres", &self.topic, partition)
            .expect("sink_progress reads")
    }

    /// Both sinks' durable progress on a partition: (Postgres `sink_progress`, the
    /// lake's Delta txn versions, for the lake in this test's folder), each the next
    /// offset not yet stored.
    pub fn sink_progress(&self, partition: i32) -> (Option<i64>, Option<i64>) {
        let pg = eventline::db::read_progress(&mut self.pg(), "postgres", &self.topic, partition)
            .expect("sink_progress reads");
        let lake = eventline::sinks::lake::writer::lake_progress(
            &eventline::sinks::lake::store::LakeStore::local(&self.lake).expect("a local lake"),
            &self.topic,
            partition,
        )
        .expect("the lake's tables read");
        (pg, lake)
    }
}

/// The README's query for the lake as Postgres's `events` holds it: every event not
/// deleted, and whether it is still valid (`{lake}` stands for the lake root).
pub const LAKE_EVENTS_QUERY: &str = "\
    SELECT e.event_id, \
           e.event_id NOT IN (SELECT event_id FROM read_parquet('{lake}/_retractions/*.retractions') WHERE action = 'invalidated') AS is_valid \
    FROM read_parquet('{lake}/event_type=*/*/*/*/*.parquet', hive_partitioning = true) AS e \
    WHERE e.event_id NOT IN (SELECT event_id FROM read_parquet('{lake}/_retractions/*.retractions') WHERE action = 'deleted')";

impl TestEnv {
    /// The lake through [`LAKE_EVENTS_QUERY`]: event id -> valid.
    pub fn lake_events(&self) -> std::collections::BTreeMap<String, bool> {
        if lake_files(&self.lake).is_empty() {
            return Default::default();
        }
        let sql = LAKE_EVENTS_QUERY.replace("{lake}", &self.lake.display().to_string());
        duckdb(&sql)
            .lines()
            .filter_map(|l| l.split_once(','))
            .map(|(id, valid)| (id.to_string(), valid == "True"))
            .collect()
    }

    /// Postgres's `events`: event id -> `is_valid`.
    pub fn pg_events(&self) -> std::collections::BTreeMap<String, bool> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            id: String,
            #[diesel(sql_type = diesel::sql_types::Bool)]
            is_valid: bool,
        }
        diesel::sql_query("SELECT event_id::text AS id, is_valid FROM events")
            .load::<Row>(&mut self.pg())
            .expect("read events")
            .into_iter()
            .map(|r| (r.id, r.is_valid))
            .collect()
    }

    /// Both sinks hold the same events with the same validity (the lake read the
    /// README's way), and Postgres holds `expected`.
    pub fn assert_sinks_hold(&self, expected: &std::collections::BTreeMap<String, bool>) {
        let pg = self.pg_events();
        assert_eq!(pg.len(), expected.len(), "events in Postgres");
        assert!(
            pg == *expected,
            "Postgres differs from what was expected: {}",
            diff(&pg, expected)
        );
        let lake = self.lake_events();
        assert!(lake == pg, "the lake differs from Postgres: {}", diff(&lake, &pg));
    }
}

fn diff(
    a: &std::collections::BTreeMap<String, bool>,
    b: &std::collections::BTreeMap<String, bool>,
) -> String {
    let only_a: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).take(5).collect();
    let only_b: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).take(5).collect();
    format!("{} vs {} rows; first differences: {only_a:?} / {only_b:?}", a.len(), b.len())
}

/// The same event with `is_valid: false`: its invalidation.
pub fn invalidation_of(event: &str) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(event).expect("an event");
    doc["is_valid"] = serde_json::json!(false);
    doc.to_string()
}

/// The `event_id` of a record made by [`valid_records`] or [`mixed_records`].
pub fn event_id_of(record: &TestRecord) -> String {
    let value: serde_json::Value =
        serde_json::from_slice(record.2.as_deref().expect("an event, not a tombstone"))
            .expect("JSON");
    value["event_id"].as_str().expect("an event_id").to_string()
}

/// Copies the repository's `contracts/` to `to`, for a test that changes them.
pub fn copy_contracts(to: &Path) {
    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("a folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
    let from = repo().join("contracts");
    for file in walk(&from) {
        let target = to.join(file.strip_prefix(&from).expect("under contracts"));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&file, &target).expect("copy");
    }
}
