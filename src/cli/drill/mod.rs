//! `eventline drill <name>`: replay and fault drills against the configured stack, each
//! ending with a report of the figures before and after and PASS or FAIL per check.
//!
//! - `replay`: rewind the consumer group, reprocess, compare (optionally rebuild the lake)
//! - `resend`: re-publish already-processed events; all must count as duplicates
//! - `sink-crash`: one sink fails (fault hook) while traffic flows
//! - `kill`: kill -9 the processor at random moments during a generated stream
//! - `db-outage`: stop and restart Postgres during traffic
//! - `verify`: reconcile Postgres and the lake, no traffic

pub mod against;
pub mod inspect;
pub mod kafka_ops;
pub mod processor;
pub mod report;
mod scenarios;
mod steps;

pub use scenarios::run;

use crate::cli::console::out;
use crate::db::PgPool;
use crate::settings::Settings;
use std::path::PathBuf;
use std::time::Duration;

/// `eventline drill`: which drill and its knobs.
#[derive(Debug, Clone, clap::Args)]
pub struct DrillArgs {
    /// Which drill.
    #[arg(value_enum)]
    pub name: DrillName,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Where the markdown report and the processor logs go.
    #[arg(long, default_value = "reports")]
    pub reports_dir: PathBuf,
    /// Records of generated traffic (kill, sink-crash, db-outage).
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    /// Generator seed (default: random, printed in the report).
    #[arg(long)]
    pub seed: Option<u64>,
    /// kill: how many times to kill -9 the processor.
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
    /// sink-crash: which sink fails.
    #[arg(long, value_enum, default_value_t = DrillSink::Parquet)]
    pub sink: DrillSink,
    /// replay: rewind to this time (RFC 3339) instead of the earliest offsets.
    #[arg(long, conflicts_with = "to_offset")]
    pub to_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// replay: rewind every partition to this offset.
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// replay: also move the lake aside and rebuild it from the log.
    #[arg(long)]
    pub rebuild_lake: bool,
    /// resend: how many processed events to re-publish.
    #[arg(long, default_value_t = 200)]
    pub resend: usize,
    /// verify: also compare the sinks with what was sent, a JSON lines file such as
    /// `eventline produce --write-jsonl` saves (names the ids that are missing).
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// db-outage: shell command that stops Postgres.
    #[arg(long, default_value = "scripts/stack.sh pg-stop")]
    pub pg_stop_cmd: String,
    /// db-outage: shell command that starts Postgres.
    #[arg(long, default_value = "scripts/stack.sh pg-start")]
    pub pg_start_cmd: String,
    /// db-outage: how long Postgres stays down: 5s, 1m.
    #[arg(long, default_value = "5s")]
    pub outage: humantime::Duration,
    /// Upper bound for any wait: 300s, 10m.
    #[arg(long, default_value = "10m")]
    pub timeout: humantime::Duration,
}

/// Why a drill step could not be carried out; the drill then reports FAIL with it.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Kafka refused a request.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Kafka refused a request, with what was being done.
    #[error("kafka: {what}: {source}")]
    KafkaDoing {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// No Postgres connection.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// A query failed.
    #[error("postgres: {0}")]
    Query(#[from] diesel::result::Error),
    /// The lake could not be read.
    #[error("reading the lake: {0}")]
    Lake(#[from] parquet::errors::ParquetError),
    /// The lake's tables could not be read.
    #[error(transparent)]
    LakeTable(#[from] crate::sinks::lake::table::LakeTableError),
    /// A generated record was not the JSON the generator promises.
    #[error("generated record: {0}")]
    Json(#[from] serde_json::Error),
    /// A file, folder or child process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something the drill needs did not happen: a timeout, a missing topic, traffic
    /// that was not delivered.
    #[error("{0}")]
    Failed(String),
}

impl StepError {
    /// Wraps a Kafka error with what was being done.
    pub fn kafka(what: impl Into<String>) -> impl FnOnce(rdkafka::error::KafkaError) -> StepError {
        let what = what.into();
        move |source| StepError::KafkaDoing { what, source }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StepError {
        let what = what.into();
        move |source| StepError::Io { what, source }
    }
}

/// Why a drill could not run or report (a drill that runs and fails is a FAIL report).
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// Postgres could not be prepared.
    #[error("connecting to Postgres: {0}")]
    Start(#[from] crate::pipeline::StartError),
    /// The report could not be saved.
    #[error("saving the report in {dir}: {source}")]
    Save {
        /// `--reports-dir`.
        dir: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Standard output failed (a closed pipe ends the command quietly).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

/// Runs the drill `args` names and prints its report; exit code 0 on PASS, 1 on FAIL.
pub fn run_command(settings: Settings, args: DrillArgs) -> Result<i32, DrillError> {
    let (contracts, pool) = crate::pipeline::prepare(&settings)?;
    let rewind = match (args.to_timestamp, args.to_offset) {
        (Some(t), _) => kafka_ops::RewindTo::Timestamp(t.timestamp_millis()),
        (None, Some(o)) => kafka_ops::RewindTo::Offset(o),
        (None, None) => kafka_ops::RewindTo::Earliest,
    };
    let ctx = DrillContext {
        settings,
        pool,
        reports_dir: args.reports_dir,
        events: args.events,
        seed: args.seed.unwrap_or_else(rand::random),
        kills: args.kills,
        sink: args.sink,
        rewind,
        rebuild_lake: args.rebuild_lake,
        resend: args.resend,
        against: args.against,
        contracts,
        pg_stop: args.pg_stop_cmd,
        pg_start: args.pg_start_cmd,
        outage: *args.outage,
        timeout: *args.timeout,
    };
    let report = run(args.name, &ctx);
    let saved = report
        .save(&ctx.reports_dir)
        .map_err(|source| DrillError::Save { dir: ctx.reports_dir.clone(), source })?;
    let text = match args.json {
        true => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        false => format!("{}report: {}\n", report.text(), saved.display()),
    };
    out(&crate::settings::secrets::scrub(&text)).map_err(DrillError::Output)?;
    Ok(if report.passed { 0 } else { 1 })
}

/// Which drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillName {
    /// Rewind and reprocess.
    Replay,
    /// Re-publish processed events.
    Resend,
    /// Fail one sink.
    SinkCrash,
    /// kill -9 repeatedly.
    Kill,
    /// Stop and restart Postgres.
    DbOutage,
    /// Reconcile only.
    Verify,
}

impl DrillName {
    /// Every drill, in the order `make drill` runs them.
    pub const ALL: [DrillName; 6] = [
        DrillName::Verify,
        DrillName::Kill,
        DrillName::SinkCrash,
        DrillName::DbOutage,
        DrillName::Resend,
        DrillName::Replay,
    ];

    /// The name on the command line and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            DrillName::Replay => "replay",
            DrillName::Resend => "resend",
            DrillName::SinkCrash => "sink-crash",
            DrillName::Kill => "kill",
            DrillName::DbOutage => "db-outage",
            DrillName::Verify => "verify",
        }
    }
}

/// The sink that `sink-crash` makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DrillSink {
    /// The Postgres writer.
    Postgres,
    /// The Parquet lake writer.
    #[value(alias = "lake")]
    Parquet,
}

/// Everything a drill needs.
#[derive(Clone)]
pub struct DrillContext {
    /// Effective settings (the child processor inherits the same environment).
    pub settings: Settings,
    /// Postgres pool.
    pub pool: PgPool,
    /// Where reports and processor logs go.
    pub reports_dir: PathBuf,
    /// Records of generated traffic.
    pub events: u64,
    /// Generator seed (random when not given, printed in the report).
    pub seed: u64,
    /// Kills for the `kill` drill.
    pub kills: u32,
    /// Which sink `sink-crash` fails.
    pub sink: DrillSink,
    /// Where `replay` rewinds the group to.
    pub rewind: kafka_ops::RewindTo,
    /// `replay`: also move the lake aside and rebuild it from the log.
    pub rebuild_lake: bool,
    /// `resend`: how many processed events to re-publish.
    pub resend: usize,
    /// `verify`: the file of sent records to compare with.
    pub against: Option<PathBuf>,
    /// The processor's contracts (to read `against` as the processor would).
    pub contracts: std::sync::Arc<crate::stages::contract::Contracts>,
    /// `db-outage`: shell commands that stop and start Postgres.
    pub pg_stop: String,
    /// See `pg_stop`.
    pub pg_start: String,
    /// `db-outage`: how long Postgres stays down.
    pub outage: Duration,
    /// Upper bound for any wait.
    pub timeout: Duration,
}
