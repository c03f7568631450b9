//! Log lines: plain text for people, or one JSON object per line for log shippers, in
//! which the summary line's `key=value` words become fields of their own.

use std::io::Write;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// `env_logger`'s text with millisecond timestamps.
    #[default]
    Plain,
    /// One JSON object per line: `ts`, `level`, `target`, `message`, and the message's
    /// `key=value` words as fields.
    Json,
}

/// Installs the logger (level from `RUST_LOG`, `info` by default).
pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // Every line passes through the secret scrubber, librdkafka's too (rdkafka logs
    // through the `log` crate).
    match format {
        LogFormat::Json => {
            builder.format(|buf, record| writeln!(buf, "{}", json_line(record)));
        }
        LogFormat::Plain => {
            builder.format(|buf, record| {
                let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let message = crate::settings::secrets::scrub(&record.args().to_string());
                writeln!(buf, "[{ts} {:<5} {}] {message}", record.level(), record.target())
            });
        }
    }
    builder.init();
}

fn json_line(record: &log::Record<'_>) -> serde_json::Value {
    let message = crate::settings::secrets::scrub(&record.args().to_string());
    let mut line = serde_json::json!({
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "level": record.level().to_string(),
        "target": record.target(),
        "message": message,
    });
    for (key, value) in fields(&message) {
        line[key] = value;
    }
    line
}

/// The `key=value` words of a message whose key is a lower-case identifier; numbers
/// become JSON numbers.
fn fields(message: &str) -> Vec<(&str, serde_json::Value)> {
    message
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .map(|(k, v)| {
            (k, v.parse::<f64>().map(serde_json::Value::from).unwrap_or_else(|_| v.into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_words_become_typed_fields() {
        let found = fields("Summary: consumed=120 postgres=up Lag=3 =x");
        assert_eq!(found, vec![("consumed", 120.0.into()), ("postgres", "up".into())]);
    }
}
