//! Which Kafka headers an accepted event keeps: all of them, in order, as the JSON array
//! `[{"key", "value"}]` that the dead letters use too, up to `headers.max_bytes`; and
//! the value of `headers.correlation_header` in a column of its own.
//!
//! Headers are metadata of one delivery, not part of the event: they are left out of
//! the content hash, so a resend with other headers is still a duplicate, and the first
//! accepted copy's headers are the ones stored.

use serde_json::{json, Value};

/// A record's headers, as rdkafka gives them: name and value (`None`: a null value).
pub type RawHeaders = [(String, Option<Vec<u8>>)];

/// The key of the entry that says what did not fit.
pub const DROPPED_KEY: &str = "eventline.headers_dropped";

/// The longest correlation id kept; longer values are cut at a character boundary.
pub const MAX_CORRELATION_BYTES: usize = 256;

/// How headers are kept (`[headers]` in the settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// The keys and values of the kept headers add up to at most this many bytes.
    pub max_bytes: usize,
    /// The header whose value goes into `correlation_id` (`None`: no column).
    pub correlation_header: Option<String>,
}

impl From<&crate::settings::HeaderSettings> for HeaderRules {
    fn from(h: &crate::settings::HeaderSettings) -> Self {
        HeaderRules {
            max_bytes: h.max_bytes,
            correlation_header: Some(h.correlation_header.clone()).filter(|c| !c.is_empty()),
        }
    }
}

/// What an event keeps of its record's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeptHeaders {
    /// The JSON array, or `None` when the record had no headers.
    pub json: Option<String>,
    /// The first value of the correlation header, as text.
    pub correlation_id: Option<String>,
}

/// Text that `jsonb` and `text` columns take, by the rules of [`crate::storable`].
fn storable(bytes: &[u8]) -> String {
    crate::storable::from_bytes(bytes).into_owned()
}

/// Headers as the JSON array of `{key, value}` (every header, no bound): the form the
/// dead letters store.
pub fn headers_json(headers: &RawHeaders) -> Value {
    headers
        .iter()
        .map(|(k, v)| json!({"key": storable(k.as_bytes()), "value": v.as_deref().map(storable)}))
        .collect()
}

/// Attaches to `event` what it keeps of its record's headers.
pub fn attach(mut event: crate::record::Event, kept: KeptHeaders) -> crate::record::Event {
    event.headers = kept.json;
    event.correlation_id = kept.correlation_id;
    event
}

/// Keeps `headers` by `rules`: in order, while they fit; what does not fit is counted in
/// a last entry keyed [`DROPPED_KEY`], so a reader sees that something is missing.
pub fn keep(headers: &RawHeaders, rules: &HeaderRules) -> KeptHeaders {
    let correlation_id = rules.correlation_header.as_deref().and_then(|name| {
        let (_, value) = headers.iter().find(|(k, _)| k == name)?;
        let mut text = storable(value.as_deref()?);
        // Cut without a note: the id is matched by equality, and its first 256 bytes
        // still find it.
        let mut cut = MAX_CORRELATION_BYTES.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        Some(text)
    });
    if headers.is_empty() {
        return KeptHeaders { json: None, correlation_id };
    }
    let mut kept = Vec::new();
    let (mut used, mut dropped, mut dropped_bytes) = (0usize, 0usize, 0usize);
    for (key, value) in headers {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if dropped == 0 && used + size <= rules.max_bytes {
            used += size;
            kept.push(
                json!({"key": storable(key.as_bytes()), "value": value.as_deref().map(storable)}),
            );
        } else {
            dropped += 1;
            dropped_bytes += size;
        }
    }
    if dropped > 0 {
        kept.push(json!({
            "key": DROPPED_KEY,
            "value": format!("{dropped} header(s), {dropped_bytes} bytes, over headers.max_bytes = {}", rules.max_bytes),
        }));
    }
    KeptHeaders { json: Some(Value::Array(kept).to_string()), correlation_id }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(k: &str, v: &[u8]) -> (String, Option<Vec<u8>>) {
        (k.to_string(), Some(v.to_vec()))
    }

    fn rules(max_bytes: usize) -> HeaderRules {
        HeaderRules { max_bytes, correlation_header: Some("correlation_id".into()) }
    }

    #[test]
    fn headers_are_kept_in_order_with_the_correlation_id_apart() {
        let headers = [
            h("traceparent", b"00-abc-01"),
            h("correlation_id", b"req-42"),
            (String::from("empty"), None),
        ];
        let kept = keep(&headers, &rules(4096));
        assert_eq!(kept.correlation_id.as_deref(), Some("req-42"));
        let json: Value = serde_json::from_str(kept.json.as_deref().unwrap()).unwrap();
        assert_eq!(
            json,
            json!([
                {"key": "traceparent", "value": "00-abc-01"},
                {"key": "correlation_id", "value": "req-42"},
                {"key": "empty", "value": null},
            ])
        );
        assert_eq!(keep(&[], &rules(4096)), KeptHeaders::default());
    }

    #[test]
    fn what_does_not_fit_is_dropped_and_said() {
        let big = vec![b'x'; 5000];
        let headers = [h("a", b"1"), h("blob", &big), h("b", b"2")];
        let kept = keep(&headers, &rules(100));
        let json: Value = serde_json::from_str(kept.json.as_deref().unwrap()).unwrap();
        assert_eq!(json[0], json!({"key": "a", "value": "1"}));
        assert_eq!(json[1]["key"], DROPPED_KEY);
        assert!(
            json[1]["value"].as_str().unwrap().starts_with("2 header(s), 5006 bytes"),
            "{json}"
        );
        assert_eq!(json.as_array().unwrap().len(), 2);
    }

    #[test]
    fn values_that_postgres_cannot_store_are_made_storable_and_long_ids_cut() {
        let long = "é".repeat(200); // 400 bytes
        let headers = [h("bin", &[0xff, 0, b'a']), h("correlation_id", long.as_bytes())];
        let kept = keep(&headers, &rules(4096));
        assert!(kept.json.as_deref().unwrap().contains("\u{FFFD}\\\\u0000a"), "{:?}", kept.json);
        let id = kept.correlation_id.unwrap();
        assert_eq!(id.len(), MAX_CORRELATION_BYTES);
        assert!(id.chars().all(|c| c == 'é'));
        let off = HeaderRules { max_bytes: 4096, correlation_header: None };
        assert_eq!(keep(&headers, &off).correlation_id, None);
    }
}
