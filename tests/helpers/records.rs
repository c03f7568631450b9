//! Records the tests produce: valid `account_created` events, mixes of duplicates,
//! conflicts and contract violations, invalidations, and a copy of the contracts.

use super::*;

/// A valid `account_created` event as JSON text.
pub fn account_created(event_id: &str, account: &str) -> String {
    serde_json::json!({
        "event_id": event_id,
        "event_type": "account_created",
        "source": "crm",
        "timestamp": "2026-11-22T10:15:00+01:00",
        "payload": {"account_id": account, "industry": "software", "region": "EMEA"}
    })
    .to_string()
}

/// `n` valid events with fresh ids, keyed by account, as records for [`TestEnv::produce`].
pub fn valid_records(n: usize) -> Vec<TestRecord> {
    (0..n)
        .map(|i| {
            let account = format!("acc_{i:06}");
            let id = uuid::Uuid::new_v4().to_string();
            (None, account.clone(), Some(account_created(&id, &account).into_bytes()))
        })
        .collect()
}

/// Records with `n` fresh valid events, `dups` repeats of some of them, `conflicts`
/// changed repeats and `invalid` contract violations, spread over the partitions by key.
/// Returns the records and the set of event ids that must be accepted.
pub fn mixed_records(
    n: usize,
    dups: usize,
    conflicts: usize,
    invalid: usize,
) -> (Vec<TestRecord>, std::collections::BTreeSet<String>) {
    let mut records = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    let mut originals = Vec::new();
    for i in 0..n {
        let account = format!("acc_{i:06}");
        let id = uuid::Uuid::new_v4().to_string();
        let value = account_created(&id, &account);
        originals.push((account.clone(), value.clone()));
        ids.insert(id);
        records.push((None, account, Some(value.into_bytes())));
    }
    for i in 0..dups {
        let (account, value) = &originals[(i * 7) % n];
        records.push((None, account.clone(), Some(value.clone().into_bytes())));
    }
    for i in 0..conflicts {
        let (account, value) = &originals[(i * 13 + 1) % n];
        records.push((
            None,
            account.clone(),
            Some(value.replace("software", "finance").into_bytes()),
        ));
    }
    for i in 0..invalid {
        records.push((None, format!("bad_{i}"), Some(format!("{{\"broken\": {i}").into_bytes())));
    }
    (records, ids)
}

/// The same event with `is_valid: false`: its invalidation.
pub fn invalidation_of(event: &str) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(event).expect("an event");
    doc["is_valid"] = serde_json::json!(false);
    doc.to_string()
}

/// The `event_id` of a record made by [`valid_records`] or [`mixed_records`].
pub fn event_id_of(record: &TestRecord) -> String {
    let value: serde_json::Value =
        serde_json::from_slice(record.2.as_deref().expect("an event, not a tombstone"))
            .expect("JSON");
    value["event_id"].as_str().expect("an event_id").to_string()
}

/// Copies the repository's `contracts/` to `to`, for a test that changes them.
pub fn copy_contracts(to: &Path) {
    pub(super) fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("a folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
    let from = repo().join("contracts");
    for file in walk(&from) {
        let target = to.join(file.strip_prefix(&from).expect("under contracts"));
        std::fs::create_dir_all(target.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&file, &target).expect("copy");
    }
}
