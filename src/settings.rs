//! Typed settings: `settings/default.toml`, then `settings/{EVENTLINE_ENV}.toml`, then
//! environment variables `EVENTLINE__SECTION__KEY`.
//!
//! Every struct denies unknown fields, so a typo fails at start with the key's name
//! instead of being silently ignored.

pub mod kafka_client;
pub mod lake_location;
pub mod postgres_url;
pub mod secrets;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A file could not be read or a key has a bad value; the message names the key.
    #[error("settings: {0}")]
    Invalid(#[from] config::ConfigError),
    /// A `[kafka.client]` property librdkafka refuses, or one eventline owns. Not a
    /// `source`: the message already says everything, and error chains would repeat it.
    #[error("settings: {0}")]
    KafkaClient(kafka_client::ClientSettingsError),
    /// A `*_file` setting whose file cannot be read.
    #[error("settings: key `{key}`: reading {path}: {source}")]
    SecretFile {
        /// The dotted key, e.g. `postgres.password_file`.
        key: &'static str,
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// `lake.root` is neither a local folder nor `s3://bucket/prefix`.
    #[error("settings: key `lake.root`: {0}")]
    LakeRoot(#[from] lake_location::LakeRootError),
    /// A value parsed but breaks a rule of its own.
    #[error("settings: key `{key}`: {rule}")]
    Rule {
        /// The dotted key, e.g. `lake.max_rows_per_file`.
        key: &'static str,
        /// What the value must satisfy.
        rule: &'static str,
    },
}

impl From<kafka_client::ClientSettingsError> for SettingsError {
    fn from(e: kafka_client::ClientSettingsError) -> Self {
        SettingsError::KafkaClient(e)
    }
}

/// The whole effective configuration of one eventline process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where events come from and where dead letters go.
    pub kafka: KafkaSettings,
    /// The audit and analytics database.
    pub postgres: PostgresSettings,
    /// The Parquet lake.
    pub lake: LakeSettings,
    /// Batching, limits and back-pressure between the actors.
    pub pipeline: PipelineSettings,
    /// Restart policy of the sink writers and the supervision log.
    pub supervision: SupervisionSettings,
    /// Which Kafka headers accepted events keep.
    pub headers: HeaderSettings,
    /// Fault injection for tests and drills; empty by default.
    pub faults: FaultSettings,
    /// The admin HTTP server.
    pub admin: AdminSettings,
}

/// The Kafka headers an accepted event keeps (see [`crate::stages::headers`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderSettings {
    /// Keys and values of the kept headers add up to at most this many bytes; the rest
    /// are dropped and counted in a last entry.
    pub max_bytes: usize,
    /// The header whose value also goes into the `correlation_id` column (empty: none).
    pub correlation_header: String,
}

/// The admin HTTP server: health, readiness, metrics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to listen on (`127.0.0.1:0` picks a free port, logged at start).
    pub listen: String,
    /// `/health` fails after this long without a source heartbeat and without progress
    /// while records are waiting.
    pub stall_timeout_s: u64,
    /// A bearer token `/metrics` and `/supervision` require (`Authorization: Bearer
    /// ...`); `/health` and `/ready` stay open for probes. Empty: no token.
    #[serde(default)]
    pub token: String,
    /// A file holding the token (a mounted secret); wins over `token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Connections the admin server holds at once; more wait in the listen backlog.
    #[serde(default = "default_admin_connections")]
    pub max_connections: usize,
}

fn default_admin_connections() -> usize {
    64
}

/// Kafka connection and topics.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Bootstrap servers, comma separated.
    pub brokers: String,
    /// The topic to consume.
    pub topic: String,
    /// The dead-letter topic.
    pub dlq_topic: String,
    /// Consumer group id; offsets committed here are for lag tools, the sinks hold the truth.
    pub group_id: String,
    /// Group session timeout; a process silent for longer loses its partitions.
    pub session_timeout_ms: u32,
    /// A consumer out of its group this long while records wait is made to rejoin; out
    /// as long again, `/health` fails and the process exits (code 3).
    pub rejoin_after_s: u64,
    /// Start-up fails, with librdkafka's reason (an unreachable broker, a refused
    /// password), when the brokers cannot be reached for this long.
    pub connect_timeout_s: u64,
    /// Any librdkafka property for every Kafka client (see [`kafka_client`]).
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// PostgreSQL connection.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// libpq URL, e.g. `postgres://user@host:port/db` (`?sslmode=verify-full&sslrootcert=...`
    /// for TLS).
    pub url: String,
    /// A file holding the password (as container platforms mount secrets); it replaces
    /// any password in `url`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// libpq's `sslmode` (disable, allow, prefer, require, verify-ca, verify-full); set,
    /// it replaces the URL's own. libpq's default is `prefer`.
    #[serde(default)]
    pub sslmode: Option<String>,
    /// The CA certificate that the server's certificate must chain to (`verify-ca`,
    /// `verify-full`).
    #[serde(default)]
    pub sslrootcert: Option<PathBuf>,
    /// A client certificate, for servers that authenticate clients by certificate.
    #[serde(default)]
    pub sslcert: Option<PathBuf>,
    /// The client certificate's key.
    #[serde(default)]
    pub sslkey: Option<PathBuf>,
    /// Connections in the r2d2 pool.
    pub pool_size: u32,
    /// How long to wait for a connection before the write counts as failed.
    pub connect_timeout_ms: u64,
    /// A statement waiting on a lock longer than this fails (transient, retried).
    pub lock_timeout_ms: u64,
    /// A session idle inside a transaction longer than this is ended by the server,
    /// which rolls the transaction back (a frozen process releases its locks).
    pub idle_in_transaction_timeout_ms: u64,
    /// A statement running longer than this fails (0: no limit).
    pub statement_timeout_ms: u64,
}

/// The Parquet lake and its file rolling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSettings {
    /// Root of the lake: a local folder, or `s3://bucket/prefix`.
    pub root: PathBuf,
    /// S3 endpoint, for a server other than AWS (unset: `AWS_ENDPOINT`, or AWS).
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// S3 region (unset: `AWS_REGION`).
    #[serde(default)]
    pub s3_region: Option<String>,
    /// S3 access key id (unset: `AWS_ACCESS_KEY_ID`).
    #[serde(default)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (unset: `AWS_SECRET_ACCESS_KEY`); never printed.
    #[serde(default)]
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain `http://` S3 endpoint (a local server).
    #[serde(default)]
    pub s3_allow_http: bool,
    /// Roll (flush) a partition's buffer once it holds this many rows.
    pub max_rows_per_file: usize,
    /// Roll once the buffered JSON payloads reach this many bytes.
    pub max_bytes_per_file: usize,
    /// Roll once the oldest buffered row is this old; bounds lake latency.
    pub max_file_age_ms: u64,
    /// Roll once no batch has arrived for the partition for this long (0: never), so the
    /// end of a backlog or burst lands without waiting for `max_file_age_ms`.
    pub idle_flush_ms: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd compression level (1 to 22).
    pub zstd_level: i32,
}

/// Batching and limits between the actors.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// Folder of JSON Schema contracts (`{event_type}/v{N}.schema.json`).
    pub contracts_dir: PathBuf,
    /// Close a batch at this many records.
    pub batch_max_records: usize,
    /// While the partition's flow is busy, close a batch after this long even when it
    /// is small (an idle flow takes records at once).
    pub batch_linger_ms: u64,
    /// Batches queued per partition before the source stops reading (and, after 5 s,
    /// pauses the partition).
    pub partition_queue_batches: usize,
    /// Bytes of batches a sink may hold until they are durable; bounds memory.
    pub sink_queue_bytes: usize,
    /// Records larger than this are dead-lettered as `oversized`.
    pub max_record_bytes: usize,
    /// JSON nested deeper than this is dead-lettered as `too_deep`.
    pub max_json_depth: usize,
    /// An event that arrives more than this many seconds after its own timestamp is
    /// marked late (stored all the same, in its own date's lake partition).
    pub late_after_s: u64,
    /// Seconds between summary log lines.
    pub summary_interval_s: u64,
    /// SIGTERM/SIGINT: how long flushing may take before the process exits anyway.
    pub shutdown_timeout_s: u64,
}

/// Restart policy of the supervised writers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisionSettings {
    /// JSON lines file of every start, failure, restart, recovery and give-up.
    pub log_path: PathBuf,
    /// The log rotates once it holds this many bytes (0: never).
    pub max_file_bytes: u64,
    /// Rotated files kept beside the live one (`.1` newest); older ones are deleted.
    pub keep_files: usize,
    /// First restart delay; doubles on each consecutive failure.
    pub backoff_initial_ms: u64,
    /// Upper bound of the restart delay.
    pub backoff_max_ms: u64,
    /// More restarts than this within `restart_window_s` and the supervisor gives up.
    pub max_restarts: u32,
    /// The window of the restart-rate cap.
    pub restart_window_s: u64,
}

/// Fault injection, for tests and drills only. Each list is consumed in order, one
/// entry per write attempt once `after_batches` batches were written: `"error"` makes
/// the write fail, `"panic"` makes the writer panic.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSettings {
    /// Faults of the Postgres writer.
    pub postgres: Vec<Fault>,
    /// Faults of the Parquet writer.
    pub parquet: Vec<Fault>,
    /// Faults of the validator, one per batch checked (`panic`: the batch's first record
    /// panics while being checked).
    pub validator: Vec<Fault>,
    /// Faults of the deduplicator, one per batch decided (`panic`).
    pub deduplicator: Vec<Fault>,
    /// Faults of the per-partition flows, one per batch handed over (`panic`: the flow
    /// task panics, which no stage catches: the process gives up at once).
    #[serde(default)]
    pub flow: Vec<Fault>,
    /// Successful batches before the first fault.
    pub after_batches: u64,
    /// And no fault before this long after the process started (0: no wait).
    pub after_ms: u64,
    /// The Postgres writer waits this long inside each transaction, after its rows and
    /// before its progress move (0: never), so a test can freeze a process while one of
    /// its sessions holds an open transaction.
    pub postgres_pause_in_transaction_ms: u64,
}

/// One injected fault (tests and drills).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fault {
    /// The write fails with an error.
    Error,
    /// The writer panics.
    Panic,
    /// The write fails with an error classified fatal (as an unwritable lake would).
    Fatal,
}

impl Settings {
    /// Loads the layered settings from `dir` (normally `settings/`).
    pub fn load(dir: &Path) -> Result<Settings, SettingsError> {
        let env = std::env::var("EVENTLINE_ENV").unwrap_or_else(|_| "local".to_string());
        let built = config::Config::builder()
            .add_source(config::File::from(dir.join("default.toml")))
            .add_source(config::File::from(dir.join(format!("{env}.toml"))).required(false))
            .add_source(
                config::Environment::with_prefix("EVENTLINE")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("faults.postgres")
                    .with_list_parse_key("faults.parquet")
                    .with_list_parse_key("faults.validator")
                    .with_list_parse_key("faults.deduplicator")
                    .with_list_parse_key("faults.flow")
                    .try_parsing(true),
            )
            .build()?;
        let mut settings: Settings = built.try_deserialize()?;
        settings.check_values()?;
        settings.resolve_secrets()?;
        Ok(settings)
    }

    /// Reads `*_file` secrets, normalises `[kafka.client]` and checks it with librdkafka,
    /// and registers every secret value so that nothing prints it.
    fn resolve_secrets(&mut self) -> Result<(), SettingsError> {
        self.kafka.client = kafka_client::resolve(&self.kafka.client)?;
        kafka_client::check(&self.kafka.client)?;
        let password = read_secret_file("postgres.password_file", &self.postgres.password_file)?;
        if let Some(token) = read_secret_file("admin.token_file", &self.admin.token_file)? {
            self.admin.token = token.trim().to_string();
        }
        let tls = postgres_url::PostgresTls {
            sslmode: self.postgres.sslmode.clone(),
            sslrootcert: self.postgres.sslrootcert.clone(),
            sslcert: self.postgres.sslcert.clone(),
            sslkey: self.postgres.sslkey.clone(),
        };
        self.postgres.url = postgres_url::resolve(&self.postgres.url, password.as_deref(), &tls)?;
        let mut known: Vec<String> = self
            .kafka
            .client
            .iter()
            .filter(|(k, _)| secrets::is_secret_key(k))
            .map(|(_, v)| v.clone())
            .collect();
        known.extend(postgres_url::password_of(&self.postgres.url));
        known.extend(self.lake.s3_secret_access_key.clone());
        known.extend(Some(self.admin.token.clone()).filter(|t| !t.is_empty()));
        secrets::register(known);
        Ok(())
    }

    /// The settings as `eventline config` prints them: every secret redacted.
    pub fn redacted(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("settings serialise");
        redact_value(&mut value, "");
        value
    }

    /// Every rule the settings must satisfy, each error naming its key: `eventline
    /// config` and `eventline run` both call it, so neither accepts what the other
    /// would refuse. Nothing is clamped silently later. The rules on values alone are
    /// checked by [`Self::load`] for every command; this adds what touches the machine
    /// (a local lake root must be writable), which only the commands that judge or run
    /// the processor need: `eventline state` on a host that only reads must not fail.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.check_values()?;
        lake_location::LakeLocation::parse(&self.lake.root.to_string_lossy())?.check_writable()?;
        Ok(())
    }

    /// The rules on values alone, each error naming its key.
    fn check_values(&self) -> Result<(), SettingsError> {
        let rules: [(bool, &'static str, &'static str); 12] = [
            (
                self.pipeline.max_record_bytes
                    <= kafka_client::producer_max_message_bytes(&self.kafka.client),
                "pipeline.max_record_bytes",
                "must be at most the DLQ producer's [kafka.client] message.max.bytes (librdkafka's default: 1000000), so that a record that passes its size check fits a dead letter",
            ),
            (
                self.pipeline.batch_max_records > 0,
                "pipeline.batch_max_records",
                "must be at least 1",
            ),
            (
                self.pipeline.partition_queue_batches > 0,
                "pipeline.partition_queue_batches",
                "must be at least 1",
            ),
            (self.pipeline.sink_queue_bytes > 0, "pipeline.sink_queue_bytes", "must be at least 1"),
            (self.lake.max_rows_per_file > 0, "lake.max_rows_per_file", "must be at least 1"),
            (self.lake.row_group_rows > 0, "lake.row_group_rows", "must be at least 1"),
            (
                (1..=22).contains(&self.lake.zstd_level),
                "lake.zstd_level",
                "must be between 1 and 22",
            ),
            (self.postgres.pool_size > 0, "postgres.pool_size", "must be at least 1"),
            (self.kafka.connect_timeout_s > 0, "kafka.connect_timeout_s", "must be at least 1"),
            (
                self.pipeline.summary_interval_s > 0,
                "pipeline.summary_interval_s",
                "must be at least 1",
            ),
            (
                (2..=60_000).contains(&self.pipeline.batch_linger_ms),
                "pipeline.batch_linger_ms",
                "must be between 2 and 60000 (the source checks lingering batches every half linger)",
            ),
            (
                (1..=10_000).contains(&self.admin.max_connections),
                "admin.max_connections",
                "must be between 1 and 10000",
            ),
        ];
        for (ok, key, rule) in rules {
            if !ok {
                return Err(SettingsError::Rule { key, rule });
            }
        }
        lake_location::LakeLocation::parse(&self.lake.root.to_string_lossy())?;
        Ok(())
    }
}

/// The secret in the file a `*_file` setting names (its trailing newline removed), or
/// `None` when the setting is not set.
fn read_secret_file(
    key: &'static str,
    path: &Option<PathBuf>,
) -> Result<Option<String>, SettingsError> {
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::SecretFile {
        key,
        path: path.display().to_string(),
        source,
    })?;
    Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
}

fn redact_value(value: &mut serde_json::Value, key: &str) {
    match value {
        serde_json::Value::Object(fields) => {
            for (k, v) in fields.iter_mut() {
                redact_value(v, k);
            }
        }
        serde_json::Value::String(text) if secrets::is_secret_key(key) => {
            *text = secrets::REDACTED.to_string();
        }
        serde_json::Value::String(text) => *text = secrets::scrub(text),
        _ => {}
    }
}
