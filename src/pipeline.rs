//! Wires the actors together and runs them until a signal or a fatal failure.
//!
//! ```text
//! KafkaSource -> (per partition) Validator -> Deduplicator -> DeadLetterPublisher
//!                  -> SinkSupervisor<PostgresWriter> and SinkSupervisor<ParquetWriter>
//!                  -> OffsetTracker (commits what both sinks stored)
//! ```

use crate::db::{self, PgPool};
use crate::offsets::tracker::{CommitNow, OffsetTracker};
use crate::ops::admin::{self, AdminState};
use crate::ops::health::{Health, SinkStatus};
use crate::ops::stats::Snapshot;
use crate::projections::refresh::Projections;
use crate::settings::Settings;
use crate::sinks::lake::buffer::RollLimits;
use crate::sinks::lake::files::FileFormat;
use crate::sinks::lake::payload_columns::PayloadColumns;
use crate::sinks::lake::recovery::prepare_lake;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::writer::ParquetWriter;
use crate::sinks::postgres::writer::PostgresWriter;
use crate::sinks::progress::ProgressStore;
use crate::sinks::restart_policy::RestartPolicy;
use crate::sinks::supervisor::{Drain, SinkSupervisor, SupervisorParts};
use crate::sinks::verdicts::PostgresVerdicts;
use crate::source::actor::GroupGuard;
use crate::source::actor::{KafkaSource, StopFetching};
use crate::source::consumer::create_consumer;
use crate::source::flow::Stages;
use crate::source::group_watch::GroupWatch;
use crate::source::release::AssignmentListener;
use crate::stages::contract::Contracts;
use crate::stages::dead_letter::DeadLetterPublisher;
use crate::stages::deduplicator::Deduplicator;
use crate::stages::validator::Validator;
use crate::telemetry::faults::{Faults, TransactionPause};
use crate::telemetry::supervision_log::{Rotation, SupervisionLog};
use actix::prelude::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A rule of the settings that needs the machine (the lake root's writability).
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    /// Contracts failed to load.
    #[error(transparent)]
    Contracts(#[from] crate::stages::contract::ContractLoadError),
    /// Postgres could not be migrated.
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    /// The Kafka client could not be created.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The brokers could not be reached (or refused the credentials) at start.
    #[error(transparent)]
    KafkaUnreachable(#[from] crate::source::consumer::ConnectError),
    /// The admin server could not bind.
    #[error("admin server on {listen} (admin.listen): {source}")]
    Admin {
        /// The address.
        listen: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A Postgres reference table of the transforms could not be read.
    #[error("transforms: reference table {0}")]
    ReferenceTable(String),
    /// The current-state tables could not be made or altered.
    #[error("current-state tables: {0}")]
    StateTables(String),
    /// The lake's Delta tables could not be opened or created.
    #[error("lake.root {path}: {message}")]
    Lake {
        /// Path from `lake.root`.
        path: String,
        /// What failed.
        message: String,
    },
    /// The supervision log could not be opened.
    #[error("supervision log {path}: {source}")]
    SupervisionLog {
        /// Path from `supervision.log_path`.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// Signal received, everything flushed and committed.
    Clean,
    /// Signal received, but flushing did not finish within `shutdown_timeout_s`.
    ShutdownTimedOut,
    /// A sink supervisor gave up.
    SinkGaveUp(String),
}

impl Exit {
    /// Process exit code.
    pub fn code(&self) -> i32 {
        match self {
            Exit::Clean => 0,
            Exit::ShutdownTimedOut => 2,
            Exit::SinkGaveUp(_) => 3,
        }
    }
}

/// The running actors.
pub struct Running {
    source: Addr<KafkaSource>,
    postgres: Addr<SinkSupervisor<PostgresWriter>>,
    lake: Addr<SinkSupervisor<ParquetWriter>>,
    tracker: Addr<OffsetTracker>,
    /// Postgres sink state.
    pub postgres_status: Arc<SinkStatus>,
    /// Lake sink state.
    pub lake_status: Arc<SinkStatus>,
    fatal: mpsc::UnboundedReceiver<String>,
}

/// Connects, migrates and loads contracts (blocking; before the actor system starts).
pub fn prepare(settings: &Settings) -> Result<(Arc<Contracts>, PgPool), StartError> {
    let dir = &settings.pipeline.contracts_dir;
    let mut contracts = Contracts::load(dir, settings.into())?;
    let pool = db::pool(&settings.postgres);
    let mut conn = db::conn(&pool)?;
    let applied = db::migrate(&mut conn)?;
    if applied > 0 {
        log::info!("Applied {applied} migration(s)");
    }
    if !contracts.postgres_tables().is_empty() {
        // Reference tables in Postgres are read once, here: a lookup never waits on the
        // database, and the same record gives the same output for the whole run.
        let mut tables = std::collections::HashMap::new();
        for name in contracts.postgres_tables() {
            let table = crate::stages::reference_table::read(&mut conn, name)
                .map_err(|e| StartError::ReferenceTable(format!("{name}: {e}")))?;
            log::info!("transforms: reference table {name}: {} rows", table.rows.len());
            tables.insert(name.clone(), Arc::new(table));
        }
        contracts = Contracts::load_with(dir, settings.into(), tables)?;
    }
    let contracts = Arc::new(contracts);
    crate::telemetry::metrics::metrics()
        .know_event_types(contracts.known().into_iter().map(|(t, _)| t));
    let projections = Projections::new(contracts.entities().clone());
    projections.ensure_tables(&mut conn).map_err(|e| StartError::StateTables(e.to_string()))?;
    for entity in &projections.entities().0 {
        log::info!(
            "current state: {} <- {} (key {})",
            entity.table(),
            entity.event_types.join(", "),
            entity.key
        );
    }
    drop(conn);
    Ok((contracts, pool))
}

/// Starts every actor; call inside a running actix `System`.
pub fn start(
    settings: &Settings,
    contracts: Arc<Contracts>,
    pool: PgPool,
) -> Result<Running, StartError> {
    let s = settings;
    let log = Arc::new(
        SupervisionLog::open(&s.supervision.log_path, Rotation::from(&s.supervision)).map_err(
            |source| StartError::SupervisionLog {
                path: s.supervision.log_path.display().to_string(),
                source,
            },
        )?,
    );
    let progress =
        ProgressStore { pool: pool.clone(), lake: s.lake.clone(), topic: s.kafka.topic.clone() };
    let group = Arc::new(GroupWatch::default());
    let (consumer, rebalances) = create_consumer(&s.kafka, group.clone())?;
    let consumer = Arc::new(consumer);
    let health = Arc::new(Health::default());
    health.beat();
    health.progressed();
    let stall = Duration::from_secs(s.admin.stall_timeout_s);
    let tracker =
        OffsetTracker::new(consumer.clone(), s.kafka.topic.clone(), health.clone(), stall).start();
    let (fatal_tx, fatal) = mpsc::unbounded_channel();
    let policy = RestartPolicy::from(&s.supervision);
    let dead_letters = DeadLetterPublisher::new(&s.kafka)?.start();
    let fault_delay = Duration::from_millis(s.faults.after_ms);
    let parts = |plan: &[crate::settings::Fault], status: &Arc<SinkStatus>| SupervisorParts {
        faults: Faults::new(plan, s.faults.after_batches, fault_delay),
        capacity_bytes: s.pipeline.sink_queue_bytes,
        policy: policy.clone(),
        log: log.clone(),
        tracker: tracker.clone().recipient(),
        fatal: fatal_tx.clone(),
        status: status.clone(),
        health: health.clone(),
        dead_letters: Some(dead_letters.clone().recipient()),
    };
    let (postgres_status, lake_status) =
        (Arc::new(SinkStatus::default()), Arc::new(SinkStatus::default()));
    let pg_pool = pool.clone();
    let verdicts = Arc::new(PostgresVerdicts::default());
    let pg_verdicts = verdicts.clone();
    let pause =
        TransactionPause::new(Duration::from_millis(s.faults.postgres_pause_in_transaction_ms));
    let projections = Arc::new(Projections::new(contracts.entities().clone()));
    let postgres = SinkSupervisor::new(
        Arc::new(move || {
            PostgresWriter::new(pg_pool.clone(), pg_verdicts.clone())
                .with_pause(pause)
                .with_projections(projections.clone())
        }),
        parts(&s.faults.postgres, &postgres_status),
    )
    .start();
    let (limits, format) = (RollLimits::from(s), FileFormat::from(s));
    let store = LakeStore::from_settings(&s.lake).map_err(|e| StartError::Lake {
        path: s.lake.root.display().to_string(),
        message: e.to_string(),
    })?;
    let columns = Arc::new(PayloadColumns::from_contracts(&contracts));
    let lake = SinkSupervisor::new(
        Arc::new(move || {
            ParquetWriter::new(store.clone(), limits, format, verdicts.clone())
                .with_columns(columns.clone())
        }),
        parts(&s.faults.parquet, &lake_status),
    )
    .start();
    let validator_contracts = contracts.clone();
    let dedup_pool = pool.clone();
    let stages = Stages {
        validator: {
            let (log, faults) = (
                log.clone(),
                Faults::new(&s.faults.validator, s.faults.after_batches, fault_delay),
            );
            let late_after = Duration::from_secs(s.pipeline.late_after_s);
            let header_rules = crate::stages::headers::HeaderRules::from(&s.headers);
            SyncArbiter::start(2, move || {
                Validator::new(
                    validator_contracts.clone(),
                    log.clone(),
                    faults.clone(),
                    late_after,
                    header_rules.clone(),
                )
            })
        },
        deduplicator: {
            let (log, faults) = (
                log.clone(),
                Faults::new(&s.faults.deduplicator, s.faults.after_batches, fault_delay),
            );
            SyncArbiter::start(2, move || {
                Deduplicator::new(dedup_pool.clone(), log.clone(), faults.clone())
            })
        },
        dead_letters,
        postgres: postgres.clone().recipient(),
        lake: lake.clone().recipient(),
        faults: Faults::new(&s.faults.flow, s.faults.after_batches, fault_delay),
    };
    let source = KafkaSource::new(
        consumer,
        progress,
        rebalances,
        &s.kafka.topic,
        stages,
        s.pipeline.clone(),
        AssignmentListener {
            assigned: tracker.clone().recipient(),
            revoked: tracker.clone().recipient(),
            drains: vec![postgres.clone().recipient(), lake.clone().recipient()],
            commit: tracker.clone().recipient(),
        },
        health.clone(),
        GroupGuard {
            watch: group,
            rejoin_after: Duration::from_secs(s.kafka.rejoin_after_s),
            log: log.clone(),
            fatal: fatal_tx.clone(),
        },
    )
    .start();
    let admin_state = AdminState {
        health,
        postgres: postgres_status.clone(),
        lake: lake_status.clone(),
        supervision_log: s.supervision.log_path.clone(),
        stall: Duration::from_secs(s.admin.stall_timeout_s),
        token: Some(s.admin.token.clone()).filter(|t| !t.is_empty()).map(Arc::from),
        max_connections: s.admin.max_connections,
    };
    let address = admin::start(&s.admin.listen, admin_state)
        .map_err(|source| StartError::Admin { listen: s.admin.listen.clone(), source })?;
    log::info!("Admin server listening on http://{address} (/health /ready /metrics /supervision)");
    spawn_summary(
        Duration::from_secs(s.pipeline.summary_interval_s),
        postgres_status.clone(),
        lake_status.clone(),
    );
    Ok(Running { source, postgres, lake, tracker, postgres_status, lake_status, fatal })
}

fn spawn_summary(every: Duration, pg: Arc<SinkStatus>, lake: Arc<SinkStatus>) {
    actix::spawn(async move {
        let mut last = Snapshot::now();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = Snapshot::now();
            let state =
                |s: &SinkStatus| if s.up.load(Ordering::Relaxed) { "up" } else { "restarting" };
            log::info!(
                "Summary: consumed={} ({:.0}/s) accepted={} late={} duplicate={} conflict={} invalidated={} deleted={} dead_letter={} postgres={} (queued {}, restarts {}) lake={} (queued {}, restarts {})",
                now.consumed,
                (now.consumed - last.consumed) as f64 / every.as_secs_f64(),
                now.accepted,
                now.late,
                now.duplicates,
                now.conflicts,
                now.invalidated,
                now.deleted,
                now.dead,
                state(&pg),
                pg.queued.load(Ordering::Relaxed),
                pg.restarts.load(Ordering::Relaxed),
                state(&lake),
                lake.queued.load(Ordering::Relaxed),
                lake.restarts.load(Ordering::Relaxed),
            );
            last = now;
        }
    });
}

impl Running {
    /// Waits for SIGTERM/SIGINT (then shuts down cleanly) or a supervisor giving up.
    pub async fn run_until_stopped(mut self, shutdown_timeout: Duration) -> Exit {
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        let reason = tokio::select! {
            _ = sigterm.recv() => None,
            _ = tokio::signal::ctrl_c() => None,
            Some(cause) = self.fatal.recv() => Some(cause),
        };
        if let Some(cause) = reason {
            log::error!("Stopping: {cause}");
            return Exit::SinkGaveUp(cause);
        }
        log::info!("Signal received: stopping fetching, flushing both sinks, committing");
        match tokio::time::timeout(shutdown_timeout, self.shutdown()).await {
            Ok(()) => {
                log::info!("Shutdown complete: {:?}", Snapshot::now());
                Exit::Clean
            }
            Err(_) => {
                log::error!("Shutdown did not finish within {shutdown_timeout:?}; exiting with what is committed");
                Exit::ShutdownTimedOut
            }
        }
    }

    /// Stops fetching, drains both sinks, commits.
    pub async fn shutdown(&self) {
        let _ = self.source.send(StopFetching).await;
        let _ = futures::future::join(self.postgres.send(Drain), self.lake.send(Drain)).await;
        match self.tracker.send(CommitNow).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::warn!("Final commit failed (the sinks' progress is still exact): {e}")
            }
            Err(e) => log::warn!("Offset tracker gone before the final commit: {e}"),
        }
    }
}

/// Runs the processor until stopped; returns how it ended.
pub fn run(settings: Settings) -> Result<Exit, StartError> {
    settings.validate()?;
    // The tables exist before anything reads their progress, and files of flushes that
    // a crash left uncommitted go now, not when the lake writer gets its first batch.
    let lake_error = |message: String| StartError::Lake {
        path: settings.lake.root.display().to_string(),
        message,
    };
    let (contracts, pool) = prepare(&settings)?;
    let store = LakeStore::from_settings(&settings.lake).map_err(|e| lake_error(e.to_string()))?;
    let columns = PayloadColumns::from_contracts(&contracts);
    let removed = prepare_lake(&store, FileFormat::from(&settings), &columns)
        .map_err(|e| lake_error(e.to_string()))?;
    if removed > 0 {
        log::info!("lake: removed {removed} files of flushes that never committed");
    }
    crate::source::consumer::probe(&settings.kafka)?;
    let timeout = Duration::from_secs(settings.pipeline.shutdown_timeout_s);
    let system = actix::System::new();
    system.block_on(async move {
        let running = start(&settings, contracts, pool)?;
        let protocol = settings.kafka.client.get("security.protocol");
        log::info!(
            "eventline running: topic {} at {} ({}) -> postgres + lake {}",
            settings.kafka.topic,
            settings.kafka.brokers,
            protocol.map_or("plaintext", String::as_str),
            settings.lake.root.display()
        );
        Ok(running.run_until_stopped(timeout).await)
    })
}

impl crate::failure::Classified for StartError {
    fn class(&self) -> crate::failure::FailureClass {
        match self {
            StartError::Db(e) => e.class(),
            _ => crate::failure::FailureClass::Fatal,
        }
    }
}
