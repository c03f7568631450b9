//! What every stage, sink and the source report through, below all of them: Prometheus
//! metrics ([`metrics`]), the supervision log ([`supervision_log`]), fault injection for
//! tests and drills ([`faults`]), and the clock ([`now_ms`]). It imports only the bottom
//! of the crate (settings, storable), so anything may use it.

pub mod faults;
pub mod metrics;
pub mod supervision_log;

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
