//! The admin HTTP server (actix-web, on the processor's own runtime):
//! `/health` (liveness), `/ready` (readiness), `/metrics` (Prometheus) and
//! `/supervision` (recent supervision log entries as JSON).

use crate::ops::health::{is_live, is_ready, now_ms, Health, SinkStatus};
use crate::ops::metrics::metrics;
use crate::ops::supervision_log::read_recent;
use actix_web::{web, App, HttpResponse, HttpServer};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

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
    let stalled = h.stalled_partitions.load(Ordering::Relaxed);
    let out_of_group = h.out_of_group.load(Ordering::Relaxed);
    let body = serde_json::json!({"source_heartbeat_ms_ago": now_ms() - beat, "progress_ms_ago": now_ms() - progress, "lag": lag, "stalled_partitions": stalled, "out_of_group": out_of_group});
    // A process that is alive but has a partition stuck, or a consumer stuck outside its
    // group, is not healthy either.
    if is_live(now_ms(), beat, progress, lag, state.stall) && stalled == 0 && !out_of_group {
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
    HttpResponse::Ok().json(read_recent(&state.supervision_log, 200).unwrap_or_default())
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
