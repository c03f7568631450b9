//! The validator actor: bytes -> JSON -> envelope -> payload contract, for a whole
//! batch, on a `SyncArbiter` thread (it is CPU work). Every record comes out either as
//! a valid event or as a dead letter with its class and reason; none is dropped.

use crate::record::{Checked, CheckedBatch, DeadLetter, SourceBatch};
use crate::stages::contract::Contracts;
use actix::prelude::*;
use std::sync::Arc;

/// Check every record of a batch.
#[derive(Message)]
#[rtype(result = "CheckedBatch")]
pub struct Validate(pub SourceBatch);

/// The validator actor.
pub struct Validator {
    contracts: Arc<Contracts>,
}

impl Validator {
    /// A validator over loaded contracts.
    pub fn new(contracts: Arc<Contracts>) -> Self {
        Validator { contracts }
    }
}

/// Checks a batch (pure; the actor only runs it off the event loop).
pub fn check_batch(contracts: &Contracts, batch: SourceBatch) -> CheckedBatch {
    let (first_offset, next_offset) = (batch.first_offset(), batch.next_offset());
    let items = batch
        .records
        .into_iter()
        .map(|record| {
            match contracts.check(
                record.value.as_deref(),
                record.coords.clone(),
                record.timestamp_ms,
            ) {
                Ok(event) => Checked::Valid(event),
                Err(rejection) => Checked::Dead(DeadLetter {
                    record,
                    class: rejection.class,
                    reason: rejection.reason,
                    event_type: rejection.event_type,
                    schema_version: rejection.schema_version,
                }),
            }
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
        MessageResult(check_batch(&self.contracts, msg.0))
    }
}
