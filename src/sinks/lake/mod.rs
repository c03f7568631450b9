//! The lake sink, Delta Lake tables on a local folder or S3 ([`store`]).
//!
//! - [`writer`]: the sink's writer; buffers per partition ([`buffer`]) and flushes;
//! - [`flush_files`]: the files a flush writes, through [`files`] (Arrow batches to
//!   Parquet, each event type's typed payload columns from [`payload_columns`], over
//!   the tables' [`schemas`]);
//! - [`layout`]: every name, tag, parse and listing filter of a lake file;
//! - [`commit`]: the Delta commit and the progress its `txn` actions carry, which
//!   fences zombies; [`table`]: one Delta table;
//! - [`recovery`]: start-up probe, tables and orphan files;
//! - [`reader`]: reads what the tables hold; [`purge`] erases deleted events from the
//!   files; [`compact`] merges small files and vacuums replaced ones.

pub mod buffer;
pub mod commit;
pub mod compact;
pub mod files;
pub mod flush_files;
pub mod layout;
pub mod payload_columns;
pub mod purge;
pub mod reader;
pub mod recovery;
pub mod schemas;
pub mod store;
pub mod table;
pub mod writer;
