//! PostgreSQL access shared by the actors: the r2d2 pool, the embedded migrations
//! (run under an advisory lock, so two processes starting together are safe), and
//! sink progress reads.

pub mod prepared;
pub mod schema;

use crate::settings::PostgresSettings;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use schema::sink_progress;
use std::time::Duration;

/// The migrations in `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// An arbitrary constant: the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6576_656e_746c_696e;

/// The connection pool.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;
/// One pooled connection.
pub type PgConn = PooledConnection<ConnectionManager<PgConnection>>;

/// Database errors, classified for the supervisor.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (server down, pool exhausted): retry later.
    #[error("postgres unavailable: {0}")]
    Unavailable(String),
    /// A statement failed.
    #[error("postgres query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations failed.
    #[error("postgres migrations failed: {0}")]
    Migration(String),
}

/// Builds a pool without connecting yet, so the process starts while Postgres is down.
/// Every connection gets the session limits of [`SessionLimits`].
pub fn pool(settings: &PostgresSettings) -> PgPool {
    Pool::builder()
        .max_size(settings.pool_size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .test_on_check_out(true)
        .connection_customizer(Box::new(SessionLimits::from(settings)))
        .build_unchecked(ConnectionManager::new(&settings.url))
}

/// Bounds on how long one session can hold up another, set on every new connection.
/// Without them a process frozen (SIGSTOP, a VM pause) inside a writer transaction held
/// its locks for ever, and the process that took over its partitions waited on them
/// with its whole Postgres writer. With them the frozen session's transaction is rolled
/// back after `idle_in_transaction`, and a write that waits on a lock longer than
/// `lock` fails as transient and is retried with backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// `lock_timeout` in milliseconds (0: no limit).
    pub lock_ms: u64,
    /// `idle_in_transaction_session_timeout` in milliseconds (0: no limit).
    pub idle_in_transaction_ms: u64,
    /// `statement_timeout` in milliseconds (0: no limit).
    pub statement_ms: u64,
}

impl From<&PostgresSettings> for SessionLimits {
    fn from(s: &PostgresSettings) -> Self {
        SessionLimits {
            lock_ms: s.lock_timeout_ms,
            idle_in_transaction_ms: s.idle_in_transaction_timeout_ms,
            statement_ms: s.statement_timeout_ms,
        }
    }
}

impl SessionLimits {
    /// The `SET` statements for a new session. JIT off: the state fold's estimated cost
    /// crosses `jit_above_cost` and compiling it took 440 ms per statement, far more than
    /// running it; eventline's statements are short and repeated.
    pub fn statements(&self) -> String {
        format!(
            "SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}; \
             SET statement_timeout = {}; SET jit = off;",
            self.lock_ms, self.idle_in_transaction_ms, self.statement_ms
        )
    }
}

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for SessionLimits {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        use diesel::connection::SimpleConnection;
        conn.batch_execute(&self.statements()).map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Gets a connection, mapping pool errors to [`DbError::Unavailable`].
pub fn conn(pool: &PgPool) -> Result<PgConn, DbError> {
    pool.get().map_err(|e| DbError::Unavailable(e.to_string()))
}

/// The connection an actor kept from its last successful use, or a fresh one from the
/// pool. Kept connections skip the checkout's validation round trip; the caller puts the
/// connection back only after a success, so one that failed is never reused.
pub fn kept_or_new(kept: &mut Option<PgConn>, pool: &PgPool) -> Result<PgConn, DbError> {
    kept.take().map_or_else(|| conn(pool), Ok)
}

/// Runs pending migrations while holding a session advisory lock.
///
/// The wait for the lock is not bounded by the session's `lock_timeout`: a process
/// frozen while it migrated holds the lock until the server ends its session
/// (`idle_in_transaction_session_timeout`), and a process starting meanwhile should
/// wait for that rather than exit (the zombie test once froze one mid-migration).
pub fn migrate(conn: &mut PgConnection) -> Result<usize, DbError> {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        lock_timeout: String,
    }
    let kept = diesel::sql_query("SHOW lock_timeout").get_result::<Setting>(conn)?;
    diesel::sql_query("SET lock_timeout = 0").execute(conn)?;
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(conn)?;
    let result = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|done| done.len())
        .map_err(|e| DbError::Migration(e.to_string()));
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn)?;
    // The connection goes back to the pool: give it back its bound.
    diesel::sql_query(format!("SET lock_timeout = '{}'", kept.lock_timeout)).execute(conn)?;
    result
}

/// The stored progress of `sink` on a partition, `None` when it never stored anything.
pub fn read_progress(
    conn: &mut PgConnection,
    sink: &str,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, DbError> {
    Ok(sink_progress::table
        .filter(sink_progress::sink.eq(sink))
        .filter(sink_progress::topic.eq(topic))
        .filter(sink_progress::partition.eq(partition))
        .select(sink_progress::next_offset)
        .first(conn)
        .optional()?)
}

impl crate::failure::Classified for DbError {
    fn class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        use diesel::result::{DatabaseErrorKind as Kind, Error as Diesel};
        match self {
            DbError::Unavailable(_) => FailureClass::Transient,
            DbError::Migration(_) => FailureClass::Fatal,
            DbError::Query(Diesel::DatabaseError(kind, _)) => match kind {
                Kind::UniqueViolation
                | Kind::ForeignKeyViolation
                | Kind::NotNullViolation
                | Kind::CheckViolation => FailureClass::Poison,
                _ => FailureClass::Transient,
            },
            DbError::Query(_) => FailureClass::Transient,
        }
    }
}
