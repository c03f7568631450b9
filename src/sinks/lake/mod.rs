//! The Parquet lake sink: [`writer`] buffers per partition and flushes through
//! [`files`] (Arrow batches to Parquet), [`layout`] (Hive paths and file names) and
//! [`commit_log`] (the commit log that makes a flush atomic and fences zombies); [`reader`]
//! lists and reads what was published; [`purge`] erases deleted events from the files.

pub mod commit_log;
pub mod files;
pub mod layout;
pub mod purge;
pub mod reader;
pub mod writer;
