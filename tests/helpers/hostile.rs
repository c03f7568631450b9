//! Records sent by third-party clients, for the hostile-input tests: confluent-kafka
//! (transactions, any key, header and value bytes) through `tests/hostile/send.py`, and
//! kcat (header names that are not UTF-8, which the Python client cannot send).

use super::{repo, TestEnv};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::Command;

/// One record to send: partition (by key when `None`), key, value (`None`: a
/// tombstone) and headers, all as bytes.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    /// Partition, or where the key hashes.
    pub partition: Option<i32>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Header names and values.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl RawRecord {
    /// A record with this key and value on `partition`.
    pub fn new(partition: i32, key: &[u8], value: Option<&[u8]>) -> RawRecord {
        RawRecord {
            partition: Some(partition),
            key: Some(key.to_vec()),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }
}

/// How a group of records is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// One idempotent producer, no transaction.
    Plain,
    /// One transaction, committed.
    Committed,
    /// One transaction, aborted.
    Aborted,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestEnv {
    /// Sends the groups in order with confluent-kafka.
    pub fn send_confluent(&self, groups: &[(Delivery, Vec<RawRecord>)]) {
        let plan: Vec<serde_json::Value> = groups
            .iter()
            .map(|(delivery, records)| {
                let records: Vec<serde_json::Value> = records
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "partition": r.partition,
                            "key": r.key.as_deref().map(hex),
                            "value": r.value.as_deref().map(hex),
                            "headers": r.headers.iter().map(|(k, v)| serde_json::json!([k, hex(v)])).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                let transaction = match delivery {
                    Delivery::Plain => None,
                    Delivery::Committed => Some("commit"),
                    Delivery::Aborted => Some("abort"),
                };
                serde_json::json!({"transaction": transaction, "records": records})
            })
            .collect();
        let path = self.dir().join(format!("plan-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&path, serde_json::to_vec(&plan).unwrap()).expect("write the plan");
        let status = Command::new("python3")
            .arg(repo().join("tests/hostile/send.py"))
            .arg(&self.brokers)
            .arg(&self.topic)
            .arg(&path)
            .status()
            .expect("python3 runs tests/hostile/send.py");
        assert!(status.success(), "confluent-kafka could not send the plan");
    }

    /// Sends one record with kcat to `partition`, with a header whose name is the raw
    /// bytes `header_name` (kcat passes them as they are).
    pub fn send_kcat_with_header(&self, partition: i32, value: &str, header_name: &[u8]) {
        let mut header = header_name.to_vec();
        header.extend_from_slice(b"=hostile");
        let value_file = self.dir().join(format!("kcat-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&value_file, value).expect("write the value");
        let status = Command::new("kcat")
            .args(["-P", "-b", &self.brokers, "-t", &self.topic, "-p", &partition.to_string()])
            .arg("-H")
            .arg(OsString::from_vec(header))
            .arg(&value_file)
            .status()
            .expect("kcat runs (Debian's kcat package; scripts/deps.sh installs it)");
        assert!(status.success(), "kcat could not send the record");
    }
}
