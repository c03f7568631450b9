//! `eventline drill <name>`: replay and fault drills against the configured stack, each
//! ending with a report of the figures before and after and PASS or FAIL per check.
//!
//! - `replay`: rewind the consumer group, reprocess, compare (optionally rebuild the lake)
//! - `resend`: re-publish already-processed events; all must count as duplicates
//! - `sink-crash`: one sink fails (fault hook) while traffic flows
//! - `kill`: kill -9 the processor at random moments during a generated stream
//! - `db-outage`: stop and restart Postgres during traffic
//! - `verify`: reconcile Postgres and the lake, no traffic

pub mod inspect;
pub mod kafka_ops;
pub mod processor;
pub mod report;
mod scenarios;

pub use scenarios::run;

use crate::db::PgPool;
use crate::settings::Settings;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Which sink `sink-crash` fails: `postgres` or `parquet`.
    pub sink: String,
    /// Where `replay` rewinds the group to.
    pub rewind: kafka_ops::RewindTo,
    /// `replay`: also move the lake aside and rebuild it from the log.
    pub rebuild_lake: bool,
    /// `resend`: how many processed events to re-publish.
    pub resend: usize,
    /// `db-outage`: shell commands that stop and start Postgres.
    pub pg_stop: String,
    /// See `pg_stop`.
    pub pg_start: String,
    /// `db-outage`: how long Postgres stays down.
    pub outage: Duration,
    /// Upper bound for any wait.
    pub timeout: Duration,
}
