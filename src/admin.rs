//! The admin HTTP server (actix-web, on the processor's own runtime):
//! `/health` (liveness), `/ready` (readiness), `/metrics` (Prometheus) and
//! `/supervision` (recent supervision log entries as JSON).

use crate::metrics::metrics;
use crate::sink_supervisor::SinkStatus;
use crate::supervision_log::read_entries;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What liveness and readiness are decided from; shared with the actors.
#[derive(Debug, Default)]
pub struct Health {
    /// Milliseconds since the epoch of the source loop's last turn.
    pub source_heartbeat_ms: AtomicI64,
    /// Milliseconds since the epoch of the last durable progress of any sink.
    pub last_progress_ms: AtomicI64,
    /// Partitions assigned to this process.
    pub assigned: AtomicI64,
    /// Records behind the high watermarks (sum over assigned partitions).
    pub lag: AtomicI64,
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Health {
    /// Records a source heartbeat.
    pub fn beat(&self) {
        self.source_heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records durable progress.
    pub fn progressed(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Relaxed);
    }
}

/// Liveness as a pure decision: wedged means no heartbeat and no progress for longer
/// than `stall` while records are waiting.
pub fn is_live(now: i64, heartbeat: i64, progress: i64, lag: i64, stall: Duration) -> bool {
    let stale = |t: i64| now - t > stall.as_millis() as i64;
    !(lag > 0 && stale(heartbeat) && stale(progress))
}

/// Readiness as a pure decision: in the group with partitions, both sinks up.
pub fn is_ready(assigned: i64, postgres_up: bool, lake_up: bool) -> bool {
    assigned > 0 && postgres_up && lake_up
}

/// Shared state of the admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// Health inputs.
    pub health: Arc<Health>,
    /// Postgres sink state.
    pub postgres: Arc<SinkStatus>,
    /// Lake sink state.
    pub lake: Arc<SinkStatus>,
    /// The supervision log file.
    pub supervision_log: PathBuf,
    /// Liveness threshold.
    pub stall: Duration,
}

async fn health(state: web::Data<AdminState>) -> HttpResponse {
    let h = &state.health;
    let (beat, progress, lag) = (
        h.source_heartbeat_ms.load(Ordering::Relaxed),
        h.last_progress_ms.load(Ordering::Relaxed),
        h.lag.load(Ordering::Relaxed),
    );
    let body = serde_json::json!({"source_heartbeat_ms_ago": now_ms() - beat, "progress_ms_ago": now_ms() - progress, "lag": lag});
    if is_live(now_ms(), beat, progress, lag, state.stall) {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn ready(state: web::Data<AdminState>) -> HttpResponse {
    let assigned = state.health.assigned.load(Ordering::Relaxed);
    let (pg, lake) =
        (state.postgres.up.load(Ordering::Relaxed), state.lake.up.load(Ordering::Relaxed));
    let body =
        serde_json::json!({"assigned_partitions": assigned, "postgres_up": pg, "lake_up": lake});
    if is_ready(assigned, pg, lake) {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn prometheus_metrics() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(metrics().render())
}

async fn supervision(state: web::Data<AdminState>) -> HttpResponse {
    let entries = read_entries(&state.supervision_log).unwrap_or_default();
    let recent = &entries[entries.len().saturating_sub(200)..];
    HttpResponse::Ok().json(recent)
}

/// Starts the server on `listen`; returns the bound address.
pub fn start(listen: &str, state: AdminState) -> std::io::Result<std::net::SocketAddr> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .route("/metrics", web::get().to(prometheus_metrics))
            .route("/supervision", web::get().to(supervision))
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?;
    let address = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("admin server bound no address"))?;
    actix::spawn(server.run());
    Ok(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wedged_only_without_heartbeat_and_progress_while_records_wait() {
        let stall = Duration::from_secs(60);
        let now = 1_000_000;
        assert!(is_live(now, now - 120_000, now - 120_000, 0, stall), "no lag: idle, not wedged");
        assert!(is_live(now, now - 1_000, now - 120_000, 5, stall), "heartbeat fresh");
        assert!(is_live(now, now - 120_000, now - 1_000, 5, stall), "progress fresh");
        assert!(!is_live(now, now - 120_000, now - 120_000, 5, stall));
    }

    #[test]
    fn ready_needs_partitions_and_both_sinks() {
        assert!(is_ready(3, true, true));
        assert!(!is_ready(0, true, true));
        assert!(!is_ready(3, false, true));
        assert!(!is_ready(3, true, false));
    }
}
