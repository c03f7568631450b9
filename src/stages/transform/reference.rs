//! Reference tables that lookups read: CSV files of `contracts/_reference/`, or
//! Postgres tables read once at start.

use super::errors::{ReferenceError, TransformLoadError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A reference table: rows keyed by their first column, every value text.
#[derive(Debug, Default)]
pub struct ReferenceTable {
    /// Its name (file name, or `postgres:...`).
    pub name: String,
    /// Column names.
    pub columns: Vec<String>,
    /// First column -> the row.
    pub rows: HashMap<String, Vec<String>>,
}

impl ReferenceTable {
    /// Reads a CSV file with a header row.
    pub fn from_csv(name: &str, path: &Path) -> Result<ReferenceTable, TransformLoadError> {
        let bad = |message: String| TransformLoadError::Reference { table: name.into(), message };
        let mut reader = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let columns: Vec<String> =
            reader.headers().map_err(|e| bad(e.to_string()))?.iter().map(str::to_string).collect();
        let mut rows = HashMap::new();
        for record in reader.records() {
            let record = record.map_err(|e| bad(e.to_string()))?;
            let row: Vec<String> = record.iter().map(str::to_string).collect();
            if let Some(key) = row.first() {
                rows.entry(key.clone()).or_insert(row);
            }
        }
        Ok(ReferenceTable { name: name.into(), columns, rows })
    }
}

/// Where a rule's reference tables come from.
pub trait ReferenceSource {
    /// The table `name` names (`countries.csv`, `postgres:public.fx`).
    fn table(&mut self, name: &str) -> Result<Arc<ReferenceTable>, ReferenceError>;
}

/// CSV files of a folder; Postgres tables are placeholders filled at start.
pub struct FolderTables {
    /// The folder (`contracts/_reference`).
    pub dir: PathBuf,
    /// Tables already read.
    pub loaded: HashMap<String, Arc<ReferenceTable>>,
}

impl ReferenceSource for FolderTables {
    fn table(&mut self, name: &str) -> Result<Arc<ReferenceTable>, ReferenceError> {
        if let Some(table) = self.loaded.get(name) {
            return Ok(table.clone());
        }
        let table = if name.starts_with("postgres:") {
            // Read by `Contracts::load_postgres_tables` at start (needs a connection).
            ReferenceTable { name: name.into(), ..ReferenceTable::default() }
        } else {
            if name.contains('/') || name.contains("..") {
                return Err(ReferenceError::NotAFileName(name.to_string()));
            }
            ReferenceTable::from_csv(name, &self.dir.join(name)).map_err(Box::new)?
        };
        let table = Arc::new(table);
        self.loaded.insert(name.into(), table.clone());
        Ok(table)
    }
}
