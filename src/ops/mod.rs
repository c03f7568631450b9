//! Running it: the admin HTTP server ([`admin`]) over plain health data ([`health`]),
//! the summary line's counters ([`stats`], read from the metrics) and the log line format
//! ([`log_format`]). Metrics and the supervision log are in [`crate::telemetry`].

pub mod admin;
pub mod health;
pub mod log_format;
pub mod stats;
