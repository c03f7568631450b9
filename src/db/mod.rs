//! PostgreSQL access shared by the actors: the r2d2 pool, the embedded migrations
//! (run under an advisory lock, so two processes starting together are safe), and
//! sink progress reads.

pub mod schema;

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
pub fn pool(url: &str, size: u32, connect_timeout: Duration) -> PgPool {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .connection_timeout(connect_timeout)
        .test_on_check_out(true)
        .build_unchecked(ConnectionManager::new(url))
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
pub fn migrate(conn: &mut PgConnection) -> Result<usize, DbError> {
    diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")).execute(conn)?;
    let result = conn
        .run_pending_migrations(MIGRATIONS)
        .map(|done| done.len())
        .map_err(|e| DbError::Migration(e.to_string()));
    diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})")).execute(conn)?;
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

impl crate::error::class::Classified for DbError {
    fn class(&self) -> crate::error::class::FailureClass {
        use crate::error::class::FailureClass;
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
