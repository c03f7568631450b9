//! Declarative transforms: per event type and contract version, a TOML file beside the
//! contract (`contracts/{event_type}/v{N}.transforms.toml`) lists rules applied in order
//! to a valid event's payload, after the contract check and before dedup. The result is
//! the event's normalised fields ([`crate::record::Event::normalized`]); the raw payload
//! is kept as it came.
//!
//! ```toml
//! [[rule]]
//! name = "industry: trim, lower case"
//! field = "industry"
//! trim = true
//! case = "lower"
//!
//! [[rule]]
//! name = "region: sales area"
//! field = "region"
//! map = { US = "AMER", UK = "EMEA" }
//! unmapped = "keep"          # keep (default) | null | fail
//!
//! [[rule]]
//! name = "country name"
//! field = "country_name"
//! lookup = { table = "countries.csv", key = "country", column = "name" }
//! missing = "null"           # null (default) | fail | keep
//! ```
//!
//! Other rules: `rename = "old"` with `to = "new"`; `default = VALUE` (set when the field
//! is absent or null); `template = "{first_name} {last_name}"` (a field derived from
//! others). Lookups read a CSV file of `contracts/_reference/` (first row: column names)
//! or, with `table = "postgres:SCHEMA.TABLE"`, a Postgres table read once at start.
//!
//! Pure logic apart from reading the files: a rule that fails on a record is an error
//! naming the rule, which the validator dead-letters.

use crate::payload_fields::{FieldType, PayloadField};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A transforms file or reference table could not be loaded: names the file and line.
#[derive(Debug, thiserror::Error)]
pub enum TransformLoadError {
    /// The file could not be read.
    #[error("transforms: cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid, or a rule is wrong.
    #[error("transforms: {path}, line {line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A reference table could not be read.
    #[error("transforms: reference table {table}: {message}")]
    Reference {
        /// The table.
        table: String,
        /// What is wrong.
        message: String,
    },
}

/// Why a rule of a transforms file is wrong.
#[derive(Debug, thiserror::Error)]
#[error("rule '{rule}': {problem}")]
pub struct RuleError {
    /// The rule's name.
    pub rule: String,
    /// What is wrong with it.
    pub problem: RuleProblem,
}

/// What is wrong with a rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleProblem {
    /// No operation key.
    #[error("no operation: one of trim/case, map, rename, default, template, lookup")]
    NoOperation,
    /// More than one operation key.
    #[error("more than one operation: one rule does one of trim/case, map, rename, default, template, lookup")]
    ManyOperations,
    /// `rename` without `to`.
    #[error("rename needs `to` (the new name)")]
    RenameNeedsTo,
    /// `rename` with `field`.
    #[error("rename takes `to`, not `field`")]
    RenameTakesTo,
    /// No `field`.
    #[error("missing `field` (the field it writes)")]
    MissingField,
    /// `unmapped` or `missing` of another value.
    #[error("{key} = '{value}': one of keep, null, fail")]
    Otherwise {
        /// `unmapped` or `missing`.
        key: &'static str,
        /// What was given.
        value: String,
    },
    /// A TOML value with no JSON form.
    #[error("{0}")]
    Value(#[from] serde_json::Error),
    /// A template that names no field.
    #[error("template '{0}' names no field ({{field}})")]
    EmptyTemplate(String),
    /// A lookup of a column the table lacks.
    #[error("table '{table}' has no column '{column}' (it has {has})")]
    NoColumn {
        /// The table.
        table: String,
        /// The column asked for.
        column: String,
        /// The columns it has, comma separated.
        has: String,
    },
    /// `case` of another value.
    #[error("case = '{0}': one of lower, upper, title")]
    Case(String),
    /// `type` of another value.
    #[error(
        "type = '{0}': one of string, integer, number, decimal2, boolean, date-time, date, json"
    )]
    Type(String),
    /// The lookup's table cannot be had.
    #[error(transparent)]
    Table(#[from] ReferenceError),
}

/// Why a reference table cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A path where a file name of `contracts/_reference/` belongs.
    #[error("table '{0}': a file name in contracts/_reference/")]
    NotAFileName(String),
    /// The CSV file cannot be read.
    #[error(transparent)]
    Unreadable(#[from] Box<TransformLoadError>),
    /// No table of that name.
    #[error("no table '{0}'")]
    Unknown(String),
}

/// Why a rule failed on a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RuleFailure {
    /// A strict map without the value.
    #[error("/payload/{field}: value '{value}' is not in the map")]
    NotInMap {
        /// The field.
        field: String,
        /// Its value.
        value: String,
    },
    /// A field the rule needs is absent.
    #[error("/payload/{field}: absent, the {needed_by} needs it")]
    Absent {
        /// The field.
        field: String,
        /// `template` or `lookup`.
        needed_by: &'static str,
    },
    /// A strict lookup without the row.
    #[error("/payload/{key}: '{value}' is not in {table}")]
    NotInTable {
        /// The key field.
        key: String,
        /// Its value.
        value: String,
        /// The table.
        table: String,
    },
}

/// A rule failed on a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("transform rule '{rule}': {message}")]
pub struct TransformFailed {
    /// The rule's name.
    pub rule: String,
    /// What went wrong.
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    name: String,
    field: Option<String>,
    trim: Option<bool>,
    case: Option<String>,
    map: Option<BTreeMap<String, toml::Value>>,
    unmapped: Option<String>,
    rename: Option<String>,
    to: Option<String>,
    default: Option<toml::Value>,
    template: Option<String>,
    lookup: Option<LookupSpec>,
    missing: Option<String>,
    #[serde(rename = "type")]
    field_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupSpec {
    table: String,
    key: String,
    column: String,
}

/// What to do when a value has no entry (`unmapped`, `missing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Otherwise {
    /// Leave the field as it is.
    Keep,
    /// Remove the field.
    Null,
    /// Fail the record (dead letter).
    Fail,
}

/// Letter case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// lower case
    Lower,
    /// UPPER CASE
    Upper,
    /// Title Case
    Title,
}

/// One rule.
#[derive(Debug, Clone)]
pub enum Operation {
    /// Trim and/or change the case of a text field.
    Text {
        /// Trim white space.
        trim: bool,
        /// Change the case.
        case: Option<Case>,
    },
    /// Replace a value by the map's.
    Map {
        /// Value -> replacement.
        map: HashMap<String, Value>,
        /// When the value is not in the map.
        unmapped: Otherwise,
    },
    /// Move a field to another name.
    Rename {
        /// The old name.
        from: String,
    },
    /// Set the field when it is absent or null.
    Default(Value),
    /// A text made of other fields: `{name}` is replaced by that field's value.
    Template {
        /// The template.
        template: String,
        /// When a field it names is absent.
        missing: Otherwise,
    },
    /// The value of `column` in the reference table's row keyed by the field `key`.
    Lookup {
        /// The table.
        table: Arc<ReferenceTable>,
        /// The payload field whose value is looked up.
        key: String,
        /// The column returned.
        column: usize,
        /// When the table has no such row.
        missing: Otherwise,
    },
}

/// A named rule on one field.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The name dead letters give.
    pub name: String,
    /// The field it writes.
    pub field: String,
    /// What it does.
    pub operation: Operation,
    /// The type of what it writes, when the rule says (`type = "integer"`).
    pub field_type: Option<FieldType>,
}

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

/// The rules of one event type and version.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// In order.
    pub rules: Vec<Rule>,
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

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

impl RuleSet {
    /// Parses a transforms file; errors name the file and line.
    pub fn parse(
        path: &Path,
        text: &str,
        tables: &mut dyn ReferenceSource,
    ) -> Result<RuleSet, TransformLoadError> {
        let invalid = |line: usize, message: String| TransformLoadError::Invalid {
            path: path.to_path_buf(),
            line,
            message,
        };
        let spec: FileSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map_or(1, |s| line_of(text, s.start));
            invalid(line, e.message().to_string())
        })?;
        let mut rules = Vec::new();
        for spanned in spec.rule {
            let line = line_of(text, spanned.span().start);
            let rule =
                rule_of(spanned.into_inner(), tables).map_err(|e| invalid(line, e.to_string()))?;
            rules.push(rule);
        }
        Ok(RuleSet { rules })
    }

    /// Applies every rule in order to `payload`; true when it changed.
    pub fn apply(&self, payload: &mut Map<String, Value>) -> Result<bool, TransformFailed> {
        let before = payload.clone();
        for rule in &self.rules {
            rule.apply(payload).map_err(|failure| TransformFailed {
                rule: rule.name.clone(),
                message: failure.to_string(),
            })?;
        }
        Ok(*payload != before)
    }

    /// The payload fields after the rules, from the contract's: renamed fields move,
    /// derived ones are added with the type their rule gives.
    pub fn output_fields(&self, contract: &[PayloadField]) -> Vec<PayloadField> {
        let mut fields: BTreeMap<String, FieldType> =
            contract.iter().map(|f| (f.name.clone(), f.field_type)).collect();
        for rule in &self.rules {
            let produced = match &rule.operation {
                Operation::Rename { from } => fields.remove(from).or(Some(FieldType::Json)),
                Operation::Default(value) => Some(json_type(value)),
                Operation::Map { map, .. } => {
                    let types: Vec<FieldType> = map.values().map(json_type).collect();
                    let base = fields.get(&rule.field).copied();
                    types.into_iter().chain(base).reduce(FieldType::widen)
                }
                Operation::Text { .. } | Operation::Template { .. } | Operation::Lookup { .. } => {
                    Some(FieldType::Text)
                }
            };
            if let Some(t) = rule.field_type.or(produced) {
                let t = match fields.get(&rule.field) {
                    Some(held) if !matches!(rule.operation, Operation::Rename { .. }) => {
                        held.widen(t)
                    }
                    _ => t,
                };
                fields.insert(rule.field.clone(), t);
            }
        }
        fields.into_iter().map(|(name, field_type)| PayloadField { name, field_type }).collect()
    }
}

fn parse_type(text: &str) -> Option<FieldType> {
    Some(match text {
        "string" => FieldType::Text,
        "integer" => FieldType::Integer,
        "number" => FieldType::Double,
        "decimal2" => FieldType::Decimal { scale: 2 },
        "boolean" => FieldType::Boolean,
        "date-time" => FieldType::Timestamp,
        "date" => FieldType::Date,
        "json" => FieldType::Json,
        _ => return None,
    })
}

fn json_type(value: &Value) -> FieldType {
    match value {
        Value::String(_) => FieldType::Text,
        Value::Number(n) if n.is_i64() || n.is_u64() => FieldType::Integer,
        Value::Number(_) => FieldType::Double,
        Value::Bool(_) => FieldType::Boolean,
        _ => FieldType::Json,
    }
}

fn otherwise(
    text: Option<&str>,
    default: Otherwise,
    key: &'static str,
) -> Result<Otherwise, RuleProblem> {
    match text {
        None => Ok(default),
        Some("keep") => Ok(Otherwise::Keep),
        Some("null") => Ok(Otherwise::Null),
        Some("fail") => Ok(Otherwise::Fail),
        Some(other) => Err(RuleProblem::Otherwise { key, value: other.to_string() }),
    }
}

/// A rule from its spec: exactly one operation, with the keys it needs.
fn rule_of(spec: RuleSpec, tables: &mut dyn ReferenceSource) -> Result<Rule, RuleError> {
    let name = spec.name.clone();
    let named = |problem: RuleProblem| RuleError { rule: name.clone(), problem };
    let operations = [
        spec.trim.is_some() || spec.case.is_some(),
        spec.map.is_some(),
        spec.rename.is_some(),
        spec.default.is_some(),
        spec.template.is_some(),
        spec.lookup.is_some(),
    ];
    match operations.iter().filter(|o| **o).count() {
        1 => {}
        0 => return Err(named(RuleProblem::NoOperation)),
        _ => return Err(named(RuleProblem::ManyOperations)),
    }
    let field = match (&spec.rename, &spec.to, &spec.field) {
        (Some(_), Some(to), None) => to.clone(),
        (Some(_), None, _) => return Err(named(RuleProblem::RenameNeedsTo)),
        (Some(_), Some(_), Some(_)) => return Err(named(RuleProblem::RenameTakesTo)),
        (None, _, Some(field)) => field.clone(),
        (None, _, None) => return Err(named(RuleProblem::MissingField)),
    };
    let operation = if let Some(from) = spec.rename {
        Operation::Rename { from }
    } else if let Some(map) = spec.map {
        let map = map
            .into_iter()
            .map(|(k, v)| serde_json::to_value(v).map(|v| (k, v)))
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| named(e.into()))?;
        let unmapped =
            otherwise(spec.unmapped.as_deref(), Otherwise::Keep, "unmapped").map_err(named)?;
        Operation::Map { map, unmapped }
    } else if let Some(default) = spec.default {
        Operation::Default(serde_json::to_value(default).map_err(|e| named(e.into()))?)
    } else if let Some(template) = spec.template {
        let missing =
            otherwise(spec.missing.as_deref(), Otherwise::Fail, "missing").map_err(named)?;
        if placeholders(&template).is_empty() {
            return Err(named(RuleProblem::EmptyTemplate(template)));
        }
        Operation::Template { template, missing }
    } else if let Some(lookup) = spec.lookup {
        let table = tables.table(&lookup.table).map_err(|e| named(e.into()))?;
        let column = if lookup.table.starts_with("postgres:") && table.columns.is_empty() {
            // Not read yet: the rules are parsed again once it is (at start).
            usize::MAX
        } else {
            table.columns.iter().position(|c| *c == lookup.column).ok_or_else(|| {
                named(RuleProblem::NoColumn {
                    table: lookup.table.clone(),
                    column: lookup.column.clone(),
                    has: table.columns.join(", "),
                })
            })?
        };
        let missing =
            otherwise(spec.missing.as_deref(), Otherwise::Null, "missing").map_err(named)?;
        Operation::Lookup { table, key: lookup.key, column, missing }
    } else {
        let case = match spec.case.as_deref() {
            None => None,
            Some("lower") => Some(Case::Lower),
            Some("upper") => Some(Case::Upper),
            Some("title") => Some(Case::Title),
            Some(other) => return Err(named(RuleProblem::Case(other.to_string()))),
        };
        Operation::Text { trim: spec.trim.unwrap_or(false), case }
    };
    let field_type = match spec.field_type.as_deref() {
        None => None,
        Some(text) => {
            Some(parse_type(text).ok_or_else(|| named(RuleProblem::Type(text.to_string())))?)
        }
    };
    Ok(Rule { name, field, operation, field_type })
}

/// The `{field}` names of a template.
fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else { break };
        names.push(&rest[start + 1..start + len]);
        rest = &rest[start + len + 1..];
    }
    names
}

fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl Rule {
    fn apply(&self, payload: &mut Map<String, Value>) -> Result<(), RuleFailure> {
        let field = &self.field;
        let present = payload.get(field).filter(|v| !v.is_null()).cloned();
        match &self.operation {
            Operation::Text { trim, case } => {
                if let Some(Value::String(s)) = present {
                    let s = if *trim { s.trim().to_string() } else { s };
                    let s = match case {
                        None => s,
                        Some(Case::Lower) => s.to_lowercase(),
                        Some(Case::Upper) => s.to_uppercase(),
                        Some(Case::Title) => title_case(&s),
                    };
                    payload.insert(field.clone(), Value::String(s));
                }
            }
            Operation::Map { map, unmapped } => {
                let Some(value) = present else { return Ok(()) };
                let key = text_of(&value).unwrap_or_default();
                match (map.get(&key), unmapped) {
                    (Some(to), _) => {
                        payload.insert(field.clone(), to.clone());
                    }
                    (None, Otherwise::Keep) => {}
                    (None, Otherwise::Null) => {
                        payload.remove(field);
                    }
                    (None, Otherwise::Fail) => {
                        return Err(RuleFailure::NotInMap { field: field.clone(), value: key })
                    }
                }
            }
            Operation::Rename { from } => {
                // `changes.name`: a field of an object field.
                let taken = match from.split_once('.') {
                    Some((parent, child)) => payload
                        .get_mut(parent)
                        .and_then(Value::as_object_mut)
                        .and_then(|object| object.remove(child)),
                    None => payload.remove(from),
                };
                if let Some(value) = taken {
                    payload.insert(field.clone(), value);
                }
            }
            Operation::Default(value) => {
                if present.is_none() {
                    payload.insert(field.clone(), value.clone());
                }
            }
            Operation::Template { template, missing } => {
                let mut out = String::new();
                let mut rest = template.as_str();
                while let Some(start) = rest.find('{') {
                    let Some(len) = rest[start..].find('}') else { break };
                    out.push_str(&rest[..start]);
                    let name = &rest[start + 1..start + len];
                    match payload.get(name).and_then(text_of) {
                        Some(v) => out.push_str(&v),
                        None => match missing {
                            Otherwise::Fail => {
                                return Err(RuleFailure::Absent {
                                    field: name.to_string(),
                                    needed_by: "template",
                                })
                            }
                            Otherwise::Null => {
                                payload.remove(field);
                                return Ok(());
                            }
                            Otherwise::Keep => return Ok(()),
                        },
                    }
                    rest = &rest[start + len + 1..];
                }
                out.push_str(rest);
                payload.insert(field.clone(), Value::String(out));
            }
            Operation::Lookup { table, key, column, missing } => {
                let Some(wanted) = payload.get(key).and_then(text_of) else {
                    return match missing {
                        Otherwise::Fail => {
                            Err(RuleFailure::Absent { field: key.clone(), needed_by: "lookup" })
                        }
                        _ => Ok(()),
                    };
                };
                match table.rows.get(&wanted).and_then(|row| row.get(*column)) {
                    Some(value) => {
                        payload.insert(field.clone(), Value::String(value.clone()));
                    }
                    None => match missing {
                        Otherwise::Keep => {}
                        Otherwise::Null => {
                            payload.remove(field);
                        }
                        Otherwise::Fail => {
                            return Err(RuleFailure::NotInTable {
                                key: key.clone(),
                                value: wanted,
                                table: table.name.clone(),
                            })
                        }
                    },
                }
            }
        }
        Ok(())
    }
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|word| {
            let mut chars = word.chars();
            match chars.next() {
                Some(first) => {
                    first.to_uppercase().chain(chars.flat_map(char::to_lowercase)).collect()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `v3.transforms.toml` -> 3.
pub fn parse_transforms_file_name(name: &str) -> Option<i32> {
    name.strip_prefix('v')?.strip_suffix(".transforms.toml")?.parse().ok().filter(|v| *v >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Tables(HashMap<String, Arc<ReferenceTable>>);

    impl ReferenceSource for Tables {
        fn table(&mut self, name: &str) -> Result<Arc<ReferenceTable>, ReferenceError> {
            self.0.get(name).cloned().ok_or_else(|| ReferenceError::Unknown(name.to_string()))
        }
    }

    fn countries() -> Tables {
        let mut rows = HashMap::new();
        rows.insert("DE".to_string(), vec!["DE".into(), "Germany".into(), "EMEA".into()]);
        let table = ReferenceTable {
            name: "countries.csv".into(),
            columns: vec!["code".into(), "name".into(), "area".into()],
            rows,
        };
        Tables([("countries.csv".to_string(), Arc::new(table))].into())
    }

    fn rules(text: &str) -> Result<RuleSet, TransformLoadError> {
        RuleSet::parse(Path::new("contracts/x/v1.transforms.toml"), text, &mut countries())
    }

    fn run(set: &RuleSet, payload: Value) -> Result<Value, TransformFailed> {
        let mut map = payload.as_object().unwrap().clone();
        set.apply(&mut map).map(|_| Value::Object(map))
    }

    const ACCOUNT: &str = r#"
[[rule]]
name = "industry"
field = "industry"
trim = true
case = "lower"

[[rule]]
name = "sales area"
field = "region"
map = { US = "AMER", UK = "EMEA" }

[[rule]]
name = "account_name is name"
rename = "account_name"
to = "name"

[[rule]]
name = "country default"
field = "country"
default = "DE"

[[rule]]
name = "label"
field = "label"
template = "{name} ({region})"

[[rule]]
name = "country name"
field = "country_name"
lookup = { table = "countries.csv", key = "country", column = "name" }
"#;

    #[test]
    fn rules_apply_in_order_and_keep_what_they_do_not_touch() {
        let set = rules(ACCOUNT).unwrap();
        let out = run(
            &set,
            json!({"industry": "  Healthcare ", "region": "US",
            "account_name": "Acme", "employee_count": 5}),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"industry": "healthcare", "region": "AMER", "name": "Acme", "country": "DE",
                   "label": "Acme (AMER)", "country_name": "Germany", "employee_count": 5})
        );
        // Unmapped values stay; a country the table lacks gives no name.
        let out =
            run(&set, json!({"industry": "x", "region": "Mars", "name": "B", "country": "FR"}))
                .unwrap();
        assert_eq!(out["region"], "Mars");
        assert!(out.get("country_name").is_none());
    }

    #[test]
    fn a_failing_rule_names_itself_and_the_field() {
        let set = rules("[[rule]]\nname = \"strict area\"\nfield = \"region\"\nmap = { US = \"AMER\" }\nunmapped = \"fail\"\n").unwrap();
        let e = run(&set, json!({"region": "Mars"})).unwrap_err();
        assert_eq!(e.rule, "strict area");
        assert_eq!(
            e.to_string(),
            "transform rule 'strict area': /payload/region: value 'Mars' is not in the map"
        );
        let set =
            rules("[[rule]]\nname = \"label\"\nfield = \"l\"\ntemplate = \"{a}-{b}\"\n").unwrap();
        assert!(run(&set, json!({"a": 1})).unwrap_err().message.contains("/payload/b: absent"));
        assert_eq!(run(&set, json!({"a": 1, "b": "x"})).unwrap()["l"], "1-x");
    }

    #[test]
    fn a_rename_lifts_a_field_out_of_an_object_with_the_type_it_declares() {
        let set = rules("[[rule]]\nname = \"n\"\nrename = \"changes.employee_count\"\nto = \"employee_count\"\ntype = \"integer\"\n").unwrap();
        let out = run(&set, json!({"changes": {"employee_count": 7, "x": 1}})).unwrap();
        assert_eq!(out, json!({"changes": {"x": 1}, "employee_count": 7}));
        let fields = set.output_fields(&[]);
        assert_eq!(
            fields,
            vec![PayloadField { name: "employee_count".into(), field_type: FieldType::Integer }]
        );
    }

    #[test]
    fn a_broken_file_names_the_line() {
        let e = rules("[[rule]]\nname = \"a\"\nfield = \"x\"\ncase = \"loud\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "transforms: contracts/x/v1.transforms.toml, line 1: rule 'a': case = 'loud': one of lower, upper, title");
        let e = rules("[[rule]]\nname = \"a\"\nfield = \"x\"\ntrim = true\n\n[[rule]]\nname = \"b\"\nfield = \"y\"\nmap = { A = 1 }\nmapp = 2\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "transforms: contracts/x/v1.transforms.toml, line 10: unknown field `mapp`"
            ),
            "{e}"
        );
        let e = rules("[[rule]]\nname = \"c\"\nfield = \"x\"\nlookup = { table = \"countries.csv\", key = \"k\", column = \"capital\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1: rule 'c': table 'countries.csv' has no column 'capital' (it has code, name, area)"), "{e}");
        let e = rules("[[rule]]\nname = \"d\"\nfield = \"x\"\ntrim = true\ndefault = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than one operation"), "{e}");
        let e = rules("[[rule\nname = 1").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn output_fields_follow_renames_and_derivations() {
        let set = rules(ACCOUNT).unwrap();
        let contract = vec![
            PayloadField { name: "account_name".into(), field_type: FieldType::Text },
            PayloadField { name: "employee_count".into(), field_type: FieldType::Integer },
        ];
        let names: Vec<(String, FieldType)> =
            set.output_fields(&contract).into_iter().map(|f| (f.name, f.field_type)).collect();
        assert_eq!(
            names,
            vec![
                ("country".into(), FieldType::Text),
                ("country_name".into(), FieldType::Text),
                ("employee_count".into(), FieldType::Integer),
                ("industry".into(), FieldType::Text),
                ("label".into(), FieldType::Text),
                ("name".into(), FieldType::Text),
                ("region".into(), FieldType::Text),
            ]
        );
        assert_eq!(parse_transforms_file_name("v2.transforms.toml"), Some(2));
    }
}
