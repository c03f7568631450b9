//! Secrets are never printed. Settings that hold one (a password in `postgres.url`, a
//! `kafka.client` key named like a secret, anything read from a `*_file` key) are
//! registered here when the settings load; every log line, error message, supervision
//! log entry and drill report passes through [`scrub`], and `eventline config` prints
//! [`Settings::redacted`](crate::settings::Settings::redacted).

use std::sync::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Whether a settings key names a secret: `sasl.password`, `ssl.key.password`,
/// `sasl.oauthbearer.client.secret`, `sasl.jaas.config`, a token, inline key material.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token", "jaas", "credential"].iter().any(|w| key.contains(w))
        || (key.contains("key") && key.ends_with(".pem"))
}

/// Remembers secret values, so that [`scrub`] removes them from any text.
pub fn register(values: impl IntoIterator<Item = String>) {
    let mut known = KNOWN.write().unwrap_or_else(|p| p.into_inner());
    for value in values {
        // Very short values would scrub ordinary words; they are still redacted where
        // they are printed as settings.
        if value.len() >= 4 && !known.contains(&value) {
            known.push(value);
        }
    }
    known.sort_by_key(|v| std::cmp::Reverse(v.len()));
}

/// `text` with every registered secret replaced by [`REDACTED`], and the password of any
/// URL in it too.
pub fn scrub(text: &str) -> String {
    let known = KNOWN.read().unwrap_or_else(|p| p.into_inner());
    let mut out = redact_urls(text);
    for secret in known.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// The password of a URL's user info (`scheme://user:password@host`) and a `password=`
/// query parameter replaced by [`REDACTED`], wherever such URLs occur in `text`.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end =
            tail.find(|c: char| c.is_whitespace() || c == '"' || c == '\'').unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        out.push_str(&redact_one_url(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

fn redact_one_url(authority_and_rest: &str) -> String {
    let mut url = authority_and_rest.to_string();
    // user:password@host -> user:[redacted]@host (the last '@' before the path ends it).
    let path_start = url.find('/').unwrap_or(url.len());
    if let Some(at) = url[..path_start].rfind('@') {
        if let Some(colon) = url[..at].find(':') {
            url.replace_range(colon + 1..at, REDACTED);
        }
    }
    // ?password=...&  or &password=...
    for marker in ["?password=", "&password=", "?sslpassword=", "&sslpassword="] {
        if let Some(start) = url.find(marker) {
            let from = start + marker.len();
            let to = url[from..].find('&').map_or(url.len(), |i| from + i);
            url.replace_range(from..to, REDACTED);
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_redacted_and_the_rest_kept() {
        assert_eq!(
            redact_urls("connecting to postgres://bob:s3cret@h:5432/db?sslmode=verify-full now"),
            "connecting to postgres://bob:[redacted]@h:5432/db?sslmode=verify-full now"
        );
        assert_eq!(redact_urls("postgres://bob@h/db"), "postgres://bob@h/db");
        assert_eq!(
            redact_urls("\"postgres://h/db?user=bob&password=s3cret&sslmode=require\""),
            "\"postgres://h/db?user=bob&password=[redacted]&sslmode=require\""
        );
        assert_eq!(redact_urls("p@ss: no url here"), "p@ss: no url here");
    }

    #[test]
    fn secret_keys_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "sasl.jaas.config",
            "ssl.key.pem",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["sasl.username", "ssl.key.location", "security.protocol", "ssl.ca.location"] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn registered_values_are_scrubbed_from_any_text() {
        register(["Hunter2-unit-test".to_string()]);
        assert_eq!(scrub("auth failed for Hunter2-unit-test!"), "auth failed for [redacted]!");
    }
}
