//! Accepted values in the form the sinks store them. JSON Schema is looser than the
//! columns a contract's fields become: its `integer` accepts `1.0` and 2^70, its `date`
//! accepts year 0. A value the contract accepted but a sink cannot hold would fail the
//! write (a `::bigint` cast, a `date` out of range), so each typed field is made exact
//! here, once, before the event is hashed and stored:
//! - an integer written with a zero fraction (`1.0`) is the integer (`1`);
//! - an integer outside 64 bits, a decimal beyond its 18 digits, a date or time outside
//!   the years 1 to 9999 is a contract violation naming the field and the limit.
//!
//! Pure logic: JSON in, JSON out.

use crate::payload_fields::{FieldType, PayloadField};
use serde_json::{Number, Value};

/// Why a value its contract accepts cannot be stored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Inexact {
    /// An integer beyond 64 bits.
    #[error("{0} does not fit a 64-bit integer (at most 9223372036854775807)")]
    Integer(Number),
    /// A number beyond the digits of its decimal column.
    #[error("{value} does not fit decimal(18,{scale}) (less than {limit:.0} in magnitude)")]
    Decimal {
        /// The value.
        value: Number,
        /// Digits after the point.
        scale: u8,
        /// The bound.
        limit: f64,
    },
    /// A date or time outside the years every sink can store.
    #[error("'{0}' is outside the years 1 to 9999 that every sink can store")]
    Year(String),
}

/// The field a value no sink can store is in, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("/payload/{pointer}: {why}")]
pub struct InexactField {
    /// The field's name as a JSON pointer segment.
    pub pointer: String,
    /// Why.
    pub why: Inexact,
}

/// Makes each typed field of `payload` exact, or names the first field that no sink
/// can store.
pub fn make_exact(payload: &mut Value, fields: &[PayloadField]) -> Result<(), InexactField> {
    let Some(object) = payload.as_object_mut() else { return Ok(()) };
    for field in fields {
        let Some(value) = object.get_mut(&field.name) else { continue };
        exact(value, field.field_type)
            .map_err(|why| InexactField { pointer: pointer_segment(&field.name), why })?;
    }
    Ok(())
}

fn pointer_segment(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// 2^63 as a float: the first whole number a 64-bit integer cannot hold.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

fn exact(value: &mut Value, field_type: FieldType) -> Result<(), Inexact> {
    match (field_type, &*value) {
        (FieldType::Integer, Value::Number(n)) => {
            if n.is_i64() {
                return Ok(());
            }
            if n.is_u64() {
                return Err(Inexact::Integer(n.clone()));
            }
            let f = n.as_f64().unwrap_or(f64::NAN);
            if f.fract() != 0.0 {
                // JSON Schema's `integer` already refused it; nothing to make exact.
                return Ok(());
            }
            if !(-TWO_POW_63..TWO_POW_63).contains(&f) {
                return Err(Inexact::Integer(n.clone()));
            }
            *value = Value::Number(Number::from(f as i64));
            Ok(())
        }
        (FieldType::Decimal { scale }, Value::Number(n)) => {
            let limit = 10f64.powi(18 - i32::from(scale));
            match n.as_f64() {
                Some(f) if f.abs() >= limit => {
                    Err(Inexact::Decimal { value: n.clone(), scale, limit })
                }
                _ => Ok(()),
            }
        }
        (FieldType::Date, Value::String(s)) => {
            match chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                Ok(date) => year_in_range(chrono::Datelike::year(&date), s),
                // The contract's `format` decides what a date is; not ours to refuse.
                Err(_) => Ok(()),
            }
        }
        (FieldType::Timestamp, Value::String(s)) => match chrono::DateTime::parse_from_rfc3339(s) {
            Ok(t) => year_in_range(chrono::Datelike::year(&t.naive_utc()), s),
            Err(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

fn year_in_range(year: i32, text: &str) -> Result<(), Inexact> {
    if (1..=9999).contains(&year) {
        Ok(())
    } else {
        Err(Inexact::Year(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<PayloadField> {
        [
            ("count", FieldType::Integer),
            ("amount", FieldType::Decimal { scale: 2 }),
            ("day", FieldType::Date),
            ("at", FieldType::Timestamp),
        ]
        .into_iter()
        .map(|(name, field_type)| PayloadField { name: name.into(), field_type })
        .collect()
    }

    #[test]
    fn an_integer_written_with_a_zero_fraction_is_the_integer() {
        let mut payload: Value = serde_json::from_str(r#"{"count": 11.0, "other": 2.0}"#).unwrap();
        make_exact(&mut payload, &fields()).unwrap();
        assert_eq!(payload, json!({"count": 11, "other": 2.0}));
        assert_eq!(payload.to_string(), r#"{"count":11,"other":2.0}"#);
    }

    #[test]
    fn values_no_column_can_hold_are_violations_naming_the_field() {
        for (text, pointer) in [
            (r#"{"count": 9223372036854775808}"#, "/payload/count"),
            (r#"{"count": 1e30}"#, "/payload/count"),
            (r#"{"amount": 1e17}"#, "/payload/amount"),
            (r#"{"day": "0000-01-01"}"#, "/payload/day"),
            (r#"{"at": "0000-01-01T00:00:00Z"}"#, "/payload/at"),
        ] {
            let mut payload: Value = serde_json::from_str(text).unwrap();
            let why = make_exact(&mut payload, &fields()).unwrap_err().to_string();
            assert!(why.starts_with(pointer), "{text}: {why}");
        }
        let mut fine = json!({"count": -5, "amount": 19.99, "day": "2026-12-07", "at": "2026-12-07T10:00:00Z"});
        make_exact(&mut fine, &fields()).unwrap();
    }
}
