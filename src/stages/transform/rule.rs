//! One rule: its spec as the TOML file writes it, the operation it compiles to, and
//! how it applies to a payload.

use super::errors::{RuleError, RuleFailure, RuleProblem};
use super::reference::{ReferenceSource, ReferenceTable};
use crate::payload_fields::FieldType;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
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

pub(super) fn json_type(value: &Value) -> FieldType {
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
pub(super) fn rule_of(spec: RuleSpec, tables: &mut dyn ReferenceSource) -> Result<Rule, RuleError> {
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
    pub(super) fn apply(&self, payload: &mut Map<String, Value>) -> Result<(), RuleFailure> {
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
