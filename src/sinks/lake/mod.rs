//! The lake sink, a Delta Lake table: [`writer`] buffers per partition and flushes
//! through [`files`] (Arrow batches to Parquet, with each event type's typed payload
//! columns from [`payload_columns`], over the tables' [`schemas`]), [`layout`] (Hive paths and file names)
//! and [`table`] (the Delta tables, whose `txn` actions hold each partition's progress
//! and fence zombies), on a local folder or S3 ([`store`]); [`reader`] reads what the tables hold; [`purge`] erases deleted
//! events from the files; [`compact`] merges small files and vacuums replaced ones.

pub mod compact;
pub mod files;
pub mod layout;
pub mod payload_columns;
pub mod purge;
pub mod reader;
pub mod schemas;
pub mod store;
pub mod table;
pub mod writer;
