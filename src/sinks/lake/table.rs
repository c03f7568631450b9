//! The lake's two Delta Lake tables (delta-rs), seen from a blocking caller:
//!
//! - the events table at the lake root, partitioned by `event_type/year/month/day`;
//! - the retractions table at `_retractions/` (invalidations and deletions).
//!
//! Each Kafka partition's progress in a table is a `txn` action in that table's own log
//! (app id `eventline/{topic}/{partition}`, version = the next offset not stored), as
//! kafka-delta-ingest keeps it: the table is the lake's offset store. A commit is
//! attempted on the snapshot its caller checked, with no automatic retry, so a commit
//! that lands proves that no other writer moved any partition in between (the commit
//! file is created with create-new semantics: `O_EXCL` locally, `If-None-Match` on S3).
//!
//! delta-rs is async; the lake writer runs on its own thread, so this module owns a
//! small current-thread runtime and blocks on it.

pub use crate::sinks::lake::layout::{TableKind, PARTITION_COLUMNS};
use crate::sinks::lake::schemas::{dead_letter_schema, lake_schema, retraction_schema};
use crate::sinks::lake::store::{LakeStore, StoreError};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake_core::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake_core::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake_core::kernel::{Action, Add, Remove, StructType, Transaction};
use deltalake_core::operations::create::CreateBuilder;
use deltalake_core::protocol::{DeltaOperation, SaveMode};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Commits between checkpoints: a reader replays at most this many JSON entries.
pub const CHECKPOINT_INTERVAL: u64 = 100;

/// The table schema of `kind`: the file columns, plus the partition columns of the
/// events table (which live in folder names and in the log, not in the files).
fn table_schema(kind: TableKind) -> Schema {
    match kind {
        TableKind::Events => {
            let mut fields: Vec<Field> =
                lake_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields.push(Field::new("event_type", DataType::Utf8, false));
            for column in ["year", "month", "day"] {
                fields.push(Field::new(column, DataType::Int32, false));
            }
            Schema::new(fields)
        }
        TableKind::Retractions => retraction_schema().as_ref().clone(),
        TableKind::DeadLetters => dead_letter_schema().as_ref().clone(),
    }
}

/// The Hive partition columns of `kind`.
fn partition_columns(kind: TableKind) -> &'static [&'static str] {
    match kind {
        TableKind::Events => &PARTITION_COLUMNS,
        TableKind::Retractions | TableKind::DeadLetters => &[],
    }
}

/// The txn app id of a Kafka partition. Keyed by topic and partition, as Postgres's
/// `sink_progress` is, not by consumer group: a new group id must not make the lake
/// forget what it holds while Postgres remembers.
pub fn app_id(topic: &str, partition: i32) -> String {
    format!("eventline/{topic}/{partition}")
}

/// Delta table errors.
#[derive(Debug, thiserror::Error)]
pub enum LakeTableError {
    /// delta-rs failed on a table.
    #[error("delta table {table}: {source}")]
    Delta {
        /// The table's path.
        table: String,
        /// The cause (boxed: delta-rs's error is large).
        source: Box<DeltaTableError>,
    },
    /// The lake's storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A contract types a column the table already has differently.
    #[error("delta table {table}: column `{column}` is {held} in the table, but the contracts now make it {wanted}; Delta cannot change a column's type: give the field a new name in the new contract version")]
    ColumnType {
        /// The table's path.
        table: String,
        /// The column.
        column: String,
        /// Its type in the table.
        held: String,
        /// The type the contracts give it.
        wanted: String,
    },
}

impl crate::failure::Classified for LakeTableError {
    fn class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        match self {
            LakeTableError::Delta { source, .. } => match source.as_ref() {
                DeltaTableError::Io { source } => crate::failure::io_class(source),
                DeltaTableError::ObjectStore { .. }
                | DeltaTableError::Transaction { .. }
                | DeltaTableError::VersionAlreadyExists(_)
                | DeltaTableError::KernelError(_)
                | DeltaTableError::Kernel { .. } => FailureClass::Transient,
                // A log or schema this version cannot use: a person must look.
                _ => FailureClass::Fatal,
            },
            LakeTableError::Store(e) => e.class(),
            LakeTableError::ColumnType { .. } => FailureClass::Fatal,
        }
    }
}

/// What a commit attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitAttempt {
    /// Landed as this table version.
    Landed(u64),
    /// Another writer committed first: refresh, check again, retry or fence.
    Lost,
}

/// One of the lake's Delta tables, with blocking calls.
pub struct LakeTable {
    kind: TableKind,
    path: String,
    table: DeltaTable,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// Lets delta-rs open `s3://` tables on a store we build (its own AWS crate is not
/// used): the default log store, whose commits are create-new puts (`If-None-Match`).
struct S3LogStores;

impl deltalake_core::logstore::LogStoreFactory for S3LogStores {
    fn with_options(
        &self,
        prefixed: deltalake_core::logstore::ObjectStoreRef,
        root: deltalake_core::logstore::ObjectStoreRef,
        location: &url::Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn deltalake_core::logstore::LogStore>> {
        Ok(deltalake_core::logstore::default_logstore(prefixed, root, location, options))
    }
}

fn register_s3_log_stores() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let scheme = url::Url::parse("s3://").expect("a URL");
        deltalake_core::logstore::logstore_factories().insert(scheme, Arc::new(S3LogStores));
    });
}

impl LakeTable {
    /// Opens the table of `kind` in the lake `store`, creating it when missing. Two
    /// processes creating it at once is fine: the loser loads the winner's table.
    pub fn open(store: &LakeStore, kind: TableKind) -> Result<Self, LakeTableError> {
        let url = store.table_url(kind)?;
        let path = url.to_string();
        let delta =
            |source| LakeTableError::Delta { table: path.clone(), source: Box::new(source) };
        let runtime = store.runtime();
        let backend = store.s3_root_store();
        let table = runtime.block_on(open_or_create(url.clone(), backend, kind)).map_err(delta)?;
        Ok(LakeTable { kind, path, table, runtime })
    }

    /// The table's URL.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Which table this is.
    pub fn kind(&self) -> TableKind {
        self.kind
    }

    fn delta_error(&self, source: DeltaTableError) -> LakeTableError {
        LakeTableError::Delta { table: self.path.clone(), source: Box::new(source) }
    }

    /// Loads the commits made since this handle last looked.
    pub fn refresh(&mut self) -> Result<(), LakeTableError> {
        let result = self.runtime.block_on(self.table.update_state());
        result.map_err(|e| self.delta_error(e))
    }

    /// The loaded version.
    pub fn version(&self) -> u64 {
        self.table.version().unwrap_or(0)
    }

    /// The loaded snapshot's progress of `topic/partition`: the next offset it does not
    /// hold, or `None` when it holds nothing of that partition.
    pub fn progress(&self, topic: &str, partition: i32) -> Result<Option<i64>, LakeTableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let log_store = self.table.log_store();
        let read = snapshot.transaction_version(log_store.as_ref(), app_id(topic, partition));
        self.runtime.block_on(read).map_err(|e| self.delta_error(e))
    }

    /// The loaded snapshot's files: path relative to the table root, and rows.
    pub fn files(&self) -> Result<Vec<(String, Option<usize>)>, LakeTableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let mut files: Vec<(String, Option<usize>)> =
            snapshot.log_data().iter().map(|f| (f.path().into_owned(), f.num_records())).collect();
        files.sort();
        Ok(files)
    }

    /// The loaded snapshot's files: path relative to the table root, and size in bytes.
    pub fn file_sizes(&self) -> Result<Vec<(String, i64)>, LakeTableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let mut files: Vec<(String, i64)> =
            snapshot.log_data().iter().map(|f| (f.path().into_owned(), f.size())).collect();
        files.sort();
        Ok(files)
    }

    /// Files the table removed but keeps for readers of older versions until a vacuum
    /// deletes them (paths relative to the table root).
    pub fn tombstones(&self) -> Result<HashSet<String>, LakeTableError> {
        use futures::TryStreamExt;
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let log_store = self.table.log_store();
        // Inside the runtime: delta-rs builds its engine from the current one.
        let read = async {
            snapshot
                .all_tombstones(log_store.as_ref())
                .map_ok(|t| t.path().into_owned())
                .try_collect::<HashSet<String>>()
                .await
        };
        self.runtime.block_on(read).map_err(|e| self.delta_error(e))
    }

    /// Deletes the files that commits removed more than `retention` ago (delta-rs's
    /// vacuum in its `lite` mode: only files the log says were removed, never a file
    /// a writer has written and not committed yet). Returns the deleted paths.
    pub fn vacuum(
        &mut self,
        retention: chrono::Duration,
        dry_run: bool,
    ) -> Result<Vec<String>, LakeTableError> {
        use deltalake_core::operations::vacuum::VacuumMode;
        let vacuum = self
            .table
            .clone()
            .vacuum()
            .with_mode(VacuumMode::Lite)
            .with_retention_period(retention)
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run);
        let (table, metrics) =
            self.runtime.block_on(async move { vacuum.await }).map_err(|e| self.delta_error(e))?;
        self.table = table;
        Ok(metrics.files_deleted)
    }

    /// Adds the `wanted` columns the table lacks, in one metadata commit (a contract
    /// that gained a field adds a column; files written before read it as null). A
    /// column the table already has with another type is refused: Delta cannot change a
    /// column's type in place. Returns how many columns it added.
    pub fn ensure_columns(&mut self, wanted: &[Field]) -> Result<usize, LakeTableError> {
        let kernel = |f: &Field| -> Result<deltalake_core::kernel::StructField, LakeTableError> {
            f.try_into_kernel()
                .map_err(|e| self.delta_error(DeltaTableError::Generic(e.to_string())))
        };
        let wanted: Vec<deltalake_core::kernel::StructField> =
            wanted.iter().map(kernel).collect::<Result<_, _>>()?;
        for _ in 0..10 {
            let schema = self.table.snapshot().map_err(|e| self.delta_error(e))?.schema();
            let mut missing = Vec::new();
            for field in &wanted {
                match schema.field(field.name()) {
                    None => missing.push(field.clone()),
                    Some(held) if held.data_type() != field.data_type() => {
                        return Err(LakeTableError::ColumnType {
                            table: self.path.clone(),
                            column: field.name().to_string(),
                            held: held.data_type().to_string(),
                            wanted: field.data_type().to_string(),
                        })
                    }
                    Some(_) => {}
                }
            }
            if missing.is_empty() {
                return Ok(0);
            }
            let added = missing.len();
            let add = self.table.clone().add_columns().with_fields(missing);
            match self.runtime.block_on(async move { add.await }) {
                Ok(table) => {
                    self.table = table;
                    return Ok(added);
                }
                // Another process changed the table first: look again.
                Err(
                    DeltaTableError::Transaction { .. } | DeltaTableError::VersionAlreadyExists(_),
                ) => self.refresh()?,
                Err(e) => return Err(self.delta_error(e)),
            }
        }
        Err(self.delta_error(DeltaTableError::Generic(
            "adding columns: other writers kept changing the table".into(),
        )))
    }

    /// The remove action for one of the loaded snapshot's files; `data_change` false
    /// for a rewrite that keeps the rows (compaction).
    pub fn remove_action(&self, path: &str) -> Result<Option<Remove>, LakeTableError> {
        self.remove_action_with(path, true)
    }

    /// [`Self::remove_action`], saying whether the removal changes the table's data.
    pub fn remove_action_with(
        &self,
        path: &str,
        data_change: bool,
    ) -> Result<Option<Remove>, LakeTableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let found = snapshot.log_data().iter().find(|f| f.path() == path);
        Ok(found.map(|f| {
            let mut remove = f.remove_action(data_change);
            remove.deletion_timestamp = Some(chrono::Utc::now().timestamp_millis());
            remove
        }))
    }

    /// The partition values of one of the loaded snapshot's files.
    pub fn partition_values(
        &self,
        path: &str,
    ) -> Result<Option<HashMap<String, Option<String>>>, LakeTableError> {
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let found = snapshot.log_data().iter().find(|f| f.path() == path);
        Ok(found.map(|f| f.partition_values_map()))
    }

    /// Commits `actions` plus one txn per `(topic, partition, next offset)`, on the
    /// loaded snapshot exactly: if another writer committed since, nothing lands and
    /// the answer is [`CommitAttempt::Lost`].
    pub fn try_commit(
        &mut self,
        actions: Vec<Action>,
        progress: &[(&str, i32, i64)],
        operation: DeltaOperation,
    ) -> Result<CommitAttempt, LakeTableError> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut actions = actions;
        actions.extend(progress.iter().map(|(topic, partition, next)| {
            Action::Txn(Transaction::new_with_last_update(
                app_id(topic, *partition),
                *next,
                Some(now),
            ))
        }));
        let version = self.version();
        // Expired log entries are cleaned only when a checkpoint is written: cleaning
        // lists the whole log, which is too much for every commit.
        let checkpoint_next = (version + 2).is_multiple_of(CHECKPOINT_INTERVAL);
        let properties = CommitProperties::default()
            .with_max_retries(0)
            .with_create_checkpoint(true)
            .with_cleanup_expired_logs(Some(checkpoint_next));
        let snapshot = self.table.snapshot().map_err(|e| self.delta_error(e))?;
        let commit = CommitBuilder::from(properties).with_actions(actions).build(
            Some(snapshot),
            self.table.log_store(),
            operation,
        );
        match self.runtime.block_on(async move { commit.await }) {
            Ok(finalized) => {
                let landed = finalized.version();
                self.table.state = Some(finalized.snapshot());
                Ok(CommitAttempt::Landed(landed))
            }
            Err(DeltaTableError::Transaction {
                source: TransactionError::MaxCommitAttempts(_),
            })
            | Err(DeltaTableError::VersionAlreadyExists(_)) => Ok(CommitAttempt::Lost),
            Err(e) => Err(self.delta_error(e)),
        }
    }
}

/// The operation a flush records in the table's history.
pub fn append_operation(kind: TableKind) -> DeltaOperation {
    let columns = partition_columns(kind);
    DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: (!columns.is_empty())
            .then(|| columns.iter().map(|c| c.to_string()).collect()),
        predicate: None,
    }
}

/// An add action for a file of `rows` rows and `size` bytes at `path` (relative to the
/// table root, `/`-separated).
pub fn add_action(
    path: String,
    partition_values: HashMap<String, Option<String>>,
    size: u64,
    rows: usize,
) -> Add {
    Add {
        path,
        partition_values,
        size: size as i64,
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(serde_json::json!({ "numRecords": rows }).to_string()),
        ..Default::default()
    }
}

fn builder(
    url: &url::Url,
    backend: &Option<deltalake_core::logstore::ObjectStoreRef>,
) -> Result<DeltaTable, DeltaTableError> {
    let builder = DeltaTableBuilder::from_url(url.clone())?;
    match backend {
        Some(root) => {
            register_s3_log_stores();
            builder.with_storage_backend(root.clone(), url.clone()).build()
        }
        None => builder.build(),
    }
}

async fn open_or_create(
    url: url::Url,
    backend: Option<deltalake_core::logstore::ObjectStoreRef>,
    kind: TableKind,
) -> Result<DeltaTable, DeltaTableError> {
    let mut table = builder(&url, &backend)?;
    match table.load().await {
        Ok(()) => return Ok(table),
        Err(DeltaTableError::NotATable(_)) => {}
        Err(e) => return Err(e),
    }
    let schema: StructType = (&table_schema(kind))
        .try_into_kernel()
        .map_err(|e| DeltaTableError::Generic(e.to_string()))?;
    let created = CreateBuilder::new()
        .with_log_store(table.log_store())
        .with_table_name(kind.name())
        .with_columns(schema.fields().cloned())
        .with_partition_columns(partition_columns(kind).iter().copied())
        .with_configuration_property(
            TableProperty::CheckpointInterval,
            Some(CHECKPOINT_INTERVAL.to_string()),
        )
        .with_save_mode(SaveMode::Ignore)
        .await;
    match created {
        Ok(table) => Ok(table),
        // Another process created it between our load and our create.
        Err(_) => {
            let mut table = builder(&url, &backend)?;
            table.load().await?;
            Ok(table)
        }
    }
}
