//! The steps the drills share: snapshots before and after, traffic from the generator,
//! waiting for the processor to drain, and the exactly-once checks against Postgres
//! and the lake.

use super::inspect::{snapshot, Snapshot};
use super::kafka_ops;
use super::processor::{wait_for, ChildProcessor};
use super::report::Report;
use super::{DrillContext, StepError};
use crate::cli::generator::{Generator, GeneratorConfig, Kind};
use crate::cli::publisher::Publisher;
use crate::db;
use crate::sinks::lake::reader::LakeRow;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::LakeTableError;
use crate::telemetry::supervision_log::EntryKind;
use diesel::prelude::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

pub(super) type DrillResult = Result<(), StepError>;

pub(super) fn snap(ctx: &DrillContext) -> Result<(Snapshot, Vec<LakeRow>), StepError> {
    let s = &ctx.settings;
    let store = LakeStore::from_settings(&s.lake).map_err(LakeTableError::from)?;
    snapshot(&ctx.pool, &store, &s.kafka, &s.kafka.group_id, &s.kafka.topic)
}

pub(super) fn processor_log(ctx: &DrillContext, drill: &str) -> std::path::PathBuf {
    let _ = std::fs::create_dir_all(&ctx.reports_dir);
    ctx.reports_dir.join(format!("drill-{drill}-processor.log"))
}

pub(super) fn require_idle_group(ctx: &DrillContext) -> DrillResult {
    let members = kafka_ops::group_members(&ctx.settings.kafka, &ctx.settings.kafka.group_id)?;
    if members > 0 {
        return Err(StepError::Failed(format!(
            "consumer group {} has {members} active member(s): stop the running processor first",
            ctx.settings.kafka.group_id
        )));
    }
    Ok(())
}

/// A drill measures its own traffic: records already waiting in the topic are
/// processed first, so the "before" snapshot starts from a drained pipeline.
pub(super) fn settle(ctx: &DrillContext, report: &mut Report, drill: &str) -> DrillResult {
    require_idle_group(ctx)?;
    let end: i64 = kafka_ops::watermarks(&ctx.settings.kafka, &ctx.settings.kafka.topic)?
        .iter()
        .map(|(_, h)| h)
        .sum();
    let (pg, lake) = progress_sums(ctx)?;
    if pg == end && lake == end {
        return Ok(());
    }
    let child = ChildProcessor::start(&[], &processor_log(ctx, drill))?;
    wait_drained(ctx)?;
    let code = child.stop(Duration::from_secs(60))?;
    report.step(format!(
        "processed a backlog of {} records already in the topic first (exit code {code})",
        end - pg.min(lake)
    ));
    Ok(())
}

/// Both sinks' durable progress summed over partitions (cheap to poll).
pub(super) fn progress_sums(ctx: &DrillContext) -> Result<(i64, i64), StepError> {
    let s = &ctx.settings;
    let n = kafka_ops::partitions(&s.kafka, &s.kafka.topic)?;
    let mut conn = db::conn(&ctx.pool)?;
    let (mut pg, mut lake) = (0, 0);
    // The lake first: it never passes Postgres, so read in this order a sample never
    // shows it ahead either.
    let store = LakeStore::from_settings(&s.lake).map_err(LakeTableError::from)?;
    let tables = crate::sinks::lake::commit::LakeTables::open(&store)?;
    for p in 0..n {
        lake += tables.progress(&s.kafka.topic, p)?.lake().unwrap_or(0);
    }
    for p in 0..n {
        pg += db::read_progress(&mut conn, "postgres", &s.kafka.topic, p)?.unwrap_or(0);
    }
    Ok((pg, lake))
}

/// Waits until both sinks stored everything up to the high watermarks and the running
/// processor committed that (after a kill, only once the dead member's session expired
/// and the partitions were assigned again).
pub(super) fn wait_drained(ctx: &DrillContext) -> DrillResult {
    let s = &ctx.settings;
    wait_for(
        "both sinks stored everything up to the end of the topic, and it is committed",
        ctx.timeout,
        || {
            let marks = kafka_ops::watermarks(&s.kafka, &s.kafka.topic)?;
            let end: i64 = marks.iter().map(|(_, h)| h).sum();
            let (pg, lake) = progress_sums(ctx)?;
            let high: Vec<i64> = marks.iter().map(|(_, h)| *h).collect();
            Ok(pg == end
                && lake == end
                && kafka_ops::committed(&s.kafka, &s.kafka.group_id, &s.kafka.topic)? == high)
        },
    )
}

/// Generated traffic: what was sent, by kind, and the ids that must be accepted.
pub(super) struct Traffic {
    pub(super) kinds: BTreeMap<&'static str, i64>,
    /// Ids that must end up stored: the valid events not deleted later.
    pub(super) accepted_ids: BTreeSet<String>,
    pub(super) deleted_ids: BTreeSet<String>,
}

pub(super) fn traffic_config(ctx: &DrillContext) -> GeneratorConfig {
    GeneratorConfig {
        seed: ctx.seed,
        start_time: chrono::Utc::now(),
        duplicate_ratio: 0.04,
        conflict_ratio: 0.01,
        invalid_ratio: 0.02,
        tombstone_ratio: 0.005,
        late_ratio: 0.05,
        invalidate_ratio: 0.01,
        delete_ratio: 0.005,
        ..GeneratorConfig::default()
    }
}

pub(super) fn send_traffic(ctx: &DrillContext, rate: Option<f64>) -> Result<Traffic, StepError> {
    let s = &ctx.settings;
    let mut publisher = Publisher::new(&s.kafka, &s.kafka.topic)?;
    let mut traffic = Traffic {
        kinds: BTreeMap::new(),
        accepted_ids: BTreeSet::new(),
        deleted_ids: BTreeSet::new(),
    };
    let started = Instant::now();
    for (i, record) in Generator::new(traffic_config(ctx)).take(ctx.events as usize).enumerate() {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let kind = match record.kind {
            Kind::Valid => "accepted",
            Kind::Duplicate => "duplicate",
            Kind::Conflict => "conflict",
            Kind::Invalid => "dead_letter",
            Kind::Invalidation => "invalidated",
            // An account id's tombstone deletes the account's state, not an event.
            Kind::Deletion | Kind::Tombstone => "deleted",
        };
        *traffic.kinds.entry(kind).or_default() += 1;
        if record.kind == Kind::Deletion {
            // The event it deletes must end up in neither sink.
            traffic.accepted_ids.remove(&record.key);
            traffic.deleted_ids.insert(record.key.clone());
        }
        if record.kind == Kind::Valid {
            let value: serde_json::Value =
                serde_json::from_slice(record.value.as_deref().unwrap_or_default())?;
            traffic.accepted_ids.insert(value["event_id"].as_str().unwrap_or_default().to_string());
        }
        publisher.send(&record.key, record.value.as_deref())?;
    }
    publisher.finish(Duration::from_secs(120))?;
    let failed: u64 = publisher.stats.failed.lock().map(|m| m.values().sum()).unwrap_or(0);
    if failed > 0 {
        return Err(StepError::Failed(format!(
            "{failed} records of the generated traffic were not delivered"
        )));
    }
    Ok(traffic)
}

pub(super) fn table_figures(report: &mut Report, before: &Snapshot, after: &Snapshot) {
    for (table, n) in &after.tables {
        report.figure(
            &format!("rows in {table}"),
            before.tables.get(table).copied().unwrap_or(0),
            n,
        );
    }
    let outcomes: BTreeSet<&String> = before.outcomes.keys().chain(after.outcomes.keys()).collect();
    for o in outcomes {
        report.figure(
            &format!("outcome {o}"),
            before.outcomes.get(o).copied().unwrap_or(0),
            after.outcomes.get(o).copied().unwrap_or(0),
        );
    }
    report.figure("events in the lake (rows)", before.lake_rows, after.lake_rows);
    report.figure("lake files", before.lake_files, after.lake_files);
    report.figure("event id set hash (postgres)", &before.pg_ids_hash, &after.pg_ids_hash);
    report.figure("event id set hash (lake)", &before.lake_ids_hash, &after.lake_ids_hash);
    report.figure(
        "committed offsets",
        format!("{:?}", before.committed),
        format!("{:?}", after.committed),
    );
    report.figure(
        "high watermarks",
        format!("{:?}", before.high_watermarks),
        format!("{:?}", after.high_watermarks),
    );
}

/// Exactly once for generated traffic: every accepted id once in each sink, outcome
/// deltas equal to what was sent, both sinks holding the same set.
pub(super) fn check_exactly_once(
    ctx: &DrillContext,
    report: &mut Report,
    before: &Snapshot,
    after: &Snapshot,
    lake: &[LakeRow],
    traffic: &Traffic,
) -> DrillResult {
    let expected = traffic.accepted_ids.len() as i64;
    report.check(
        "postgres: each new event stored exactly once",
        after.pg_events - before.pg_events == expected,
        format!(
            "{} new rows in events for {expected} new event ids",
            after.pg_events - before.pg_events
        ),
    );
    let mut count: HashMap<&str, i64> = HashMap::new();
    for row in lake {
        *count.entry(row.event_id.as_str()).or_default() += 1;
    }
    let missing = traffic.accepted_ids.iter().filter(|id| !count.contains_key(id.as_str())).count();
    let doubled = count.values().filter(|n| **n > 1).count();
    report.check(
        "lake: each new event exactly once",
        missing == 0 && doubled == 0 && after.lake_rows - before.lake_rows == expected,
        format!(
            "{} new rows for {expected} new ids; {missing} missing, {doubled} ids more than once",
            after.lake_rows - before.lake_rows
        ),
    );
    let mut conn = db::conn(&ctx.pool)?;
    let ids: Vec<uuid::Uuid> = traffic.accepted_ids.iter().filter_map(|s| s.parse().ok()).collect();
    let found: i64 = crate::db::schema::events::table
        .filter(crate::db::schema::events::event_id.eq_any(&ids))
        .count()
        .get_result(&mut conn)?;
    report.check(
        "postgres: every generated event id is there",
        found == expected,
        format!("{found} of {expected} found"),
    );
    report.check(
        "both sinks hold the same set of events",
        after.pg_ids_hash == after.lake_ids_hash,
        format!("{} vs {}", after.pg_ids_hash, after.lake_ids_hash),
    );
    // A deleted event's own record is `accepted` when it was decided before its
    // tombstone (on another partition) and `deleted` after: only their sum is fixed.
    let delta = |o: &str| {
        after.outcomes.get(o).copied().unwrap_or(0) - before.outcomes.get(o).copied().unwrap_or(0)
    };
    let sent = |o: &str| traffic.kinds.get(o).copied().unwrap_or(0);
    let mut deltas = vec![format!(
        "accepted+deleted {}/{}",
        delta("accepted") + delta("deleted"),
        sent("accepted") + sent("deleted")
    )];
    let mut same = delta("accepted") + delta("deleted") == sent("accepted") + sent("deleted")
        && delta("deleted") >= sent("deleted");
    for o in ["duplicate", "conflict", "invalidated", "dead_letter"] {
        deltas.push(format!("{o} {}/{}", delta(o), sent(o)));
        same &= delta(o) == sent(o);
    }
    report.check("P1: one outcome per record sent, as generated", same, deltas.join(", "));
    let left: Vec<&String> =
        traffic.deleted_ids.iter().filter(|id| lake.iter().any(|r| &r.event_id == *id)).collect();
    report.check(
        "deleted events are in neither sink",
        left.is_empty(),
        format!("{} deleted; {} still read from the lake", traffic.deleted_ids.len(), left.len()),
    );
    report.check(
        "offsets committed to the end",
        after.committed == after.high_watermarks,
        format!("{:?} vs {:?}", after.committed, after.high_watermarks),
    );
    Ok(())
}

/// Where `replay --rebuild-lake` moved the lake: a folder, or a prefix in the bucket.
pub(super) enum Aside {
    Folder(std::path::PathBuf),
    Prefix(LakeStore, String),
}

impl Aside {
    pub(super) fn describe(&self) -> String {
        match self {
            Aside::Folder(path) => path.display().to_string(),
            Aside::Prefix(_, root) => root.clone(),
        }
    }

    /// Deletes the old lake once the rebuilt one passed.
    pub(super) fn remove(&self) {
        match self {
            Aside::Folder(path) => {
                let _ = std::fs::remove_dir_all(path);
            }
            Aside::Prefix(store, _) => {
                for object in store.list_everything().unwrap_or_default() {
                    let _ = store.delete(&object.path);
                }
            }
        }
    }
}

/// Samples both sinks' progress while waiting for the drain: (elapsed, pg, lake). The
/// drain counts only once `sending` has finished (traffic may still be on its way).
pub(super) fn drain_sampling(
    ctx: &DrillContext,
    start: Instant,
    sending: &std::thread::JoinHandle<Result<Traffic, StepError>>,
) -> Result<Vec<(Duration, i64, i64)>, StepError> {
    let s = &ctx.settings;
    let mut samples = Vec::new();
    wait_for("both sinks stored everything up to the end of the topic", ctx.timeout, || {
        let (pg, lake) = progress_sums(ctx)?;
        samples.push((start.elapsed(), pg, lake));
        if !sending.is_finished() {
            return Ok(false);
        }
        let end: i64 =
            kafka_ops::watermarks(&s.kafka, &s.kafka.topic)?.iter().map(|(_, h)| h).sum();
        Ok(pg == end && lake == end)
    })?;
    Ok(samples)
}

/// `verify --against FILE`: every event sent is in both sinks (but those a sink refused
/// for good), with the ingestion figures of the seed's validation script.
pub(super) fn check_against(
    ctx: &DrillContext,
    report: &mut Report,
    conn: &mut diesel::PgConnection,
    path: &std::path::Path,
    stored: &Stored,
) -> DrillResult {
    let Stored { pg_ids, lake_ids, pg_invalid, lake_invalid } = stored;
    use super::against::{missing, read_sent};
    use diesel::prelude::*;
    let text = std::fs::read_to_string(path)
        .map_err(StepError::io(format!("reading {}", path.display())))?;
    let sent = read_sent(&text, &ctx.contracts);
    report.step(format!(
        "compared with {}: {} lines, {} distinct valid events",
        path.display(),
        sent.lines,
        sent.expected.len()
    ));
    let ids: Vec<uuid::Uuid> = sent.to_hold().copied().collect();
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        event_id: uuid::Uuid,
    }
    let ids_where =
        |sql: &str, conn: &mut diesel::PgConnection| -> Result<BTreeSet<uuid::Uuid>, StepError> {
            Ok(diesel::sql_query(sql)
                .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(&ids)
                .load::<Id>(conn)
                .map_err(crate::db::DbError::from)?
                .into_iter()
                .map(|row| row.event_id)
                .collect())
        };
    let refused = ids_where(
        "SELECT event_id FROM processed_events WHERE sink_rejected IS NOT NULL AND event_id = ANY($1)",
        conn,
    )?;
    let late = ids_where("SELECT event_id FROM events WHERE late AND event_id = ANY($1)", conn)?;
    let text_of = |id: &uuid::Uuid| id.hyphenated().to_string();
    let in_pg = |id: &uuid::Uuid| pg_ids.contains(&text_of(id));
    let in_lake = |id: &uuid::Uuid| lake_ids.contains(text_of(id).as_str());
    let is_refused = |id: &uuid::Uuid| refused.contains(id);
    let list = |ids: &[uuid::Uuid]| {
        let shown: Vec<String> = ids.iter().take(20).map(text_of).collect();
        match ids.len() > 20 {
            true => format!("{} … ({} in all)", shown.join(", "), ids.len()),
            false => shown.join(", "),
        }
    };
    let expected = ids.len() as i64 - refused.len() as i64;
    let must_be_invalid = sent.to_hold_invalid();
    let pg_is_invalid = |id: &uuid::Uuid| pg_invalid.contains(&text_of(id));
    let lake_is_invalid = |id: &uuid::Uuid| lake_invalid.contains(text_of(id).as_str());
    for (sink, stored, invalid) in [
        (
            "Postgres",
            &in_pg as &dyn Fn(&uuid::Uuid) -> bool,
            &pg_is_invalid as &dyn Fn(&uuid::Uuid) -> bool,
        ),
        ("the lake", &in_lake, &lake_is_invalid),
    ] {
        let kept: Vec<uuid::Uuid> = sent.deleted.iter().filter(|id| stored(id)).copied().collect();
        report.check(
            &format!("no deleted event is in {sink}"),
            kept.is_empty(),
            match kept.is_empty() {
                true => format!("{} deleted", sent.deleted.len()),
                false => format!("still in {sink}: {}", list(&kept)),
            },
        );
        let wrong: Vec<uuid::Uuid> = ids
            .iter()
            .filter(|id| stored(id) && invalid(id) != must_be_invalid.contains(id))
            .copied()
            .collect();
        report.check(
            &format!("exactly the invalidated events are invalid in {sink}"),
            wrong.is_empty(),
            match wrong.is_empty() {
                true => format!("{} invalid", must_be_invalid.len()),
                false => format!("validity wrong in {sink}: {}", list(&wrong)),
            },
        );
        let absent = missing(&sent, stored, &is_refused);
        report.check(
            &format!("every event sent is in {sink}"),
            absent.is_empty(),
            match absent.is_empty() {
                true => format!("{expected} of {expected}"),
                false => format!("missing from {sink}: {}", list(&absent)),
            },
        );
        let rate = 100.0 * (expected - absent.len() as i64) as f64 / expected.max(1) as f64;
        report.figure(&format!("ingestion success rate, {sink} (%)"), "", format!("{rate:.2}"));
    }
    report.figure("sent: lines", "", sent.lines);
    report.figure("sent: distinct valid events", "", sent.expected.len());
    report.figure("sent: duplicates", "", sent.duplicates);
    report.figure("sent: conflicts", "", sent.conflicts);
    report.figure("sent: invalid (dead letters)", "", sent.invalid);
    report.figure("sent: invalidations", "", sent.invalidated.len());
    report.figure("sent: deletions", "", sent.deleted.len());
    report.figure("sent: copies of deleted events", "", sent.deleted_copies);
    report.figure(
        "sent: tombstones not keyed by an event id (entity deletions)",
        "",
        sent.tombstones,
    );
    report.figure("sent events refused by a sink", "", refused.len());
    report.figure("sent events stored late", "", late.len());
    Ok(())
}

/// What each sink holds, for [`check_against`].
pub(super) struct Stored<'a> {
    pub(super) pg_ids: &'a BTreeSet<String>,
    pub(super) lake_ids: &'a BTreeSet<&'a str>,
    pub(super) pg_invalid: &'a BTreeSet<String>,
    pub(super) lake_invalid: &'a BTreeSet<&'a str>,
}

/// While the lake writer was down (first failure to recovery), Postgres kept storing.
pub(super) fn check_kept_storing(
    report: &mut Report,
    entries: &[crate::telemetry::supervision_log::Entry],
    samples: &[(Duration, i64, i64)],
    drill_start: chrono::DateTime<chrono::Utc>,
) {
    let first_failure = entries.iter().find(|e| e.kind == EntryKind::Failure).map(|e| e.at);
    let recovered = entries.iter().find(|e| e.kind == EntryKind::Recovered).map(|e| e.at);
    let progressed = match (first_failure, recovered) {
        (Some(f), Some(r)) => {
            let offset = |t: chrono::DateTime<chrono::Utc>| {
                Duration::from_millis((t - drill_start).num_milliseconds().max(0) as u64)
            };
            let (from, to) = (offset(f), offset(r));
            let window: Vec<_> =
                samples.iter().filter(|(t, _, _)| *t >= from && *t <= to).collect();
            match (window.first(), window.last()) {
                (Some(a), Some(b)) => Some((a.1, b.1)),
                _ => None,
            }
        }
        _ => None,
    };
    report.check(
        "postgres kept storing while parquet_writer was down",
        progressed.is_some_and(|(a, b)| b > a),
        match progressed {
            Some((a, b)) => {
                format!("postgres progress went from {a} to {b} records during the downtime")
            }
            None => "no sample fell inside the downtime window".into(),
        },
    );
}
