//! What a contract declares about current state: the entity its events belong to, the
//! payload field that keys it, and how fields fold (`x-entity` in the contract file):
//!
//! ```json
//! "x-entity": {"name": "order", "key": "order_id", "fold": {"amount_paid": "sum"}}
//! ```
//!
//! [`Entities::from_declarations`] merges every event type's declaration into one
//! [`Entity`] per name, with its state table's columns. Pure logic.

use crate::payload_fields::{FieldType, PayloadField};
use serde_json::Value;
use std::collections::BTreeMap;

/// How a field's values fold into the entity's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// The value of the latest event that has the field, by event time (ties: offset).
    Latest,
    /// The value of the earliest such event.
    First,
    /// The sum over the entity's events.
    Sum,
    /// The largest value.
    Max,
    /// The smallest value.
    Min,
    /// Not part of the state.
    Ignore,
}

impl Fold {
    fn parse(text: &str) -> Option<Fold> {
        Some(match text {
            "latest" => Fold::Latest,
            "first" => Fold::First,
            "sum" => Fold::Sum,
            "max" => Fold::Max,
            "min" => Fold::Min,
            "ignore" => Fold::Ignore,
            _ => return None,
        })
    }
}

/// One event type's `x-entity` declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityDecl {
    /// The entity's name (`account`): its state table is `{name}_states`.
    pub name: String,
    /// The payload field holding the entity's key.
    pub key: String,
    /// Folds other than `latest`, by field.
    pub folds: BTreeMap<String, Fold>,
}

/// Which part of an `x-entity` declaration is wrong (the caller adds the file).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclarationError {
    /// `name` or `key` is not a lower-case identifier.
    #[error("x-entity.{key}: '{value}' must match ^[a-z][a-z0-9_]{{0,62}}$")]
    BadName {
        /// `name` or `key`.
        key: &'static str,
        /// What was given.
        value: String,
    },
    /// `name` or `key` is absent.
    #[error("x-entity.{0}: missing (a string)")]
    Missing(&'static str),
    /// The key is not a property of the contract.
    #[error("x-entity.key: '{0}' is not a property of this contract")]
    KeyNotAProperty(String),
    /// The key is not required.
    #[error("x-entity.key: '{0}' must be required, or an event could have no entity")]
    KeyNotRequired(String),
    /// `fold` is not an object.
    #[error("x-entity.fold: must be an object of field: fold")]
    FoldNotAnObject,
    /// A fold that does not exist.
    #[error("x-entity.fold.{field}: {rule} is not one of latest, first, sum, max, min, ignore")]
    UnknownFold {
        /// The field.
        field: String,
        /// What was given.
        rule: Value,
    },
    /// A fold of a field the contract does not have.
    #[error("x-entity.fold.{0}: not a property of this contract")]
    FoldNotAProperty(String),
}

/// Why the event types of an entity cannot be merged into one state table.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntitiesError {
    /// Two event types fold a field differently.
    #[error("entity '{entity}': field '{field}' folds as {fold:?} in {event_type} but as {other:?} in {by}")]
    FoldsDisagree {
        /// The entity.
        entity: String,
        /// The field.
        field: String,
        /// The fold `event_type` declares.
        fold: Fold,
        /// The event type.
        event_type: String,
        /// The fold `by` declares.
        other: Fold,
        /// The other event type.
        by: String,
    },
    /// Two event types key the entity by different fields.
    #[error("entity '{entity}': {event_type} keys it by '{key}' but {first_type} by '{first_key}'; every event type of an entity names its key alike")]
    KeysDisagree {
        /// The entity.
        entity: String,
        /// The event type.
        event_type: String,
        /// Its key.
        key: String,
        /// The event type seen first.
        first_type: String,
        /// Its key.
        first_key: String,
    },
    /// A fold the field's type cannot take (a sum of text).
    #[error("entity '{entity}': field '{field}' is {type_name} and cannot fold as {fold:?}")]
    CannotFold {
        /// The entity.
        entity: String,
        /// The field.
        field: String,
        /// Its type's name.
        type_name: String,
        /// The fold.
        fold: Fold,
    },
}

/// Reads the `x-entity` declaration of a contract, if it has one.
pub fn parse_declaration(schema: &Value) -> Result<Option<EntityDecl>, DeclarationError> {
    let Some(decl) = schema.get("x-entity") else { return Ok(None) };
    let text = |key: &'static str| match decl.get(key).and_then(Value::as_str) {
        Some(s) if valid_name(s) => Ok(s.to_string()),
        Some(s) => Err(DeclarationError::BadName { key, value: s.to_string() }),
        None => Err(DeclarationError::Missing(key)),
    };
    let (name, key) = (text("name")?, text("key")?);
    let properties = schema.get("properties").and_then(Value::as_object);
    let declared = |field: &str| properties.is_some_and(|p| p.contains_key(field));
    if !declared(&key) {
        return Err(DeclarationError::KeyNotAProperty(key));
    }
    let required = schema.get("required").and_then(Value::as_array);
    if !required.is_some_and(|r| r.iter().any(|f| f.as_str() == Some(&key))) {
        return Err(DeclarationError::KeyNotRequired(key));
    }
    let mut folds = BTreeMap::new();
    if let Some(rules) = decl.get("fold") {
        let Some(rules) = rules.as_object() else {
            return Err(DeclarationError::FoldNotAnObject);
        };
        for (field, rule) in rules {
            let fold = rule.as_str().and_then(Fold::parse).ok_or_else(|| {
                DeclarationError::UnknownFold { field: field.clone(), rule: rule.clone() }
            })?;
            if !declared(field) {
                return Err(DeclarationError::FoldNotAProperty(field.clone()));
            }
            folds.insert(field.clone(), fold);
        }
    }
    Ok(Some(EntityDecl { name, key, folds }))
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && s.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Bookkeeping columns of every state table; a payload field with one of these names is
/// stored as `payload_{name}`.
pub const STATE_COLUMNS: [&str; 4] =
    ["last_event_at", "last_event_id", "last_event_type", "event_count"];

/// One field of an entity's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StateField {
    /// The payload field.
    pub field: String,
    /// The state table's column.
    pub column: String,
    /// Its type.
    pub field_type: FieldType,
    /// How it folds.
    pub fold: Fold,
}

/// One entity type: where its events come from and what its state holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// The entity's name.
    pub name: String,
    /// The payload field holding its key (the same in every event type of it).
    pub key: String,
    /// The event types that fold into it.
    pub event_types: Vec<String>,
    /// The state's fields, by column name.
    pub fields: Vec<StateField>,
}

impl Entity {
    /// The current-state table.
    pub fn table(&self) -> String {
        format!("{}_states", self.name)
    }
}

/// Every entity the contracts declare.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entities(pub Vec<Entity>);

impl Entities {
    /// Merges each event type's declaration (its latest version's) with the fields of
    /// that type (over all its versions). Errors name the event types that disagree.
    pub fn from_declarations(
        decls: &BTreeMap<String, EntityDecl>,
        fields: &BTreeMap<String, Vec<PayloadField>>,
    ) -> Result<Entities, EntitiesError> {
        // A field's fold is declared once for the entity, in any of its event types;
        // two event types declaring it differently is an error.
        let mut fold_of: BTreeMap<(String, String), (Fold, String)> = BTreeMap::new();
        for (event_type, decl) in decls {
            for (field, fold) in &decl.folds {
                let slot = (decl.name.clone(), field.clone());
                match fold_of.get(&slot) {
                    Some((other, by)) if other != fold => {
                        return Err(EntitiesError::FoldsDisagree {
                            entity: decl.name.clone(),
                            field: field.clone(),
                            fold: *fold,
                            event_type: event_type.clone(),
                            other: *other,
                            by: by.clone(),
                        })
                    }
                    Some(_) => {}
                    None => {
                        fold_of.insert(slot, (*fold, event_type.clone()));
                    }
                }
            }
        }
        let mut entities: BTreeMap<String, Entity> = BTreeMap::new();
        for (event_type, decl) in decls {
            let entity = entities.entry(decl.name.clone()).or_insert_with(|| Entity {
                name: decl.name.clone(),
                key: decl.key.clone(),
                event_types: Vec::new(),
                fields: Vec::new(),
            });
            if entity.key != decl.key {
                return Err(EntitiesError::KeysDisagree {
                    entity: decl.name.clone(),
                    event_type: event_type.clone(),
                    key: decl.key.clone(),
                    first_type: entity.event_types[0].clone(),
                    first_key: entity.key.clone(),
                });
            }
            entity.event_types.push(event_type.clone());
            for field in fields.get(event_type).into_iter().flatten() {
                let slot = (decl.name.clone(), field.name.clone());
                let fold = fold_of.get(&slot).map_or(Fold::Latest, |(f, _)| *f);
                if field.name == decl.key || fold == Fold::Ignore {
                    continue;
                }
                match entity.fields.iter_mut().find(|f| f.field == field.name) {
                    Some(f) => f.field_type = f.field_type.widen(field.field_type),
                    None => entity.fields.push(StateField {
                        field: field.name.clone(),
                        column: state_column(&field.name, &decl.key),
                        field_type: field.field_type,
                        fold,
                    }),
                }
            }
        }
        for entity in entities.values_mut() {
            entity.fields.sort_by(|a, b| a.column.cmp(&b.column));
            for f in &entity.fields {
                let numeric = matches!(
                    f.field_type,
                    FieldType::Integer | FieldType::Double | FieldType::Decimal { .. }
                );
                let ordered = numeric
                    || matches!(
                        f.field_type,
                        FieldType::Text | FieldType::Timestamp | FieldType::Date
                    );
                if (f.fold == Fold::Sum && !numeric)
                    || (matches!(f.fold, Fold::Max | Fold::Min) && !ordered)
                {
                    return Err(EntitiesError::CannotFold {
                        entity: entity.name.clone(),
                        field: f.field.clone(),
                        type_name: f.field_type.name(),
                        fold: f.fold,
                    });
                }
            }
        }
        Ok(Entities(entities.into_values().collect()))
    }

    /// The entity an event type folds into.
    pub fn of_event_type(&self, event_type: &str) -> Option<&Entity> {
        self.0.iter().find(|e| e.event_types.iter().any(|t| t == event_type))
    }

    /// The entity named `name`.
    pub fn named(&self, name: &str) -> Option<&Entity> {
        self.0.iter().find(|e| e.name == name)
    }

    /// The entities' names, in declaration order.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(|e| e.name.clone()).collect()
    }

    /// True when no contract declares an entity.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn state_column(field: &str, key: &str) -> String {
    let clean: String =
        field.chars().map(|c| if c.is_alphanumeric() || c == '_' { c } else { '_' }).collect();
    if STATE_COLUMNS.contains(&clean.as_str()) || clean == key {
        format!("payload_{clean}")
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_contract(decl: Value) -> Value {
        json!({
            "required": ["order_id"],
            "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"},
                           "status": {"type": "string"}},
            "x-entity": decl
        })
    }

    #[test]
    fn a_declaration_names_entity_key_and_folds() {
        let decl = parse_declaration(&order_contract(
            json!({"name": "order", "key": "order_id", "fold": {"amount": "sum"}}),
        ))
        .unwrap()
        .unwrap();
        assert_eq!((decl.name.as_str(), decl.key.as_str()), ("order", "order_id"));
        assert_eq!(decl.folds.get("amount"), Some(&Fold::Sum));
        assert_eq!(parse_declaration(&json!({"properties": {}})).unwrap(), None);
    }

    #[test]
    fn a_wrong_declaration_says_which_part() {
        let err = |decl| parse_declaration(&order_contract(decl)).unwrap_err().to_string();
        assert!(err(json!({"name": "order"})).starts_with("x-entity.key: missing"));
        assert!(
            err(json!({"name": "Order", "key": "order_id"})).starts_with("x-entity.name: 'Order'")
        );
        assert!(err(json!({"name": "order", "key": "id"})).contains("'id' is not a property"));
        assert!(err(json!({"name": "order", "key": "amount"})).contains("must be required"));
        let e = err(json!({"name": "order", "key": "order_id", "fold": {"amount": "avg"}}));
        assert!(e.starts_with("x-entity.fold.amount: \"avg\" is not one of"), "{e}");
    }

    #[test]
    fn event_types_of_an_entity_merge_and_must_agree() {
        let field = |name: &str, field_type| PayloadField { name: name.into(), field_type };
        let mut fields = BTreeMap::new();
        fields.insert(
            "order_created".to_string(),
            vec![field("order_id", FieldType::Text), field("amount", FieldType::Integer)],
        );
        fields.insert(
            "order_paid".to_string(),
            vec![
                field("order_id", FieldType::Text),
                field("amount", FieldType::Double),
                field("event_count", FieldType::Integer),
            ],
        );
        let decl = |folds: &[(&str, Fold)]| EntityDecl {
            name: "order".into(),
            key: "order_id".into(),
            folds: folds.iter().map(|(f, k)| (f.to_string(), *k)).collect(),
        };
        let mut decls = BTreeMap::new();
        decls.insert("order_created".to_string(), decl(&[]));
        decls.insert("order_paid".to_string(), decl(&[]));
        let entities = Entities::from_declarations(&decls, &fields).unwrap();
        let order = entities.named("order").unwrap();
        assert_eq!(order.table(), "order_states");
        assert_eq!(order.event_types, vec!["order_created", "order_paid"]);
        let columns: Vec<(&str, FieldType)> =
            order.fields.iter().map(|f| (f.column.as_str(), f.field_type)).collect();
        assert_eq!(
            columns,
            vec![("amount", FieldType::Double), ("payload_event_count", FieldType::Integer)]
        );

        decls.insert("order_paid".to_string(), decl(&[("amount", Fold::Sum)]));
        let summed = Entities::from_declarations(&decls, &fields).unwrap();
        assert_eq!(summed.named("order").unwrap().fields[0].fold, Fold::Sum);
        decls.insert("order_created".to_string(), decl(&[("amount", Fold::Max)]));
        let e = Entities::from_declarations(&decls, &fields).unwrap_err().to_string();
        assert!(e.contains("field 'amount' folds as"), "{e}");
        decls.insert("order_created".to_string(), decl(&[]));
        let mut other_key = decl(&[]);
        other_key.key = "id".into();
        decls.insert("order_paid".to_string(), other_key);
        assert!(Entities::from_declarations(&decls, &fields)
            .unwrap_err()
            .to_string()
            .contains("keys it by 'id'"));
    }
}
