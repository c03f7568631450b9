//! The admin HTTP server (actix-web, on the processor's own runtime):
//! `/health` (liveness), `/ready` (readiness), `/metrics` (Prometheus) and
//! `/supervision` (recent supervision log entries as JSON).
//!
//! Safe to expose: at most `admin.max_connections` connections at once, requests
//! read within 5 s and bodies refused past 1 KiB (every route is a GET), the supervision
//! log read on a blocking thread (never on the server's one worker), and, with
//! `admin.token` or `admin.token_file`, `/metrics` and `/supervision` only for a request
//! with `Authorization: Bearer <token>` (401 otherwise). `/health` and `/ready` stay
//! open: probes read them and they tell nothing about the data.

use crate::ops::health::{is_live, is_ready, now_ms, Health, SinkStatus};
use crate::telemetry::metrics::metrics;
use crate::telemetry::supervision_log::read_recent;
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
    /// The bearer token `/metrics` and `/supervision` require, if any.
    pub token: Option<Arc<str>>,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Whether `authorization` (the request's header) carries `token`, compared in time
/// that does not depend on where they differ.
pub fn authorized(token: Option<&str>, authorization: Option<&[u8]>) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    given.len() == token.len()
        && given.iter().zip(token.as_bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Middleware of the protected routes: 401 unless the request carries the token.
async fn require_token(
    request: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let token = request.app_data::<web::Data<AdminState>>().and_then(|s| s.token.clone());
    let header = request.headers().get(actix_web::http::header::AUTHORIZATION);
    if authorized(token.as_deref(), header.map(|h| h.as_bytes())) {
        return Ok(next.call(request).await?.map_into_boxed_body());
    }
    let refused = HttpResponse::Unauthorized()
        .insert_header(("WWW-Authenticate", "Bearer"))
        .json(serde_json::json!({"error": "a bearer token is required (admin.token)"}));
    Ok(request.into_response(refused))
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
    let path = state.supervision_log.clone();
    let entries = web::block(move || read_recent(&path, 200).unwrap_or_default()).await;
    HttpResponse::Ok().json(entries.unwrap_or_default())
}

/// Starts the server on `listen`; returns the bound address.
pub fn start(listen: &str, state: AdminState) -> std::io::Result<std::net::SocketAddr> {
    let max_connections = state.max_connections;
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .app_data(web::PayloadConfig::new(1024))
            .route("/health", web::get().to(health))
            .route("/ready", web::get().to(ready))
            .service(
                web::scope("")
                    .wrap(actix_web::middleware::from_fn(require_token))
                    .route("/metrics", web::get().to(prometheus_metrics))
                    .route("/supervision", web::get().to(supervision)),
            )
    })
    .workers(1)
    .max_connections(max_connections)
    .backlog(max_connections as u32)
    .client_request_timeout(Duration::from_secs(5))
    .client_disconnect_timeout(Duration::from_secs(1))
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
    fn a_token_when_set_is_required_exactly() {
        assert!(authorized(None, None));
        assert!(authorized(Some("s3cret"), Some(b"Bearer s3cret")));
        assert!(!authorized(Some("s3cret"), None));
        assert!(!authorized(Some("s3cret"), Some(b"Bearer s3cre")));
        assert!(!authorized(Some("s3cret"), Some(b"Bearer s3creT")));
        assert!(!authorized(Some("s3cret"), Some(b"s3cret")));
    }

    #[test]
    fn ready_needs_partitions_and_both_sinks() {
        assert!(is_ready(3, true, true));
        assert!(!is_ready(0, true, true));
        assert!(!is_ready(3, false, true));
        assert!(!is_ready(3, true, false));
    }
}
