//! `[kafka.client]`: any librdkafka property for every Kafka client eventline makes (the
//! consumer, the DLQ producer, `eventline produce`, the drills), so secured clusters
//! (SASL, TLS, managed Kafka) are reachable. Keys are librdkafka's (`security.protocol`,
//! `sasl.mechanisms`, ...); `_` stands for `.` so they can come from environment
//! variables (`EVENTLINE__KAFKA__CLIENT__SASL_PASSWORD`); a key ending in `_file` (or
//! `.file`) reads its value from that file, as container platforms mount secrets.

use crate::settings::secrets::is_secret_key;
use crate::settings::KafkaSettings;
use rdkafka::ClientConfig;
use std::collections::BTreeMap;

/// Properties eventline sets itself: its guarantees depend on them.
pub const OWNED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "partition.assignment.strategy",
    "enable.idempotence",
];

/// Why `[kafka.client]` is unusable; the message names the key and never shows a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientSettingsError {
    /// librdkafka does not know the property or refuses its value.
    #[error("key `kafka.client.{key}`: {message}")]
    Property {
        /// The librdkafka property.
        key: String,
        /// librdkafka's reason (the value left out for secrets).
        message: String,
    },
    /// A property eventline sets itself.
    #[error("key `kafka.client.{0}`: eventline sets this property itself (its delivery guarantees depend on it); use the kafka.* setting if there is one")]
    Owned(String),
    /// A `*_file` key whose file cannot be read.
    #[error("key `kafka.client.{key}`: reading {path}: {source}")]
    File {
        /// The key as given.
        key: String,
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The librdkafka name of a settings key: lower case, `_` as `.`.
pub fn librdkafka_name(key: &str) -> String {
    key.trim().to_ascii_lowercase().replace('_', ".")
}

/// The properties as librdkafka takes them: names normalised, `*_file` values read
/// (trailing newline removed), eventline's own properties refused.
pub fn resolve(
    client: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, ClientSettingsError> {
    let mut resolved = BTreeMap::new();
    for (key, value) in client {
        let name = librdkafka_name(key);
        let (name, value) = match name.strip_suffix(".file") {
            Some(target) => {
                let text = std::fs::read_to_string(value).map_err(|source| {
                    ClientSettingsError::File { key: key.clone(), path: value.clone(), source }
                })?;
                (target.to_string(), text.trim_end_matches(['\n', '\r']).to_string())
            }
            None => (name, value.clone()),
        };
        if OWNED.contains(&name.as_str()) {
            return Err(ClientSettingsError::Owned(name));
        }
        resolved.insert(name, value);
    }
    Ok(resolved)
}

/// Checks every property with librdkafka itself (unknown names, bad values), without
/// creating a client.
pub fn check(properties: &BTreeMap<String, String>) -> Result<(), ClientSettingsError> {
    for (key, value) in properties {
        let mut config = ClientConfig::new();
        config.set(key, value);
        if let Err(e) = config.create_native_config() {
            let message = match e {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                other => other.to_string(),
            };
            let message = if is_secret_key(key) {
                message.replace(value.as_str(), "[redacted]")
            } else {
                message
            };
            return Err(ClientSettingsError::Property { key: key.clone(), message });
        }
    }
    Ok(())
}

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The largest record the producers (the DLQ's) may send: `[kafka.client]
/// message.max.bytes`, else librdkafka's default.
pub fn producer_max_message_bytes(client: &BTreeMap<String, String>) -> usize {
    client
        .iter()
        .find(|(key, _)| librdkafka_name(key) == "message.max.bytes")
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
}

/// A client configuration with the brokers and every `[kafka.client]` property.
pub fn client_config(kafka: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    for (key, value) in &kafka.client {
        config.set(key, value);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn environment_style_keys_become_librdkafka_names_and_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let resolved = resolve(&map(&[
            ("SECURITY_PROTOCOL", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl_password_file", secret.to_str().unwrap()),
        ]))
        .unwrap();
        assert_eq!(
            resolved,
            map(&[
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.password", "s3cret")
            ])
        );
        assert!(check(&resolved).is_ok());
    }

    #[test]
    fn bad_names_values_and_owned_properties_name_the_key() {
        let e = check(&map(&[("no.such.property", "1")])).unwrap_err().to_string();
        assert!(e.starts_with("key `kafka.client.no.such.property`:"), "{e}");
        let e = check(&map(&[("security.protocol", "carrier_pigeon")])).unwrap_err().to_string();
        assert!(
            e.contains("kafka.client.security.protocol") && e.contains("carrier_pigeon"),
            "{e}"
        );
        let e = resolve(&map(&[("enable_auto_commit", "true")])).unwrap_err().to_string();
        assert!(
            e.contains("kafka.client.enable.auto.commit")
                && e.contains("sets this property itself"),
            "{e}"
        );
        let e =
            resolve(&map(&[("sasl.password_file", "/nonexistent/pw")])).unwrap_err().to_string();
        assert!(
            e.starts_with("key `kafka.client.sasl.password_file`: reading /nonexistent/pw"),
            "{e}"
        );
    }
}
