//! Rules over JSON text and values that the contract check applies before and after
//! the schema: nesting depth counted without parsing, the first NUL character with its
//! pointer, and the canonical hash that tells a resend from a conflicting version.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The JSON pointer of the first string (value or key) holding a NUL character.
pub fn first_nul(value: &Value, at: &mut String) -> Option<String> {
    let found = match value {
        Value::String(s) => s.contains('\0').then(|| at.clone()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nested(at, &i.to_string(), |at| first_nul(item, at))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| match key.contains('\0') {
            true => Some(format!("{at}/{}", key.replace('\0', "\\u0000"))),
            false => nested(at, key, |at| first_nul(item, at)),
        }),
        _ => None,
    };
    found.map(|p| if p.is_empty() { "/".to_string() } else { p })
}

/// Runs `f` with `at` extended by `/segment`, then restores `at`.
fn nested<T>(at: &mut String, segment: &str, f: impl FnOnce(&mut String) -> T) -> T {
    let len = at.len();
    at.push('/');
    at.push_str(&segment.replace('~', "~0").replace('/', "~1"));
    let result = f(at);
    at.truncate(len);
    result
}

/// Maximum nesting of objects and arrays, counted without parsing (strings skipped).
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// SHA-256 of the envelope with object keys sorted, so key order does not matter.
pub fn canonical_hash(doc: &Value) -> String {
    // The canonical text is built in one buffer and hashed once: hashing piece by piece
    // with a `String` per key and per scalar was most of a record's validation cost.
    let mut text = Vec::with_capacity(512);
    write_canonical(doc, &mut text);
    let mut hex = [0u8; 64];
    hex::encode_to_slice(Sha256::digest(&text), &mut hex).expect("32 bytes are 64 hex digits");
    std::str::from_utf8(&hex).expect("hex digits are ASCII").to_owned()
}

/// `{"key":value,...,}` with keys in byte order and a comma after every member: the
/// format stored hashes were made with, so it must not change.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (key, member) in members {
                write_json(key, out);
                out.push(b':');
                write_canonical(member, out);
                out.push(b',');
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                write_canonical(item, out);
                out.push(b',');
            }
            out.push(b']');
        }
        scalar => write_json(scalar, out),
    }
}

fn write_json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    serde_json::to_writer(out, value).expect("strings and JSON scalars always serialize");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_anywhere_in_a_string_is_found_with_its_pointer() {
        let doc = serde_json::json!({"payload": {"name": "Acme\u{0}Corp", "tags": ["a"]}});
        assert_eq!(first_nul(&doc, &mut String::new()).as_deref(), Some("/payload/name"));
        let doc = serde_json::json!({"payload": {"tags": ["ok", "sales\u{0}force"]}});
        assert_eq!(first_nul(&doc, &mut String::new()).as_deref(), Some("/payload/tags/1"));
        let doc = serde_json::json!({"a/b": {"k\u{0}": 1}});
        assert_eq!(first_nul(&doc, &mut String::new()).as_deref(), Some("/a~1b/k\\u0000"));
        assert_eq!(first_nul(&serde_json::json!({"name": "Acme Corp"}), &mut String::new()), None);
    }

    #[test]
    fn depth_ignores_brackets_inside_strings() {
        assert_eq!(json_depth(r#"{"a":"[[[[{{{{\"]]"}"#), 1);
        assert_eq!(json_depth(r#"{"a":[{"b":[]}]}"#), 4);
    }

    #[test]
    fn hash_ignores_key_order_but_not_content() {
        let a: Value = serde_json::from_str(r#"{"x":1,"y":{"b":2,"a":1}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"y":{"a":1,"b":2},"x":1}"#).unwrap();
        let c: Value = serde_json::from_str(r#"{"y":{"a":1,"b":3},"x":1}"#).unwrap();
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&c));
    }

    #[test]
    fn hash_format_is_the_one_stored_hashes_were_made_with() {
        // sha256 of `{"a":[1,"x",null,true,],"b":{"c":2.5,},}`: changing the canonical
        // text would make every replayed event look like a conflicting resend.
        let doc: Value = serde_json::from_str(r#"{"b":{"c":2.5},"a":[1,"x",null,true]}"#).unwrap();
        assert_eq!(
            canonical_hash(&doc),
            "eaac541412626ffd6eb3d8f68856d6d2fa70680ea54fe2b13c19778722b80edc"
        );
    }
}
