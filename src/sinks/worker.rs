//! What every sink has in common (one layout for all, as in vector's sinks):
//!
//! - [`SinkWriter`]: the blocking write logic of one sink (Postgres, lake). It keeps its
//!   own durable progress per partition and reports it after each call.
//! - [`SinkWorker`]: the actor that runs a writer on its own thread (a `SyncArbiter`),
//!   turning panics into errors, because actix does not restart a panicked actor.
//! - [`SinkError`]: errors classified for the supervisor.
//!
//! The supervisor ([`super::supervisor`]) re-creates the worker after a failure.

use crate::record::{DeadLetter, SharedBatch, SinkId};
use crate::telemetry::faults::{panic_message, Fault, Faults};
use actix::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

/// A sink failure, classified for the supervisor.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// Transient (I/O, connection, pool timeout): restart with backoff and retry.
    #[error("retryable: {0}")]
    Retryable(String),
    /// Fatal (a lake path that is not a writable folder, ...): retrying cannot help;
    /// the supervisor gives up at once and the process exits with what to fix.
    #[error("fatal: {0}")]
    Fatal(String),
    /// The writer panicked; it is re-created like after any failure.
    #[error("panicked: {0}")]
    Panicked(String),
    /// Injected by the fault hook (tests and drills only).
    #[error("injected fault")]
    Injected,
}

/// Durable progress reported by a writer: partition -> next offset not yet stored.
pub type ProgressUpdate = Vec<(i32, i64)>;

/// What one write or flush did: the progress it made durable, the records the sink
/// refused for good, and the partitions another writer had moved on.
#[derive(Debug, Default)]
pub struct WriteReport {
    /// Durable progress, per partition.
    pub progress: ProgressUpdate,
    /// Records the sink can never store (poison), already stored as dead letters of
    /// class `sink_rejected` in the same transaction as the rest of their batch.
    pub rejected: Vec<DeadLetter>,
    /// Partitions whose progress another writer moved: what this writer held for them
    /// was dropped; the supervisor sends their batches again, and the writer skips
    /// what the other writer stored.
    pub fenced: Vec<Fencing>,
}

impl From<ProgressUpdate> for WriteReport {
    fn from(progress: ProgressUpdate) -> Self {
        WriteReport { progress, ..WriteReport::default() }
    }
}

/// One partition fenced during a write.
#[derive(Debug, Clone)]
pub struct Fencing {
    /// The partition.
    pub partition: i32,
    /// What showed it (which log entry or progress row moved).
    pub reason: String,
}

/// The blocking logic of one sink.
pub trait SinkWriter: Sized + Unpin + 'static {
    /// Which sink this is.
    const ID: SinkId;
    /// Opens (or re-opens after a failure): connects, recovers leftovers.
    fn open(&mut self) -> Result<(), SinkError>;
    /// Stores (or buffers) decided batches, in order, skipping what is already stored.
    /// A sink may store several batches at once (one Postgres transaction for all).
    /// `failures` counts how often this same write failed just before (0 normally), so
    /// a writer can look harder at an error that keeps coming back.
    fn write(&mut self, batches: &[SharedBatch], failures: u32) -> Result<WriteReport, SinkError>;
    /// Makes everything buffered durable (age limit reached, queue full, shutdown).
    fn flush(&mut self, only_if_due: bool) -> Result<WriteReport, SinkError>;
}

/// Ask the worker to store batches (in order).
#[derive(Message)]
#[rtype(result = "Result<WriteReport, SinkError>")]
pub struct Write {
    /// The batches.
    pub batches: Vec<SharedBatch>,
    /// Consecutive failures just before this write.
    pub failures: u32,
}

/// Ask the worker to flush its buffers (all, or only those due by age).
#[derive(Message)]
#[rtype(result = "Result<WriteReport, SinkError>")]
pub struct Flush {
    /// Only buffers whose age or size limit is reached.
    pub only_if_due: bool,
}

/// Runs a [`SinkWriter`] on a `SyncArbiter` thread.
pub struct SinkWorker<W: SinkWriter> {
    writer: W,
    opened: bool,
    faults: Arc<Mutex<Faults>>,
}

impl<W: SinkWriter> SinkWorker<W> {
    /// Wraps a writer; it is opened on first use.
    pub fn new(writer: W, faults: Arc<Mutex<Faults>>) -> Self {
        SinkWorker { writer, opened: false, faults }
    }

    /// Runs `f` with the fault hook first, opening the writer on first use, and turns a
    /// panic into [`SinkError::Panicked`]. After any error the supervisor drops this
    /// worker and builds a fresh one, so no half-updated state is reused.
    fn guarded<T>(
        &mut self,
        inject: bool,
        f: impl FnOnce(&mut W) -> Result<T, SinkError>,
    ) -> Result<T, SinkError> {
        let fault = if inject {
            self.faults.lock().unwrap_or_else(|p| p.into_inner()).take_next()
        } else {
            None
        };
        catch_unwind(AssertUnwindSafe(|| {
            match fault {
                Some(Fault::Panic) => panic!("injected panic in {}", W::ID.actor_name()),
                Some(Fault::Error) => return Err(SinkError::Injected),
                Some(Fault::Fatal) => return Err(SinkError::Fatal("injected fatal fault".into())),
                None => {}
            }
            if !self.opened {
                self.writer.open()?;
                self.opened = true;
            }
            f(&mut self.writer)
        }))
        .unwrap_or_else(|panic| Err(SinkError::Panicked(panic_message(&panic))))
    }
}

impl<W: SinkWriter> Actor for SinkWorker<W> {
    type Context = SyncContext<Self>;
}

impl<W: SinkWriter> Handler<Write> for SinkWorker<W> {
    type Result = Result<WriteReport, SinkError>;
    fn handle(&mut self, msg: Write, _: &mut SyncContext<Self>) -> Self::Result {
        self.guarded(true, |w| w.write(&msg.batches, msg.failures))
    }
}

impl<W: SinkWriter> Handler<Flush> for SinkWorker<W> {
    type Result = Result<WriteReport, SinkError>;
    fn handle(&mut self, msg: Flush, _: &mut SyncContext<Self>) -> Self::Result {
        self.guarded(false, |w| w.flush(msg.only_if_due))
    }
}

impl SinkError {
    /// A writer failure from an error that knows its class: fatal ones stay fatal,
    /// everything else is retried.
    pub fn classified(error: &(impl crate::failure::Classified + std::fmt::Display)) -> Self {
        match error.class() {
            crate::failure::FailureClass::Fatal => SinkError::Fatal(error.to_string()),
            _ => SinkError::Retryable(error.to_string()),
        }
    }
}

impl crate::failure::Classified for SinkError {
    /// Fatal errors are fatal; every other writer failure is retried with backoff: the
    /// writer is re-created and re-sent what it has not made durable. Poison records and
    /// fenced partitions never reach the supervisor as errors: the writer isolates them
    /// and says so in its [`WriteReport`].
    fn class(&self) -> crate::failure::FailureClass {
        match self {
            SinkError::Fatal(_) => crate::failure::FailureClass::Fatal,
            _ => crate::failure::FailureClass::Transient,
        }
    }
}
