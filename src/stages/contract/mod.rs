//! Event contracts: the envelope and one JSON Schema per event type and version,
//! loaded from `contracts/` at start-up. [`Contracts::check`] turns raw bytes into an
//! [`Event`] or a [`Rejection`] that names the class, the JSON path and the rule.
//!
//! Pure logic: no Kafka, no database. The validator actor and the producer share it.

mod json_text;
mod load;

pub use json_text::{canonical_hash, first_nul, json_depth};
pub use load::{parse_version_file_name, ContractLoadError};

use crate::payload_fields::{FieldType, PayloadField};
use crate::projections::declaration::{Entities, EntityDecl};
use crate::record::{Coords, ErrorClass, Event};
use crate::stages::transform::RuleSet;
use crate::stages::typed_values::make_exact;
use chrono::{DateTime, Utc};
use serde_json::{Number, Value};
use std::collections::{BTreeMap, HashMap};

/// Why a record was rejected: its class and a human-readable reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The error class.
    pub class: ErrorClass,
    /// Which field, which rule, where.
    pub reason: String,
    /// The event type, when the envelope got that far.
    pub event_type: Option<String>,
    /// The schema version, when known.
    pub schema_version: Option<i32>,
}

impl Rejection {
    /// A rejection of `class` before the envelope was read (no event type or version).
    pub fn new(class: ErrorClass, reason: impl Into<String>) -> Self {
        Rejection { class, reason: reason.into(), event_type: None, schema_version: None }
    }
}

/// Limits applied before any parsing, so hostile input costs little.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Larger records are `oversized`.
    pub max_record_bytes: usize,
    /// Deeper JSON is `too_deep`.
    pub max_json_depth: usize,
}

impl From<&crate::settings::Settings> for Limits {
    fn from(s: &crate::settings::Settings) -> Self {
        Limits {
            max_record_bytes: s.pipeline.max_record_bytes,
            max_json_depth: s.pipeline.max_json_depth,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_record_bytes: 1_000_000, max_json_depth: 32 }
    }
}

/// The loaded envelope schema and payload schemas.
pub struct Contracts {
    envelope: jsonschema::Validator,
    payloads: HashMap<(String, i32), jsonschema::Validator>,
    fields: HashMap<(String, i32), Vec<PayloadField>>,
    /// Each contract's own typed fields (before transforms), made exact on every event.
    raw_fields: HashMap<(String, i32), Vec<PayloadField>>,
    /// Each contract's `x-entity` declaration.
    decls: HashMap<(String, i32), EntityDecl>,
    entities: Entities,
    /// Each contract's transforms.
    transforms: HashMap<(String, i32), RuleSet>,
    /// Postgres reference tables the transforms name and nobody has read yet.
    postgres_tables: Vec<String>,
    limits: Limits,
}

impl std::fmt::Debug for Contracts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.payloads.keys().collect();
        keys.sort();
        f.debug_struct("Contracts").field("payloads", &keys).finish()
    }
}

impl Contracts {
    /// Postgres reference tables the transforms name that were not given to
    /// [`Self::load_with`]: read them and load again.
    pub fn postgres_tables(&self) -> &[String] {
        &self.postgres_tables
    }

    /// Applies the event's transforms (after [`Self::check`]): the normalised fields
    /// go to [`Event::normalized`] when a rule changed them, and the entity key is read
    /// from them. A failing rule is a rejection of class `transform_failed`.
    pub fn transform(&self, mut event: Event) -> Result<Event, Rejection> {
        let key = (event.event_type.clone(), event.schema_version);
        let Some(rules) = self.transforms.get(&key) else { return Ok(event) };
        let reject = |reason: String| Rejection {
            class: ErrorClass::TransformFailed,
            reason,
            event_type: Some(key.0.clone()),
            schema_version: Some(key.1),
        };
        let mut fields: serde_json::Map<String, Value> = serde_json::from_str(&event.payload)
            .map_err(|e| reject(format!("payload is not an object: {e}")))?;
        if rules.apply(&mut fields).map_err(|e| reject(e.to_string()))? {
            let mut fields = Value::Object(fields);
            if let Some(output) = self.fields.get(&key) {
                make_exact(&mut fields, output)
                    .map_err(|why| reject(format!("after the transforms, {why}")))?;
            }
            if let Some(pointer) = first_nul(&fields, &mut String::new()) {
                return Err(reject(format!(
                    "transformed field {pointer} contains a NUL character (U+0000)"
                )));
            }
            if let Some(decl) = self.decls.get(&key) {
                event.entity_key = key_text(&fields[&decl.key]);
                if let Some(why) = entity_key_problem(event.entity_key.as_deref(), &decl.key) {
                    return Err(reject(format!("after the transforms, {why}")));
                }
            }
            event.normalized = Some(fields.to_string());
        }
        Ok(event)
    }

    /// The entities the contracts declare (`x-entity`).
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// Each event type's payload fields over all its versions, by name: a field two
    /// versions type differently gets the type both fit in ([`FieldType::widen`]).
    pub fn fields_by_type(&self) -> BTreeMap<String, Vec<PayloadField>> {
        let mut by_type: BTreeMap<String, BTreeMap<String, FieldType>> = BTreeMap::new();
        for ((event_type, _), fields) in &self.fields {
            let known = by_type.entry(event_type.clone()).or_default();
            for field in fields {
                known
                    .entry(field.name.clone())
                    .and_modify(|t| *t = t.widen(field.field_type))
                    .or_insert(field.field_type);
            }
        }
        by_type
            .into_iter()
            .map(|(event_type, fields)| {
                let fields = fields
                    .into_iter()
                    .map(|(name, field_type)| PayloadField { name, field_type })
                    .collect();
                (event_type, fields)
            })
            .collect()
    }

    /// The (event_type, version) pairs known, sorted.
    pub fn known(&self) -> Vec<(String, i32)> {
        let mut keys: Vec<_> = self.payloads.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The contracts shipped in the repository's `contracts/`, with default limits: the
    /// one loader the unit tests share.
    #[cfg(test)]
    pub fn shipped() -> Contracts {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts");
        Contracts::load(&dir, Limits::default()).expect("the shipped contracts load")
    }

    /// Checks raw record bytes; `coords` and `kafka_timestamp_ms` go into the event.
    pub fn check(
        &self,
        value: Option<&[u8]>,
        coords: Coords,
        kafka_timestamp_ms: Option<i64>,
    ) -> Result<Event, Rejection> {
        let bytes = value.ok_or_else(|| {
            Rejection::new(ErrorClass::Tombstone, "record value is null (tombstone)")
        })?;
        let doc = self.parse(bytes)?;
        self.check_value(doc, coords, kafka_timestamp_ms)
    }

    /// Byte-level checks and JSON parsing.
    fn parse(&self, bytes: &[u8]) -> Result<Value, Rejection> {
        if bytes.len() > self.limits.max_record_bytes {
            return Err(Rejection::new(
                ErrorClass::Oversized,
                format!(
                    "record is {} bytes, limit is {} (pipeline.max_record_bytes)",
                    bytes.len(),
                    self.limits.max_record_bytes
                ),
            ));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| {
            Rejection::new(
                ErrorClass::NotUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        let depth = json_depth(text);
        if depth > self.limits.max_json_depth {
            return Err(Rejection::new(
                ErrorClass::TooDeep,
                format!(
                    "JSON nests {depth} levels, limit is {} (pipeline.max_json_depth)",
                    self.limits.max_json_depth
                ),
            ));
        }
        serde_json::from_str(text)
            .map_err(|e| Rejection::new(ErrorClass::NotJson, format!("not JSON: {e}")))
    }

    /// Envelope and payload contract checks on parsed JSON.
    pub fn check_value(
        &self,
        doc: Value,
        coords: Coords,
        kafka_timestamp_ms: Option<i64>,
    ) -> Result<Event, Rejection> {
        if let Some(reason) = first_error(&self.envelope, &doc, "") {
            return Err(Rejection::new(ErrorClass::BadEnvelope, reason));
        }
        let event_type = doc["event_type"].as_str().unwrap_or_default().to_string();
        let version = schema_version(&doc).map_err(|why| {
            let mut r = Rejection::new(ErrorClass::BadEnvelope, why.to_string());
            r.event_type = Some(event_type.clone());
            r
        })?;
        let reject = |class, reason: String| Rejection {
            class,
            reason,
            event_type: Some(event_type.clone()),
            schema_version: Some(version),
        };
        let Some(contract) = self.payloads.get(&(event_type.clone(), version)) else {
            return Err(if self.payloads.keys().any(|(t, _)| *t == event_type) {
                reject(
                    ErrorClass::UnknownSchemaVersion,
                    format!("/schema_version: no contract for {event_type} v{version}"),
                )
            } else {
                reject(
                    ErrorClass::UnknownEventType,
                    format!("/event_type: no contract for event type '{event_type}'"),
                )
            });
        };
        if let Some(reason) = first_error(contract, &doc["payload"], "/payload") {
            return Err(reject(ErrorClass::ContractViolation, reason));
        }
        // Checked here, so the common case never reaches a sink that would fail on it.
        if let Some(pointer) = first_nul(&doc, &mut String::new()) {
            let reason = format!(
                "{pointer}: text contains a NUL character (U+0000), which PostgreSQL cannot store"
            );
            return Err(reject(ErrorClass::UnstorableText, reason));
        }
        let event_id = doc["event_id"].as_str().and_then(|s| uuid::Uuid::parse_str(s).ok());
        let occurred_at =
            doc["timestamp"].as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
        // The envelope schema already checked both formats; this guards a laxer checker.
        let (Some(event_id), Some(occurred_at)) = (event_id, occurred_at) else {
            return Err(reject(
                ErrorClass::BadEnvelope,
                "/event_id or /timestamp: unparsable".to_string(),
            ));
        };
        let mut doc = doc;
        if let Some(fields) = self.raw_fields.get(&(event_type.clone(), version)) {
            make_exact(&mut doc["payload"], fields)
                .map_err(|why| reject(ErrorClass::ContractViolation, why.to_string()))?;
        }
        // An invalidation is the same event with `is_valid: false`: the flag is left out
        // of the content hash, so it matches the event it takes back (and an explicit
        // `true` hashes like an absent flag).
        let is_valid = doc
            .as_object_mut()
            .and_then(|fields| fields.remove("is_valid"))
            .and_then(|flag| flag.as_bool())
            .unwrap_or(true);
        let payload_hash = canonical_hash(&doc);
        let decl = self.decls.get(&(event_type.clone(), version));
        let entity_key = decl.and_then(|d| key_text(&doc["payload"][&d.key]));
        if let Some(why) = decl.and_then(|d| entity_key_problem(entity_key.as_deref(), &d.key)) {
            return Err(reject(ErrorClass::ContractViolation, why));
        }
        Ok(Event {
            event_id,
            source: doc["source"].as_str().unwrap_or_default().to_string(),
            event_type,
            schema_version: version,
            occurred_at: occurred_at.with_timezone(&Utc),
            payload: serde_json::to_string(&doc["payload"].take()).unwrap_or_default(),
            payload_hash,
            coords,
            kafka_timestamp_ms,
            // Stamped by the validator when it has the receive time (stages::lateness::stamp_arrival).
            received_at_ms: 0,
            lateness_ms: 0,
            late: false,
            is_valid,
            // Attached by the validator from the record (stages::headers::attach).
            headers: None,
            correlation_id: None,
            normalized: None,
            entity_key,
        })
    }
}

/// `schema_version` as an exact integer from 1 to `i32::MAX` (absent: 1). JSON
/// Schema's `integer` also takes `2.0` and 2^32 + 1, which must not be read as another
/// version.
fn schema_version(doc: &Value) -> Result<i32, BadVersion> {
    let Some(value) = doc.get("schema_version") else { return Ok(1) };
    value
        .as_i64()
        .filter(|_| !value.as_number().is_some_and(Number::is_f64))
        .and_then(|v| i32::try_from(v).ok())
        .filter(|v| *v >= 1)
        .ok_or_else(|| BadVersion(value.clone()))
}

/// A `schema_version` that is not an exact version number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("/schema_version: {0} is not a version: an integer from 1 to 2147483647 written without a fraction")]
pub struct BadVersion(Value);

/// Why an entity key cannot be stored and indexed, as `/payload/{field}: ...`.
fn entity_key_problem(key: Option<&str>, field: &str) -> Option<String> {
    let why = crate::storable::key_problem(key?.as_bytes())?;
    Some(format!("/payload/{field}: the entity key {why}"))
}

/// An entity key as text: a string as it is, a number or boolean as written.
pub fn key_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        _ => None,
    }
}

/// The first violation as "`/json/path`: rule `keyword`: message".
fn first_error(validator: &jsonschema::Validator, doc: &Value, prefix: &str) -> Option<String> {
    // `is_valid` builds no error values: the common case, a valid event, costs a third.
    if validator.is_valid(doc) {
        return None;
    }
    let error = validator.iter_errors(doc).next()?;
    let path = format!("{prefix}{}", error.instance_path());
    let path = if path.is_empty() { "/".to_string() } else { path };
    Some(format!("{path}: rule '{}': {error}", error.kind().keyword()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn contracts() -> Contracts {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts");
        Contracts::load(&dir, Limits { max_record_bytes: 4096, max_json_depth: 8 }).unwrap()
    }

    fn coords() -> Coords {
        Coords { topic: "t".into(), partition: 0, offset: 7 }
    }

    fn account_created() -> Value {
        json!({
            "event_id": "4f5c3c1e-8a53-4c1e-9f2e-2d9b8c7a6b5d",
            "event_type": "account_created",
            "source": "crm",
            "timestamp": "2026-11-22T10:15:00+01:00",
            "payload": {"account_id": "acc_1234", "industry": "software", "region": "EMEA"}
        })
    }

    fn check(doc: &Value) -> Result<Event, Rejection> {
        contracts().check(Some(doc.to_string().as_bytes()), coords(), None)
    }

    #[test]
    fn accepts_a_valid_event_and_normalises_its_time_to_utc() {
        let event = check(&account_created()).unwrap();
        assert_eq!(event.event_type, "account_created");
        assert_eq!(event.schema_version, 1);
        assert_eq!(event.occurred_at.to_rfc3339(), "2026-11-22T09:15:00+00:00");
        assert!(event.payload.contains(r#""account_id":"acc_1234""#), "{}", event.payload);
    }

    #[test]
    fn knows_every_shipped_contract() {
        let known: Vec<String> =
            contracts().known().into_iter().map(|(t, v)| format!("{t}/v{v}")).collect();
        for t in [
            "account_created",
            "account_updated",
            "contact_created",
            "opportunity_created",
            "opportunity_stage_changed",
        ] {
            assert!(known.contains(&format!("{t}/v1")), "{t} missing from {known:?}");
        }
    }

    #[test]
    fn names_the_payload_path_and_rule() {
        let mut doc = account_created();
        doc["payload"]["employee_count"] = json!(-5);
        let r = check(&doc).unwrap_err();
        assert_eq!(r.class, ErrorClass::ContractViolation);
        assert!(r.reason.starts_with("/payload/employee_count: rule 'minimum'"), "{}", r.reason);
        assert_eq!(r.event_type.as_deref(), Some("account_created"));
    }

    #[test]
    fn names_a_missing_required_field() {
        let mut doc = account_created();
        doc["payload"].as_object_mut().unwrap().remove("industry");
        let r = check(&doc).unwrap_err();
        assert!(
            r.reason.contains("rule 'required'") && r.reason.contains("industry"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn rejects_a_timestamp_without_offset_and_a_bad_uuid() {
        let mut doc = account_created();
        doc["timestamp"] = json!("2026-11-22 10:15:00");
        let r = check(&doc).unwrap_err();
        assert_eq!(r.class, ErrorClass::BadEnvelope);
        assert!(r.reason.starts_with("/timestamp: rule 'format'"), "{}", r.reason);
        let mut doc = account_created();
        doc["event_id"] = json!("not-a-uuid");
        assert!(check(&doc).unwrap_err().reason.starts_with("/event_id"));
    }

    #[test]
    fn unknown_type_and_unknown_version_are_violations_of_their_own() {
        let mut doc = account_created();
        doc["event_type"] = json!("invoice_paid");
        assert_eq!(check(&doc).unwrap_err().class, ErrorClass::UnknownEventType);
        let mut doc = account_created();
        doc["schema_version"] = json!(9);
        assert_eq!(check(&doc).unwrap_err().class, ErrorClass::UnknownSchemaVersion);
    }

    #[test]
    fn each_kind_of_bad_bytes_has_its_class() {
        let c = contracts();
        let class = |v: Option<&[u8]>| c.check(v, coords(), None).unwrap_err().class;
        assert_eq!(class(None), ErrorClass::Tombstone);
        assert_eq!(class(Some(&[b'{', 0xff, b'}'])), ErrorClass::NotUtf8);
        assert_eq!(class(Some(b"{not json")), ErrorClass::NotJson);
        assert_eq!(class(Some("[".repeat(20).as_bytes())), ErrorClass::TooDeep);
        assert_eq!(class(Some(" ".repeat(5000).as_bytes())), ErrorClass::Oversized);
    }

    #[test]
    fn is_valid_false_is_the_same_event_flagged_and_anything_but_a_boolean_is_refused() {
        let original = check(&account_created()).unwrap();
        assert!(original.is_valid);
        let mut doc = account_created();
        doc["is_valid"] = json!(false);
        let invalidation = check(&doc).unwrap();
        assert!(!invalidation.is_valid);
        assert_eq!(invalidation.payload_hash, original.payload_hash);
        doc["is_valid"] = json!(true);
        assert_eq!(check(&doc).unwrap().payload_hash, original.payload_hash);
        doc["is_valid"] = json!("no");
        let r = check(&doc).unwrap_err();
        assert_eq!(r.class, ErrorClass::BadEnvelope);
        assert!(r.reason.starts_with("/is_valid: rule 'type'"), "{}", r.reason);
    }

    #[test]
    fn amounts_with_cents_pass_multiple_of_a_cent() {
        let mut doc = account_created();
        doc["event_type"] = json!("order_paid");
        for amount in [19.99, 0.07, 1234567.89, 100.0, 0.3] {
            doc["payload"] = json!({"order_id": "ord_1", "amount_paid": amount, "currency": "EUR"});
            let event = check(&doc).unwrap_or_else(|r| panic!("{amount}: {}", r.reason));
            assert_eq!(event.entity_key.as_deref(), Some("ord_1"));
        }
        doc["payload"]["amount_paid"] = json!(1.005);
        assert_eq!(check(&doc).unwrap_err().class, ErrorClass::ContractViolation);
    }

    #[test]
    fn a_version_must_be_an_exact_integer() {
        for version in [json!(2.0), json!(4294967297u64), json!(0), json!(-1)] {
            let mut doc = account_created();
            doc["schema_version"] = version.clone();
            let r = check(&doc).unwrap_err();
            assert_eq!(r.class, ErrorClass::BadEnvelope, "{version}: {}", r.reason);
            assert!(r.reason.starts_with("/schema_version: "), "{}", r.reason);
        }
    }

    #[test]
    fn integers_written_with_a_fraction_are_stored_as_integers_and_huge_ones_refused() {
        let mut doc = account_created();
        doc["payload"]["employee_count"] = serde_json::from_str("11.0").unwrap();
        let event = check(&doc).unwrap();
        assert!(event.payload.contains(r#""employee_count":11"#), "{}", event.payload);
        assert!(!event.payload.contains("11.0"), "{}", event.payload);
        doc["payload"]["employee_count"] = serde_json::from_str("1e19").unwrap();
        let r = check(&doc).unwrap_err();
        assert_eq!(r.class, ErrorClass::ContractViolation);
        assert!(r.reason.starts_with("/payload/employee_count: "), "{}", r.reason);
    }
}
