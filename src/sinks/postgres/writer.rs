//! The Postgres writer: plans what each batch still needs against the durable
//! progress, stores it in one transaction ([`transaction`](super::transaction)), and
//! when Postgres refuses a write because of a record, stores batch by batch, split in
//! halves until that record is alone ([`refusal`](super::refusal)). A fenced write
//! (progress moved under another writer) re-reads progress and tries once more.

use super::bookkeeping::Plan;
use super::refusal::{may_be_a_refusal, refusal_at, row_offsets, Refusal, Slice};
use super::rows::InsertMode;
use super::transaction::{self, TxError, Write};
use crate::db::{self, PgPool};
use crate::offsets::progress::write_start;
use crate::projections::refresh::Projections;
use crate::record::{SharedBatch, SinkId};
use crate::sinks::verdicts::PostgresVerdicts;
use crate::sinks::worker::{Fencing, SinkError, SinkWriter, WriteReport};
use crate::telemetry::faults::TransactionPause;
use diesel::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Stores decided batches in Postgres.
pub struct PostgresWriter {
    pool: PgPool,
    /// Kept between writes: a pool checkout costs a validation round trip, which at
    /// moderate rates (small groups) was a large share of each write. After any error
    /// it is dropped (the supervisor builds a fresh writer), so a broken connection is
    /// never reused.
    conn: Option<db::PgConn>,
    progress: HashMap<(Arc<str>, i32), Option<i64>>,
    /// Where the lake learns what this writer stored and refused.
    verdicts: Arc<PostgresVerdicts>,
    /// Fault injection: a wait inside each transaction.
    pause: TransactionPause,
    /// The current-state tables kept in the same transaction as the events.
    projections: Arc<Projections>,
}

impl PostgresWriter {
    /// A writer over `pool`; it connects on first use. What it stores and refuses goes
    /// to `verdicts`, which the lake follows.
    pub fn new(pool: PgPool, verdicts: Arc<PostgresVerdicts>) -> Self {
        PostgresWriter {
            pool,
            conn: None,
            progress: HashMap::new(),
            verdicts,
            pause: TransactionPause::default(),
            projections: Arc::default(),
        }
    }

    /// Keeps these current-state tables with the events.
    pub fn with_projections(mut self, projections: Arc<Projections>) -> Self {
        self.projections = projections;
        self
    }

    /// Waits inside every transaction (fault injection for tests).
    pub fn with_pause(mut self, pause: TransactionPause) -> Self {
        self.pause = pause;
        self
    }

    /// A partition's durable progress: as this writer last left it, or read.
    fn progress_of(
        &mut self,
        conn: &mut PgConnection,
        key: &(Arc<str>, i32),
    ) -> Result<Option<i64>, SinkError> {
        if let Some(p) = self.progress.get(key) {
            return Ok(*p);
        }
        let read =
            db::read_progress(conn, SinkId::Postgres.as_str(), &key.0, key.1).map_err(retryable)?;
        self.progress.insert(key.clone(), read);
        Ok(read)
    }

    /// What each batch still needs stored, against the durable progress.
    fn plan<'a>(
        &mut self,
        conn: &mut PgConnection,
        batches: &'a [SharedBatch],
    ) -> Result<(Plan, Vec<Slice<'a>>), SinkError> {
        let mut plan: Plan = BTreeMap::new();
        let mut slices = Vec::new();
        for batch in batches {
            let key = (batch.topic.clone(), batch.partition);
            if !plan.contains_key(&key) {
                let expected = self.progress_of(conn, &key)?;
                plan.insert(key.clone(), (expected, expected));
            }
            let entry = plan.get_mut(&key).expect("inserted above");
            let span = (batch.first_offset, batch.next_offset);
            let at = (&*batch.topic, batch.partition);
            let Some(from) = write_start("Postgres", at, entry.1, span) else { continue };
            slices.push(Slice { batch, from, to: batch.next_offset });
            entry.1 = Some(batch.next_offset);
        }
        Ok((plan, slices))
    }

    /// A stored plan becomes this writer's progress and the report's.
    fn settle(&mut self, plan: Plan, report: &mut WriteReport) {
        for ((topic, partition), (_, now)) in plan {
            self.progress.insert((topic, partition), now);
            if let Some(now) = now {
                report.progress.push((partition, now));
            }
        }
    }

    /// Every batch in one transaction; when Postgres refuses it because of a record,
    /// batch by batch, splitting until the record is found.
    fn write_all(
        &mut self,
        conn: &mut PgConnection,
        batches: &[SharedBatch],
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        // Twice at most: a fenced attempt re-reads the progress another writer left.
        for _ in 0..2 {
            let (plan, slices) = self.plan(conn, batches)?;
            match self.store_either(conn, &slices, &plan, &[]) {
                Ok(()) => {
                    self.settle(plan, report);
                    return Ok(());
                }
                Err(TxError::Fenced(partitions)) => {
                    log::warn!("Postgres writer fenced on partitions {partitions:?}: their progress moved under another writer; re-reading");
                    for key in plan.keys() {
                        self.progress.remove(key);
                    }
                    report.fenced.extend(partitions.into_iter().map(|partition| Fencing {
                        partition,
                        reason: "sink_progress moved under another writer".into(),
                    }));
                }
                Err(TxError::Db(e)) if may_be_a_refusal(&e) => {
                    log::warn!("Postgres refused a write ({e}); storing batch by batch to find the record(s) to blame");
                    return self.isolate(conn, batches, report);
                }
                Err(TxError::Db(e)) => return Err(retryable(e)),
            }
        }
        Err(SinkError::Retryable(
            "fenced twice: another writer keeps moving these partitions".into(),
        ))
    }

    /// Stores the batches one by one, each split until a refused record is alone.
    fn isolate(
        &mut self,
        conn: &mut PgConnection,
        batches: &[SharedBatch],
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        for batch in batches {
            let key = (batch.topic.clone(), batch.partition);
            let expected = self.progress_of(conn, &key)?;
            let span = (batch.first_offset, batch.next_offset);
            let at = (&*batch.topic, batch.partition);
            match write_start("Postgres", at, expected, span) {
                Some(from) => {
                    let slice = Slice { batch, from, to: batch.next_offset };
                    self.store_range(conn, slice, report)?;
                }
                None => report.progress.extend(expected.map(|p| (batch.partition, p))),
            }
        }
        Ok(())
    }

    /// Stores one slice in its own transaction. Refused because of a record: split it
    /// in halves by the offsets that hold rows; a refused slice with one such offset is
    /// stored with that record as a dead letter instead ([`refusal_at`]), and if that is
    /// refused too, as a bare one (coordinates, class and reason).
    fn store_range(
        &mut self,
        conn: &mut PgConnection,
        slice: Slice,
        report: &mut WriteReport,
    ) -> Result<(), SinkError> {
        let key = (slice.batch.topic.clone(), slice.batch.partition);
        let expected = self.progress.get(&key).copied().flatten();
        let plan: Plan = BTreeMap::from([(key, (expected, Some(slice.to)))]);
        let fenced = || SinkError::Retryable("fenced while isolating a refused record".into());
        let error = match self.store_either(conn, &[slice], &plan, &[]) {
            Ok(()) => {
                self.settle(plan, report);
                return Ok(());
            }
            Err(TxError::Db(e)) if may_be_a_refusal(&e) => e,
            Err(TxError::Db(e)) => return Err(retryable(e)),
            Err(TxError::Fenced(_)) => return Err(fenced()),
        };
        match row_offsets(&slice).as_slice() {
            // No record's row to blame: the rows left are ours (progress, counts).
            [] => Err(retryable(error)),
            [offset] => {
                let mut last = error.to_string();
                for bare in [false, true] {
                    let refusal = refusal_at(&slice, *offset, &last, bare);
                    match self.store_either(conn, &[slice], &plan, std::slice::from_ref(&refusal)) {
                        Ok(()) => {
                            let c = &refusal.coords;
                            log::warn!(
                                "Postgres refused {}/{}@{}: dead-lettered as {}: {error}",
                                c.topic,
                                c.partition,
                                c.offset,
                                refusal.dead.class.as_str()
                            );
                            report.rejected.push(refusal.dead);
                            self.settle(plan, report);
                            return Ok(());
                        }
                        Err(TxError::Db(e)) if may_be_a_refusal(&e) => last = e.to_string(),
                        Err(TxError::Db(e)) => return Err(retryable(e)),
                        Err(TxError::Fenced(_)) => return Err(fenced()),
                    }
                }
                // Refused even without the record's own bytes: not this record's fault.
                Err(retryable(last))
            }
            many => {
                let middle = many[many.len() / 2];
                self.store_range(conn, Slice { to: middle, ..slice }, report)?;
                self.store_range(conn, Slice { from: middle, ..slice }, report)
            }
        }
    }

    /// [`Self::store`], falling back to skipping stored ids when some already were.
    /// One transaction ([`transaction::store`]), falling back to skipping stored ids
    /// when some already were (progress rows deleted by hand, say).
    fn store_either(
        &self,
        conn: &mut PgConnection,
        slices: &[Slice],
        plan: &Plan,
        refused: &[Refusal],
    ) -> Result<(), TxError> {
        if slices.is_empty() {
            return Ok(());
        }
        let mut write = Write { slices, plan, refused, mode: InsertMode::New };
        match transaction::store(conn, &write, &self.projections, self.pause) {
            Err(TxError::Db(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            ))) => {
                log::warn!("Postgres writer: some accepted events were already in `events` ({}); storing the rest", info.message());
                write.mode = InsertMode::SkipExisting;
                transaction::store(conn, &write, &self.projections, self.pause)
            }
            other => other,
        }
    }
}

fn retryable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Retryable(e.to_string())
}

impl SinkWriter for PostgresWriter {
    const ID: SinkId = SinkId::Postgres;

    fn open(&mut self) -> Result<(), SinkError> {
        self.conn = Some(db::conn(&self.pool).map_err(retryable)?);
        Ok(())
    }

    fn write(&mut self, batches: &[SharedBatch], _failures: u32) -> Result<WriteReport, SinkError> {
        let mut conn = db::kept_or_new(&mut self.conn, &self.pool).map_err(retryable)?;
        let mut report = WriteReport::default();
        self.write_all(&mut conn, batches, &mut report)?;
        self.conn = Some(conn);
        for (partition, next) in &report.progress {
            let refused = report.rejected.iter().map(|d| &d.record.coords);
            let refused = refused.filter(|c| c.partition == *partition).map(|c| c.offset);
            self.verdicts.record(*partition, *next, refused);
        }
        Ok(report)
    }

    fn flush(&mut self, _only_if_due: bool) -> Result<WriteReport, SinkError> {
        Ok(WriteReport::default())
    }
}
