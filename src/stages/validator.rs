//! The validator actor: bytes -> JSON -> envelope -> payload contract, for a whole
//! batch, on a `SyncArbiter` thread (it is CPU work). Every record comes out either as
//! a valid event or as a dead letter with its class and reason; none is dropped.
//!
//! A panic while checking one record is caught and that record alone is dead-lettered
//! as `checker_panicked`: checking is deterministic, so retrying would panic again and
//! block the partition, and an uncaught panic would end this `SyncArbiter` thread and the
//! flows that send to it. The panic goes to the supervision log and
//! `eventline_stage_failures_total{stage="validator"}`.

use crate::record::SourceRecord;
use crate::record::{Checked, CheckedBatch, DeadLetter, ErrorClass, Event, SourceBatch};
use crate::stages::contract::{Contracts, Rejection};
use crate::stages::headers::{attach, keep, HeaderRules};
use crate::stages::lateness::stamp_arrival;
use crate::stages::tombstone;
use crate::telemetry::faults::{panic_message, Fault, Faults};
use crate::telemetry::metrics::metrics;
use crate::telemetry::supervision_log::{Entry, EntryKind, SupervisionLog};
use actix::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// Check every record of a batch.
#[derive(Message)]
#[rtype(result = "CheckedBatch")]
pub struct Validate(pub SourceBatch);

/// The validator actor.
pub struct Validator {
    contracts: Arc<Contracts>,
    log: Arc<SupervisionLog>,
    faults: Arc<Mutex<Faults>>,
    late_after: std::time::Duration,
    header_rules: HeaderRules,
}

impl Validator {
    /// A validator over loaded contracts; caught panics go to `log`.
    pub fn new(
        contracts: Arc<Contracts>,
        log: Arc<SupervisionLog>,
        faults: Arc<Mutex<Faults>>,
        late_after: std::time::Duration,
        header_rules: HeaderRules,
    ) -> Self {
        Validator { contracts, log, faults, late_after, header_rules }
    }
}

/// Checks a batch with `check` (pure; the actor only runs it off the event loop), one
/// record at a time; a record whose check panics is dead-lettered as
/// [`ErrorClass::CheckerPanicked`] and the others are checked on. Tombstones are
/// deletions when keyed by an `event_id` ([`tombstone::deletion`]), else of one of the
/// `entities` the contracts declare.
pub fn check_batch_with(
    batch: SourceBatch,
    received_at_ms: i64,
    entities: &[String],
    mut check: impl FnMut(&SourceRecord) -> Result<Event, Rejection>,
) -> CheckedBatch {
    let (first_offset, next_offset) = (batch.first_offset, batch.next_offset);
    let mut check = |record: &SourceRecord| match record.value {
        None => tombstone::meaning(record, received_at_ms, entities),
        Some(_) => check(record).map(Checked::Valid),
    };
    let items = batch
        .records
        .into_iter()
        .map(|record| match catch_unwind(AssertUnwindSafe(|| check(&record))) {
            Ok(Ok(checked)) => checked,
            Ok(Err(rejection)) => Checked::Dead(DeadLetter {
                record,
                class: rejection.class,
                reason: rejection.reason,
                event_type: rejection.event_type,
                schema_version: rejection.schema_version,
            }),
            Err(panic) => Checked::Dead(DeadLetter {
                record,
                class: ErrorClass::CheckerPanicked,
                reason: format!("the contract check panicked: {}", panic_message(&panic)),
                event_type: None,
                schema_version: None,
            }),
        })
        .collect();
    CheckedBatch {
        topic: batch.topic,
        partition: batch.partition,
        first_offset,
        next_offset,
        items,
    }
}

impl Actor for Validator {
    type Context = SyncContext<Self>;
}

impl Handler<Validate> for Validator {
    type Result = MessageResult<Validate>;
    fn handle(&mut self, msg: Validate, _: &mut SyncContext<Self>) -> Self::Result {
        let fault = self.faults.lock().unwrap_or_else(|p| p.into_inner()).take_next();
        let mut inject = fault == Some(Fault::Panic);
        let (contracts, late_after, rules) = (&self.contracts, self.late_after, &self.header_rules);
        let received_at_ms = crate::telemetry::now_ms();
        let entities = contracts.entities().names();
        let checked = check_batch_with(msg.0, received_at_ms, &entities, |r| {
            if std::mem::take(&mut inject) {
                panic!("injected panic in the validator");
            }
            let checked = contracts.check(r.value.as_deref(), r.coords.clone(), r.timestamp_ms);
            checked.and_then(|event| contracts.transform(event)).map(|event| {
                let event = stamp_arrival(event, received_at_ms, late_after);
                attach(event, keep(&r.headers, rules))
            })
        });
        for item in &checked.items {
            if let Checked::Dead(dead) = item {
                if dead.class == ErrorClass::CheckerPanicked {
                    self.record_panic(dead);
                }
            }
        }
        MessageResult(checked)
    }
}

impl Validator {
    fn record_panic(&self, dead: &DeadLetter) {
        let c = &dead.record.coords;
        let mut entry = Entry::new("validator", EntryKind::Failure);
        entry.cause = Some(format!("{}/{}@{}: {}", c.topic, c.partition, c.offset, dead.reason));
        self.log.append(&entry);
        metrics().stage_failures.with_label_values(&["validator"]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Coords;

    fn batch(n: i64) -> SourceBatch {
        let topic: Arc<str> = Arc::from("t");
        let records = (0..n)
            .map(|offset| SourceRecord {
                coords: Coords { topic: topic.clone(), partition: 0, offset },
                key: None,
                value: Some(b"{}".to_vec()),
                headers: Vec::new(),
                timestamp_ms: None,
            })
            .collect();
        SourceBatch::new(topic, 0, records)
    }

    #[test]
    fn a_panicking_check_sets_aside_that_record_only() {
        let contracts = Contracts::shipped();
        let checked = check_batch_with(batch(3), 0, &[], |r| {
            if r.coords.offset == 1 {
                panic!("boom");
            }
            contracts.check(r.value.as_deref(), r.coords.clone(), r.timestamp_ms)
        });
        let classes: Vec<_> = checked
            .items
            .iter()
            .map(|i| match i {
                Checked::Dead(d) => d.class,
                Checked::Valid(_) | Checked::Delete(_) | Checked::DeleteEntity(_) => {
                    unreachable!("`{{}}` breaks the envelope")
                }
            })
            .collect();
        assert_eq!(
            classes,
            vec![ErrorClass::BadEnvelope, ErrorClass::CheckerPanicked, ErrorClass::BadEnvelope]
        );
        assert_eq!((checked.first_offset, checked.next_offset), (0, 3));
    }
}
