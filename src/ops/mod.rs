//! Running it: the admin HTTP server ([`admin`]) over plain health data ([`health`]),
//! Prometheus metrics ([`metrics`]), the supervision log ([`supervision_log`]), the
//! summary line's counters ([`stats`], read from the metrics) and the log line format
//! ([`log_format`]).

pub mod admin;
pub mod faults;
pub mod health;
pub mod log_format;
pub mod metrics;
pub mod stats;
pub mod supervision_log;
