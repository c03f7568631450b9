//! The lake's typed payload columns: each event type's payload fields as Parquet
//! columns of the type its contract gives them, after the envelope columns, so DuckDB,
//! Spark or Trino read `region` or `amount` without parsing JSON. The raw payload stays
//! in the `payload` column.
//!
//! A file holds its own event type's columns only (a Hive folder holds one event type);
//! the Delta table's schema is the union over every contract, so a reader of the table
//! sees the columns of other event types as nulls, and a column a newer contract adds is
//! null in older files (DuckDB's `union_by_name` reads the files the same way). A column
//! has one type in the whole table: two contracts that type a field differently share
//! the type both fit in ([`FieldType::widen`]). A payload field named like an envelope
//! column is stored as `payload_{name}`.

use crate::payload_fields::{FieldType, PayloadField};
use crate::record::Event;
use crate::sinks::lake::schemas::lake_schema;
use crate::stages::contract::Contracts;
use arrow::array::{
    ArrayRef, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Names a payload column may not take: the envelope's and the Hive partitions'.
const RESERVED: [&str; 4] = ["event_type", "year", "month", "day"];

/// One typed column of an event type.
#[derive(Debug, Clone, PartialEq)]
pub struct PayloadColumn {
    /// The payload field it is read from.
    pub field: String,
    /// The column's name.
    pub column: String,
    /// Its type, the same in every event type that has it.
    pub field_type: FieldType,
}

/// Every event type's typed columns and file schema.
#[derive(Debug, Default)]
pub struct PayloadColumns {
    by_type: HashMap<String, (Vec<PayloadColumn>, SchemaRef)>,
    /// The union, in column-name order: the columns the events table needs.
    table: Vec<PayloadColumn>,
}

/// The Arrow type of a field type.
pub fn arrow_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::Text | FieldType::Json => DataType::Utf8,
        FieldType::Integer => DataType::Int64,
        FieldType::Double => DataType::Float64,
        FieldType::Decimal { scale } => DataType::Decimal128(18, scale as i8),
        FieldType::Boolean => DataType::Boolean,
        FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        FieldType::Date => DataType::Date32,
    }
}

/// The column a payload field is stored in: its name, unless an envelope column has it
/// (then `payload_{name}`), with characters Delta refuses in a name replaced by `_`.
pub fn column_name(field: &str) -> String {
    let clean: String =
        field.chars().map(|c| if " ,;{}()\n\t=".contains(c) { '_' } else { c }).collect();
    let envelope = lake_schema();
    let taken = RESERVED.contains(&clean.as_str()) || envelope.field_with_name(&clean).is_ok();
    if taken {
        format!("payload_{clean}")
    } else {
        clean
    }
}

impl PayloadColumns {
    /// The columns of every contract loaded.
    pub fn from_contracts(contracts: &Contracts) -> Self {
        Self::from_fields(contracts.fields_by_type())
    }

    /// The columns of these event types' fields.
    pub fn from_fields(by_type: BTreeMap<String, Vec<PayloadField>>) -> Self {
        let mut types: BTreeMap<String, FieldType> = BTreeMap::new();
        for field in by_type.values().flatten() {
            types
                .entry(column_name(&field.name))
                .and_modify(|t| *t = t.widen(field.field_type))
                .or_insert(field.field_type);
        }
        let column = |field: &PayloadField| {
            let column = column_name(&field.name);
            PayloadColumn { field: field.name.clone(), field_type: types[&column], column }
        };
        let mut table: BTreeMap<String, PayloadColumn> = BTreeMap::new();
        let by_type = by_type
            .into_iter()
            .map(|(event_type, fields)| {
                let columns: Vec<PayloadColumn> = fields.iter().map(column).collect();
                for c in &columns {
                    table.entry(c.column.clone()).or_insert_with(|| c.clone());
                }
                let mut schema: Vec<Field> =
                    lake_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
                schema.extend(columns.iter().map(|c| c.arrow_field()));
                (event_type, (columns, Arc::new(Schema::new(schema))))
            })
            .collect();
        PayloadColumns { by_type, table: table.into_values().collect() }
    }

    /// The typed columns the events table needs, over every event type.
    pub fn table_columns(&self) -> &[PayloadColumn] {
        &self.table
    }

    /// The typed columns of one event type (none for a type without a contract).
    pub fn columns_of(&self, event_type: &str) -> &[PayloadColumn] {
        self.by_type.get(event_type).map(|(c, _)| c.as_slice()).unwrap_or_default()
    }

    /// The schema of a file of `event_type`: the envelope columns, then its typed ones.
    pub fn schema_of(&self, event_type: &str) -> SchemaRef {
        self.by_type.get(event_type).map(|(_, s)| s.clone()).unwrap_or_else(lake_schema)
    }

    /// The typed columns of `events`, all of `event_type`: each payload parsed once.
    /// A value that does not fit its column (a contract that changed since) is null; the
    /// `payload` column still holds it.
    pub fn arrays(&self, event_type: &str, events: &[&Event]) -> Vec<ArrayRef> {
        let columns = self.columns_of(event_type);
        if columns.is_empty() {
            return Vec::new();
        }
        let payloads: Vec<Map<String, Value>> =
            events.iter().map(|e| serde_json::from_str(e.fields()).unwrap_or_default()).collect();
        columns
            .iter()
            .map(|c| c.array(payloads.iter().map(|p| p.get(&c.field).filter(|v| !v.is_null()))))
            .collect()
    }
}

impl PayloadColumn {
    /// The column as an Arrow field (always nullable).
    pub fn arrow_field(&self) -> Field {
        Field::new(&self.column, arrow_type(self.field_type), true)
    }

    fn array<'a>(&self, values: impl ExactSizeIterator<Item = Option<&'a Value>>) -> ArrayRef {
        let n = values.len();
        match self.field_type {
            FieldType::Text => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                for v in values {
                    match v {
                        Some(Value::String(s)) => b.append_value(s),
                        Some(other) => b.append_value(other.to_string()),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            FieldType::Json => {
                let mut b = StringBuilder::with_capacity(n, n * 32);
                for v in values {
                    b.append_option(v.map(Value::to_string));
                }
                Arc::new(b.finish())
            }
            FieldType::Integer => {
                let mut b = Int64Builder::with_capacity(n);
                values.for_each(|v| b.append_option(v.and_then(Value::as_i64)));
                Arc::new(b.finish())
            }
            FieldType::Double => {
                let mut b = Float64Builder::with_capacity(n);
                values.for_each(|v| b.append_option(v.and_then(Value::as_f64)));
                Arc::new(b.finish())
            }
            FieldType::Decimal { scale } => {
                let mut b = Decimal128Builder::with_capacity(n);
                for v in values {
                    b.append_option(v.and_then(|v| decimal_units(v, scale)));
                }
                let typed = b.finish().with_precision_and_scale(18, scale as i8);
                Arc::new(typed.expect("precision 18 holds scales 1 to 9"))
            }
            FieldType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(n);
                values.for_each(|v| b.append_option(v.and_then(Value::as_bool)));
                Arc::new(b.finish())
            }
            FieldType::Timestamp => {
                let mut b = TimestampMicrosecondBuilder::with_capacity(n);
                for v in values {
                    let at = v
                        .and_then(Value::as_str)
                        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                        .map(|t| t.timestamp_micros());
                    b.append_option(at);
                }
                Arc::new(b.finish().with_timezone("UTC"))
            }
            FieldType::Date => {
                let mut b = Date32Builder::with_capacity(n);
                let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date");
                for v in values {
                    let day = v
                        .and_then(Value::as_str)
                        .and_then(|s| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                        .map(|d| (d - epoch).num_days() as i32);
                    b.append_option(day);
                }
                Arc::new(b.finish())
            }
        }
    }
}

/// A JSON number in units of 10^-scale (19.99 at scale 2 is 1999), when it fits the
/// column's 18 digits.
pub fn decimal_units(value: &Value, scale: u8) -> Option<i128> {
    let units = match value {
        Value::Number(n) if n.is_i64() => i128::from(n.as_i64()?) * 10i128.pow(scale.into()),
        Value::Number(n) => (n.as_f64()? * 10f64.powi(scale.into())).round() as i128,
        _ => return None,
    };
    (units.abs() < 10i128.pow(18)).then_some(units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Date32Array, Decimal128Array, StringArray};

    fn field(name: &str, field_type: FieldType) -> PayloadField {
        PayloadField { name: name.into(), field_type }
    }

    #[test]
    fn a_column_shared_by_two_event_types_has_one_type_and_envelope_names_are_prefixed() {
        let mut by_type = BTreeMap::new();
        by_type.insert(
            "order_paid".to_string(),
            vec![
                field("amount", FieldType::Decimal { scale: 2 }),
                field("source", FieldType::Text),
            ],
        );
        by_type.insert("refund".to_string(), vec![field("amount", FieldType::Integer)]);
        let columns = PayloadColumns::from_fields(by_type);
        let table: Vec<(&str, FieldType)> =
            columns.table_columns().iter().map(|c| (c.column.as_str(), c.field_type)).collect();
        assert_eq!(table, vec![("amount", FieldType::Double), ("payload_source", FieldType::Text)]);
        let schema = columns.schema_of("order_paid");
        assert_eq!(schema.fields().len(), lake_schema().fields().len() + 2);
        assert_eq!(schema.field_with_name("payload_source").unwrap().data_type(), &DataType::Utf8);
        assert_eq!(columns.schema_of("unknown"), lake_schema());
    }

    #[test]
    fn values_become_typed_and_a_value_that_does_not_fit_is_null() {
        let values = [
            serde_json::json!(19.99),
            serde_json::json!(7),
            serde_json::json!("x"),
            serde_json::json!(1e30),
        ];
        let column = PayloadColumn {
            field: "a".into(),
            column: "a".into(),
            field_type: FieldType::Decimal { scale: 2 },
        };
        let array = column.array(values.iter().map(Some));
        let decimals = array.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(decimals.value(0), 1999);
        assert_eq!(decimals.value(1), 700);
        assert!(decimals.is_null(2) && decimals.is_null(3));

        let column =
            PayloadColumn { field: "d".into(), column: "d".into(), field_type: FieldType::Date };
        let days = [serde_json::json!("1970-01-11"), serde_json::json!("no")];
        let array = column.array(days.iter().map(Some));
        let dates = array.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!((dates.value(0), dates.is_null(1)), (10, true));

        let column =
            PayloadColumn { field: "t".into(), column: "t".into(), field_type: FieldType::Text };
        let mixed = [serde_json::json!("s"), serde_json::json!(3)];
        let values: Vec<Option<&serde_json::Value>> =
            mixed.iter().map(Some).chain([None]).collect();
        let array = column.array(values.into_iter());
        let text = array.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((text.value(0), text.value(1), text.is_null(2)), ("s", "3", true));
    }

    #[test]
    fn names_delta_refuses_are_cleaned() {
        assert_eq!(column_name("first name"), "first_name");
        assert_eq!(column_name("offset"), "payload_offset");
        assert_eq!(column_name("year"), "payload_year");
        assert_eq!(column_name("region"), "region");
    }
}
