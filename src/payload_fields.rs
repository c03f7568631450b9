//! The typed fields a contract declares: the top-level `properties` of a payload schema,
//! each with the one storage type its JSON Schema implies. The lake's typed columns
//! and the current-state tables are built from these, so a field is typed once, where
//! its contract says so.
//!
//! Pure logic: JSON in, types out.

use serde_json::Value;

/// The storage type of a payload field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FieldType {
    /// `"type": "string"` (any format other than the two below).
    Text,
    /// `"type": "integer"`: 64-bit.
    Integer,
    /// `"type": "number"`.
    Double,
    /// `"type": "number"` with `"multipleOf"` a power of ten below one (0.01 is money):
    /// an exact decimal with that many digits after the point.
    Decimal {
        /// Digits after the point (1 to 9).
        scale: u8,
    },
    /// `"type": "boolean"`.
    Boolean,
    /// `"type": "string", "format": "date-time"`: an instant, stored in UTC.
    Timestamp,
    /// `"type": "string", "format": "date"`.
    Date,
    /// Objects, arrays, or a field whose type the schema leaves open: its JSON text.
    Json,
}

impl FieldType {
    /// The type both `self` and `other` fit in, when two contracts (two versions, or
    /// two event types sharing a column) type a field differently: integers widen to
    /// numbers, anything else mixed is kept as text (a JSON value's text).
    pub fn widen(self, other: FieldType) -> FieldType {
        use FieldType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Integer, Double) | (Double, Integer) => Double,
            (Decimal { .. } | Integer | Double, Decimal { .. } | Integer | Double) => Double,
            (Json, _) | (_, Json) => Json,
            _ => Text,
        }
    }

    /// The name a person reads in an error or in `eventline state`.
    pub fn name(self) -> String {
        match self {
            FieldType::Text => "string".into(),
            FieldType::Integer => "integer".into(),
            FieldType::Double => "double".into(),
            FieldType::Decimal { scale } => format!("decimal(18,{scale})"),
            FieldType::Boolean => "boolean".into(),
            FieldType::Timestamp => "timestamp".into(),
            FieldType::Date => "date".into(),
            FieldType::Json => "json".into(),
        }
    }
}

/// One top-level payload field of a contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadField {
    /// The property's name in the payload.
    pub name: String,
    /// Its storage type.
    pub field_type: FieldType,
}

/// The top-level fields a payload schema declares, sorted by name.
pub fn fields_of(schema: &Value) -> Vec<PayloadField> {
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut fields: Vec<PayloadField> = properties
        .iter()
        .map(|(name, property)| PayloadField { name: name.clone(), field_type: type_of(property) })
        .collect();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    fields
}

/// The storage type one property's schema implies.
pub fn type_of(property: &Value) -> FieldType {
    let types: Vec<&str> = match property.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        // `["string", "null"]`: a nullable string; every column is nullable anyway.
        Some(Value::Array(ts)) => {
            ts.iter().filter_map(Value::as_str).filter(|t| *t != "null").collect()
        }
        _ => enum_types(property),
    };
    let mut found: Option<FieldType> = None;
    for t in types {
        let this = match t {
            "string" => match property.get("format").and_then(Value::as_str) {
                Some("date-time") => FieldType::Timestamp,
                Some("date") => FieldType::Date,
                _ => FieldType::Text,
            },
            "integer" => FieldType::Integer,
            "number" => decimal_scale(property)
                .map(|scale| FieldType::Decimal { scale })
                .unwrap_or(FieldType::Double),
            "boolean" => FieldType::Boolean,
            _ => FieldType::Json,
        };
        found = Some(found.map_or(this, |f| f.widen(this)));
    }
    found.unwrap_or(FieldType::Json)
}

/// An `enum` without a `type`: strings when every value is one.
fn enum_types(property: &Value) -> Vec<&'static str> {
    match property.get("enum").and_then(Value::as_array) {
        Some(values) if !values.is_empty() && values.iter().all(Value::is_string) => vec!["string"],
        _ => Vec::new(),
    }
}

/// `multipleOf` 0.1, 0.01, ... 1e-9 -> its number of decimals.
fn decimal_scale(property: &Value) -> Option<u8> {
    let step = property.get("multipleOf")?.as_f64()?;
    (1..=9u8).find(|scale| (step - 10f64.powi(-i32::from(*scale))).abs() < 1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_json_schema_type_has_its_storage_type() {
        let schema = json!({"properties": {
            "name": {"type": "string"},
            "at": {"type": "string", "format": "date-time"},
            "day": {"type": "string", "format": "date"},
            "email": {"type": "string", "format": "email"},
            "count": {"type": "integer"},
            "ratio": {"type": "number"},
            "amount": {"type": "number", "multipleOf": 0.01},
            "flag": {"type": "boolean"},
            "tags": {"type": "array"},
            "maybe": {"type": ["integer", "null"]},
            "stage": {"enum": ["a", "b"]},
            "open": {}
        }});
        let types: Vec<(String, FieldType)> =
            fields_of(&schema).into_iter().map(|f| (f.name, f.field_type)).collect();
        use FieldType::*;
        assert_eq!(
            types,
            vec![
                ("amount".into(), Decimal { scale: 2 }),
                ("at".into(), Timestamp),
                ("count".into(), Integer),
                ("day".into(), Date),
                ("email".into(), Text),
                ("flag".into(), Boolean),
                ("maybe".into(), Integer),
                ("name".into(), Text),
                ("open".into(), Json),
                ("ratio".into(), Double),
                ("stage".into(), Text),
                ("tags".into(), Json),
            ]
        );
    }

    #[test]
    fn mixed_types_widen_to_one_both_fit_in() {
        use FieldType::*;
        assert_eq!(Integer.widen(Double), Double);
        assert_eq!(Decimal { scale: 2 }.widen(Integer), Double);
        assert_eq!(Decimal { scale: 2 }.widen(Decimal { scale: 2 }), Decimal { scale: 2 });
        assert_eq!(Text.widen(Integer), Text);
        assert_eq!(Timestamp.widen(Text), Text);
        assert_eq!(Boolean.widen(Json), Json);
        assert_eq!(type_of(&json!({"type": ["string", "integer"]})), Text);
    }
}
