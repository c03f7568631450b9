//! Loading the contracts folder: the envelope, one JSON Schema per event type and
//! version (`{event_type}/v{N}.schema.json`), each type's transforms and entity
//! declaration, compiled once at start.

use super::{Contracts, Limits};
use crate::payload_fields::fields_of;
use crate::projections::declaration::{parse_declaration, Entities, EntityDecl};
use crate::stages::transform::{
    parse_transforms_file_name, FolderTables, ReferenceTable, RuleSet, TransformLoadError,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Contracts could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ContractLoadError {
    /// A file or folder could not be read.
    #[error("contracts: cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A transforms file or a reference table is wrong.
    #[error(transparent)]
    Transforms(#[from] TransformLoadError),
    /// A file is not JSON or not a valid schema.
    #[error("contracts: {path} is not a valid JSON Schema: {message}")]
    BadSchema {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Contracts {
    /// Loads `envelope.schema.json` and every `{event_type}/v{N}.schema.json` under `dir`.
    pub fn load(dir: &Path, limits: Limits) -> Result<Contracts, ContractLoadError> {
        Self::load_with(dir, limits, HashMap::new())
    }

    /// [`Self::load`], with reference tables read beforehand (the Postgres ones the
    /// transforms name, [`Self::postgres_tables`]).
    pub fn load_with(
        dir: &Path,
        limits: Limits,
        tables: HashMap<String, Arc<ReferenceTable>>,
    ) -> Result<Contracts, ContractLoadError> {
        let envelope = compile(&dir.join("envelope.schema.json"))?;
        let mut payloads = HashMap::new();
        let mut fields = HashMap::new();
        let mut decls = HashMap::new();
        let mut transforms = HashMap::new();
        let mut raw_fields = HashMap::new();
        let mut reference = FolderTables { dir: dir.join("_reference"), loaded: tables };
        for entry in read_dir(dir)? {
            let type_dir = entry.path();
            let event_type = entry.file_name().to_string_lossy().into_owned();
            // `_reference/` and other folders starting with `_` are not event types.
            if !type_dir.is_dir() || event_type.starts_with('_') {
                continue;
            }
            for file in read_dir(&type_dir)? {
                let name = file.file_name().to_string_lossy().into_owned();
                if let Some(version) = parse_version_file_name(&name) {
                    let (validator, schema) = compile_with_source(&file.path())?;
                    payloads.insert((event_type.clone(), version), validator);
                    fields.insert((event_type.clone(), version), fields_of(&schema));
                    raw_fields.insert((event_type.clone(), version), fields_of(&schema));
                    let decl = parse_declaration(&schema).map_err(|e| {
                        ContractLoadError::BadSchema { path: file.path(), message: e.to_string() }
                    })?;
                    if let Some(decl) = decl {
                        decls.insert((event_type.clone(), version), decl);
                    }
                } else if let Some(version) = parse_transforms_file_name(&name) {
                    let path = file.path();
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| ContractLoadError::Io { path: path.clone(), source })?;
                    let rules = RuleSet::parse(&path, &text, &mut reference)?;
                    transforms.insert((event_type.clone(), version), (rules, path));
                }
            }
        }
        let mut rule_sets = HashMap::new();
        for (key, (rules, path)) in transforms {
            let Some(contract_fields) = fields.get(&key) else {
                return Err(ContractLoadError::BadSchema {
                    path,
                    message: format!("transforms for {} v{}, which has no contract", key.0, key.1),
                });
            };
            // The typed columns and the state hold the fields as transformed.
            let output = rules.output_fields(contract_fields);
            fields.insert(key.clone(), output);
            rule_sets.insert(key, rules);
        }
        let mut contracts = Contracts {
            envelope,
            payloads,
            fields,
            raw_fields,
            decls,
            entities: Entities::default(),
            transforms: rule_sets,
            postgres_tables: reference
                .loaded
                .into_iter()
                .filter(|(name, t)| name.starts_with("postgres:") && t.columns.is_empty())
                .map(|(name, _)| name)
                .collect(),
            limits,
        };
        // Each event type's latest version says which entity it folds into.
        let mut latest: BTreeMap<String, (i32, EntityDecl)> = BTreeMap::new();
        for ((event_type, version), decl) in &contracts.decls {
            let newer = latest.get(event_type).is_none_or(|(v, _)| v < version);
            if newer {
                latest.insert(event_type.clone(), (*version, decl.clone()));
            }
        }
        let latest = latest.into_iter().map(|(t, (_, d))| (t, d)).collect();
        contracts.entities =
            Entities::from_declarations(&latest, &contracts.fields_by_type()).map_err(|e| {
                ContractLoadError::BadSchema { path: dir.to_path_buf(), message: e.to_string() }
            })?;
        Ok(contracts)
    }
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, ContractLoadError> {
    let io = |source| ContractLoadError::Io { path: dir.to_path_buf(), source };
    let mut entries =
        std::fs::read_dir(dir).map_err(io)?.collect::<Result<Vec<_>, _>>().map_err(io)?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

fn compile(path: &Path) -> Result<jsonschema::Validator, ContractLoadError> {
    compile_with_source(path).map(|(validator, _)| validator)
}

/// The compiled schema and the JSON it was compiled from.
fn compile_with_source(path: &Path) -> Result<(jsonschema::Validator, Value), ContractLoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ContractLoadError::Io { path: path.into(), source })?;
    let bad = |message: String| ContractLoadError::BadSchema { path: path.into(), message };
    let schema: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| bad(e.to_string()))?;
    Ok((validator, schema))
}

/// `v3.schema.json` -> 3.
pub fn parse_version_file_name(name: &str) -> Option<i32> {
    name.strip_prefix('v')?.strip_suffix(".schema.json")?.parse().ok().filter(|v| *v >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_file_names() {
        assert_eq!(parse_version_file_name("v2.schema.json"), Some(2));
        assert_eq!(parse_version_file_name("v0.schema.json"), None);
        assert_eq!(parse_version_file_name("readme.md"), None);
    }
}
