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

mod errors;
mod reference;
mod rule;

pub use errors::{
    ReferenceError, RuleError, RuleFailure, RuleProblem, TransformFailed, TransformLoadError,
};
pub use reference::{FolderTables, ReferenceSource, ReferenceTable};
pub use rule::{Case, Operation, Otherwise, Rule};

use crate::payload_fields::{FieldType, PayloadField};
use rule::{json_type, rule_of, RuleSpec};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    rule: Vec<toml::Spanned<RuleSpec>>,
}

/// The rules of one event type and version.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// In order.
    pub rules: Vec<Rule>,
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

/// `v3.transforms.toml` -> 3.
pub fn parse_transforms_file_name(name: &str) -> Option<i32> {
    name.strip_prefix('v')?.strip_suffix(".transforms.toml")?.parse().ok().filter(|v| *v >= 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::Arc;

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
