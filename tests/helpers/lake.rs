//! The lake for the tests, read by readers nobody here wrote (DuckDB, Python
//! `deltalake`), on a local folder or the stack's S3 server; and the check that both
//! sinks hold the same events.

use super::*;

impl TestEnv {
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

    /// Both sinks' durable progress on a partition: (Postgres `sink_progress`, the
    /// lake's Delta txn versions, for the lake in this test's folder), each the next
    /// offset not yet stored.
    pub fn sink_progress(&self, partition: i32) -> (Option<i64>, Option<i64>) {
        let pg = eventline::db::read_progress(&mut self.pg(), "postgres", &self.topic, partition)
            .expect("sink_progress reads");
        let lake = eventline::sinks::lake::commit::lake_progress(
            &eventline::sinks::lake::store::LakeStore::local(&self.lake).expect("a local lake"),
            &self.topic,
            partition,
        )
        .expect("the lake's tables read");
        (pg, lake)
    }

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
        eventline::sinks::lake::commit::lake_progress(&self.store(), topic, partition)
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

/// The README's query for the lake as Postgres's `events` holds it: every event not
/// deleted, and whether it is still valid (`{lake}` stands for the lake root).
pub const LAKE_EVENTS_QUERY: &str = "\
    SELECT e.event_id, \
           e.event_id NOT IN (SELECT event_id FROM read_parquet('{lake}/_retractions/*.retractions') WHERE action = 'invalidated') AS is_valid \
    FROM read_parquet('{lake}/event_type=*/*/*/*/*.parquet', hive_partitioning = true) AS e \
    WHERE e.event_id NOT IN (SELECT event_id FROM read_parquet('{lake}/_retractions/*.retractions') WHERE action = 'deleted')";

pub(super) fn diff(
    a: &std::collections::BTreeMap<String, bool>,
    b: &std::collections::BTreeMap<String, bool>,
) -> String {
    let only_a: Vec<_> = a.iter().filter(|(k, v)| b.get(*k) != Some(v)).take(5).collect();
    let only_b: Vec<_> = b.iter().filter(|(k, v)| a.get(*k) != Some(v)).take(5).collect();
    format!("{} vs {} rows; first differences: {only_a:?} / {only_b:?}", a.len(), b.len())
}
