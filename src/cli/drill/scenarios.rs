//! The drills themselves.

use super::inspect::{pg_counts, pg_per_day, snapshot, Snapshot};
use super::kafka_ops;
use super::processor::{wait_for, ChildProcessor};
use super::report::Report;
use super::{DrillContext, DrillName, DrillSink, StepError};
use crate::cli::generator::{Generator, GeneratorConfig, Kind};
use crate::cli::publisher::Publisher;
use crate::db;
use crate::sinks::lake::reader::LakeRow;
use crate::sinks::lake::store::LakeStore;
use crate::sinks::lake::table::LakeTableError;
use crate::telemetry::supervision_log::{read_log, EntryKind};
use diesel::prelude::*;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

type DrillResult = Result<(), StepError>;

/// Runs one drill and returns its report (an error inside becomes a failed check).
pub fn run(name: DrillName, ctx: &DrillContext) -> Report {
    let started = Instant::now();
    let mut report = Report::new(name.as_str());
    let result = match name {
        DrillName::Verify => verify(ctx, &mut report),
        DrillName::Replay => replay(ctx, &mut report),
        DrillName::Resend => resend(ctx, &mut report),
        DrillName::SinkCrash => sink_crash(ctx, &mut report),
        DrillName::Kill => kill(ctx, &mut report),
        DrillName::DbOutage => db_outage(ctx, &mut report),
    };
    if let Err(error) = result {
        report.check("drill ran to completion", false, error.to_string());
    }
    report.duration_s = started.elapsed().as_secs_f64();
    report
}

fn snap(ctx: &DrillContext) -> Result<(Snapshot, Vec<LakeRow>), StepError> {
    let s = &ctx.settings;
    let store = LakeStore::from_settings(&s.lake).map_err(LakeTableError::from)?;
    snapshot(&ctx.pool, &store, &s.kafka, &s.kafka.group_id, &s.kafka.topic)
}

fn processor_log(ctx: &DrillContext, drill: &str) -> std::path::PathBuf {
    let _ = std::fs::create_dir_all(&ctx.reports_dir);
    ctx.reports_dir.join(format!("drill-{drill}-processor.log"))
}

fn require_idle_group(ctx: &DrillContext) -> DrillResult {
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
fn settle(ctx: &DrillContext, report: &mut Report, drill: &str) -> DrillResult {
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
fn progress_sums(ctx: &DrillContext) -> Result<(i64, i64), StepError> {
    let s = &ctx.settings;
    let n = kafka_ops::partitions(&s.kafka, &s.kafka.topic)?;
    let mut conn = db::conn(&ctx.pool)?;
    let (mut pg, mut lake) = (0, 0);
    // The lake first: it never passes Postgres, so read in this order a sample never
    // shows it ahead either.
    let store = LakeStore::from_settings(&s.lake).map_err(LakeTableError::from)?;
    let tables = crate::sinks::lake::writer::LakeTables::open(&store)?;
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
fn wait_drained(ctx: &DrillContext) -> DrillResult {
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
struct Traffic {
    kinds: BTreeMap<&'static str, i64>,
    /// Ids that must end up stored: the valid events not deleted later.
    accepted_ids: BTreeSet<String>,
    deleted_ids: BTreeSet<String>,
}

fn traffic_config(ctx: &DrillContext) -> GeneratorConfig {
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

fn send_traffic(ctx: &DrillContext, rate: Option<f64>) -> Result<Traffic, StepError> {
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

fn table_figures(report: &mut Report, before: &Snapshot, after: &Snapshot) {
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
fn check_exactly_once(
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

fn verify(ctx: &DrillContext, report: &mut Report) -> DrillResult {
    report.step(format!(
        "reconciling Postgres and the lake for topic {} (no traffic)",
        ctx.settings.kafka.topic
    ));
    let (snap, lake) = snap(ctx)?;
    let mut conn = db::conn(&ctx.pool)?;
    let topic = ctx.settings.kafka.topic.as_str();
    let pg_days = pg_per_day(&mut conn, topic)?;
    let mut lake_days: BTreeMap<(String, String), i64> = BTreeMap::new();
    let mut lake_count: HashMap<&str, i64> = HashMap::new();
    for row in &lake {
        *lake_days.entry((row.event_type.clone(), row.day.clone())).or_default() += 1;
        *lake_count.entry(row.event_id.as_str()).or_default() += 1;
    }
    let keys: BTreeSet<_> = pg_days.keys().chain(lake_days.keys()).collect();
    let diffs: Vec<String> = keys
        .iter()
        .filter(|k| pg_days.get(k) != lake_days.get(k))
        .map(|(t, d)| {
            format!(
                "{t} {d}: postgres {} lake {}",
                pg_days.get(&(t.clone(), d.clone())).unwrap_or(&0),
                lake_days.get(&(t.clone(), d.clone())).unwrap_or(&0)
            )
        })
        .collect();
    report.check(
        "same events per day and event type",
        diffs.is_empty(),
        if diffs.is_empty() {
            format!("{} (type, day) groups agree", keys.len())
        } else {
            diffs.join("; ")
        },
    );
    let pg_ids: BTreeSet<String> = super::inspect::pg_ids(&mut conn, topic)?.into_iter().collect();
    let only_pg: Vec<&String> =
        pg_ids.iter().filter(|id| !lake_count.contains_key(id.as_str())).collect();
    let only_lake: Vec<&&str> = lake_count.keys().filter(|id| !pg_ids.contains(**id)).collect();
    let list = |v: Vec<String>| {
        if v.len() > 20 {
            format!("{} … ({} in all)", v[..20].join(", "), v.len())
        } else {
            v.join(", ")
        }
    };
    report.check(
        "every Postgres event is in the lake",
        only_pg.is_empty(),
        if only_pg.is_empty() {
            format!("{} events", pg_ids.len())
        } else {
            format!(
                "missing from the lake: {}",
                list(only_pg.iter().map(|s| s.to_string()).collect())
            )
        },
    );
    report.check(
        "every lake event is in Postgres",
        only_lake.is_empty(),
        if only_lake.is_empty() {
            format!("{} distinct ids", lake_count.len())
        } else {
            format!(
                "missing from Postgres: {}",
                list(only_lake.iter().map(|s| s.to_string()).collect())
            )
        },
    );
    let doubled: Vec<String> =
        lake_count.iter().filter(|(_, n)| **n > 1).map(|(id, n)| format!("{id} x{n}")).collect();
    report.check(
        "no event id twice in the lake",
        doubled.is_empty(),
        if doubled.is_empty() {
            format!("{} rows, {} distinct", lake.len(), lake_count.len())
        } else {
            list(doubled)
        },
    );
    let (tables, outcomes) = pg_counts(&mut conn, topic)?;
    let get = |m: &BTreeMap<String, i64>, k: &str| m.get(k).copied().unwrap_or(0);
    report.check(
        "no event id twice in Postgres",
        get(&tables, "events") == pg_ids.len() as i64,
        format!("{} rows, {} distinct (primary key)", get(&tables, "events"), pg_ids.len()),
    );
    let pg_invalid: BTreeSet<String> =
        super::inspect::pg_invalid_ids(&mut conn, topic)?.into_iter().collect();
    let lake_invalid: BTreeSet<&str> =
        lake.iter().filter(|r| !r.valid).map(|r| r.event_id.as_str()).collect();
    let differ: Vec<String> = pg_invalid
        .iter()
        .filter(|id| !lake_invalid.contains(id.as_str()))
        .map(|id| format!("{id} invalid in Postgres only"))
        .chain(
            lake_invalid
                .iter()
                .filter(|id| !pg_invalid.contains(**id))
                .map(|id| format!("{id} invalid in the lake only")),
        )
        .collect();
    report.check(
        "the same events invalidated in both sinks",
        differ.is_empty(),
        if differ.is_empty() { format!("{} invalidated", pg_invalid.len()) } else { list(differ) },
    );
    // An accepted event deleted later is gone from `events`; a deleted event decided
    // after its tombstone was counted `deleted`, not `accepted`.
    let (accepted, stored) = (get(&outcomes, "accepted"), get(&tables, "events"));
    let deleted = super::inspect::pg_deleted_first_sightings(&mut conn, topic)?;
    report.check(
        "accepted outcomes accounted for in events",
        stored <= accepted && accepted <= stored + deleted,
        format!("{accepted} accepted, {stored} rows, {deleted} first sightings deleted since"),
    );
    report.check(
        "dead_letter outcomes accounted for in dead_letters",
        get(&outcomes, "dead_letter") == get(&tables, "dead_letters"),
        format!(
            "{} outcomes, {} rows",
            get(&outcomes, "dead_letter"),
            get(&tables, "dead_letters")
        ),
    );
    // A deletion erases the conflicting versions of its event too.
    report.check(
        "conflict outcomes accounted for in conflicts",
        get(&outcomes, "conflict") >= get(&tables, "conflicts"),
        format!("{} outcomes, {} rows", get(&outcomes, "conflict"), get(&tables, "conflicts")),
    );
    if let Some(path) = &ctx.against {
        let lake_ids: BTreeSet<&str> = lake_count.keys().copied().collect();
        let stored = Stored {
            pg_ids: &pg_ids,
            lake_ids: &lake_ids,
            pg_invalid: &pg_invalid,
            lake_invalid: &lake_invalid,
        };
        check_against(ctx, report, &mut conn, path, &stored)?;
    }
    report.figure("events in postgres", "", snap.pg_events);
    report.figure("events in the lake", "", snap.lake_rows);
    report.figure("dead letters", "", get(&tables, "dead_letters"));
    report.figure("lake files", "", snap.lake_files);
    Ok(())
}

fn replay(ctx: &DrillContext, report: &mut Report) -> DrillResult {
    let s = &ctx.settings;
    settle(ctx, report, "replay")?;
    let (before, _) = snap(ctx)?;
    let targets = kafka_ops::rewind_group(&s.kafka, &s.kafka.group_id, &s.kafka.topic, ctx.rewind)?;
    report.step(format!(
        "rewound group {} to {targets:?} (from {:?})",
        s.kafka.group_id, before.committed
    ));
    let log = processor_log(ctx, "replay");
    let child = ChildProcessor::start(&[], &log)?;
    report.step(format!(
        "started a processor (pid {}) and let it run to the high watermarks",
        child.pid()
    ));
    wait_for("the group's offsets are back at the end", ctx.timeout, || {
        let c = kafka_ops::committed(&s.kafka, &s.kafka.group_id, &s.kafka.topic)?;
        let h: Vec<i64> =
            kafka_ops::watermarks(&s.kafka, &s.kafka.topic)?.into_iter().map(|(_, h)| h).collect();
        Ok(c == h)
    })?;
    let code = child.stop(Duration::from_secs(60))?;
    let (after, _) = snap(ctx)?;
    table_figures(report, &before, &after);
    report.check("processor exited cleanly", code == 0, format!("exit code {code}"));
    report.check(
        "postgres: nothing added, nothing lost",
        before.tables == after.tables && before.pg_ids_hash == after.pg_ids_hash,
        format!("{} events before, {} after", before.pg_events, after.pg_events),
    );
    report.check(
        "lake: nothing added, nothing lost",
        before.lake_rows == after.lake_rows && before.lake_ids_hash == after.lake_ids_hash,
        format!("{} rows before, {} after", before.lake_rows, after.lake_rows),
    );
    report.check(
        "the same outcomes",
        before.outcomes == after.outcomes,
        format!("{:?}", after.outcomes),
    );
    if !ctx.rebuild_lake {
        return Ok(());
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    let store = LakeStore::from_settings(&s.lake).map_err(LakeTableError::from)?;
    let aside = if store.local_root().is_some() {
        let aside = ctx.reports_dir.join(format!("lake-before-replay-{stamp}"));
        std::fs::create_dir_all(&ctx.reports_dir)
            .map_err(StepError::io("creating the reports folder"))?;
        std::fs::rename(&s.lake.root, &aside)
            .map_err(StepError::io(format!("moving the lake aside to {}", aside.display())))?;
        Aside::Folder(aside)
    } else {
        // Object storage has no rename: copy every object under a sibling prefix, then
        // delete the originals.
        let mut lake = s.lake.clone();
        let root = s.lake.root.display().to_string();
        lake.root = format!("{}-before-replay-{stamp}", root.trim_end_matches('/')).into();
        let copy = LakeStore::from_settings(&lake).map_err(LakeTableError::from)?;
        let failed = |e: crate::sinks::lake::store::StoreError| {
            StepError::Failed(format!("moving the lake aside to {}: {e}", lake.root.display()))
        };
        let objects = store.list_everything().map_err(failed)?;
        for object in &objects {
            copy.put(&object.path, store.get(&object.path).map_err(failed)?.to_vec())
                .map_err(failed)?;
        }
        for object in &objects {
            store.delete(&object.path).map_err(failed)?;
        }
        Aside::Prefix(copy, lake.root.display().to_string())
    };
    report.step(format!(
        "moved the lake aside to {} and replayed the whole log into a new one",
        aside.describe()
    ));
    let child = ChildProcessor::start(&[], &log)?;
    wait_drained(ctx)?;
    let code = child.stop(Duration::from_secs(60))?;
    let (rebuilt, _) = snap(ctx)?;
    report.figure("events in the rebuilt lake", after.lake_rows, rebuilt.lake_rows);
    report.check(
        "rebuilt lake: exactly the same events",
        rebuilt.lake_rows == after.lake_rows
            && rebuilt.lake_distinct == rebuilt.lake_rows
            && rebuilt.lake_ids_hash == after.lake_ids_hash,
        format!(
            "{} rows, {} distinct, hash {} (was {})",
            rebuilt.lake_rows, rebuilt.lake_distinct, rebuilt.lake_ids_hash, after.lake_ids_hash
        ),
    );
    report.check(
        "rebuild left Postgres and the outcomes alone",
        rebuilt.tables == after.tables && rebuilt.outcomes == after.outcomes,
        format!("exit code {code}"),
    );
    if report.passed {
        aside.remove();
    }
    Ok(())
}

/// Where `replay --rebuild-lake` moved the lake: a folder, or a prefix in the bucket.
enum Aside {
    Folder(std::path::PathBuf),
    Prefix(LakeStore, String),
}

impl Aside {
    fn describe(&self) -> String {
        match self {
            Aside::Folder(path) => path.display().to_string(),
            Aside::Prefix(_, root) => root.clone(),
        }
    }

    /// Deletes the old lake once the rebuilt one passed.
    fn remove(&self) {
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

fn resend(ctx: &DrillContext, report: &mut Report) -> DrillResult {
    let s = &ctx.settings;
    settle(ctx, report, "resend")?;
    let mut conn = db::conn(&ctx.pool)?;
    use crate::db::schema::events::dsl as e;
    let coords: Vec<(i32, i64)> = e::events
        .filter(e::topic.eq(&s.kafka.topic))
        .select((e::partition, e::offset))
        .order(diesel::dsl::sql::<diesel::sql_types::Integer>("random()"))
        .limit(ctx.resend as i64)
        .load(&mut conn)?;
    if coords.is_empty() {
        return Err(StepError::Failed(
            "no processed events to resend: run some traffic first".into(),
        ));
    }
    let originals = kafka_ops::fetch_records(&s.kafka, &s.kafka.topic, &coords)?;
    let (before, _) = snap(ctx)?;
    let mut publisher = Publisher::new(&s.kafka, &s.kafka.topic)?;
    for (key, value) in &originals {
        publisher
            .send(&String::from_utf8_lossy(key.as_deref().unwrap_or_default()), value.as_deref())?;
    }
    publisher.finish(Duration::from_secs(60))?;
    report.step(format!(
        "re-published {} already-processed events, original bytes and keys",
        originals.len()
    ));
    let child = ChildProcessor::start(&[], &processor_log(ctx, "resend"))?;
    wait_drained(ctx)?;
    let code = child.stop(Duration::from_secs(60))?;
    let (after, _) = snap(ctx)?;
    table_figures(report, &before, &after);
    let delta = |o: &str| {
        after.outcomes.get(o).copied().unwrap_or(0) - before.outcomes.get(o).copied().unwrap_or(0)
    };
    report.check(
        "every resent event counted as a duplicate",
        delta("duplicate") == originals.len() as i64
            && delta("accepted") == 0
            && delta("conflict") == 0,
        format!(
            "duplicate +{}, accepted +{}, conflict +{} for {} resent",
            delta("duplicate"),
            delta("accepted"),
            delta("conflict"),
            originals.len()
        ),
    );
    report.check(
        "nothing added to Postgres",
        before.pg_ids_hash == after.pg_ids_hash && before.pg_events == after.pg_events,
        format!("{} events before and {} after", before.pg_events, after.pg_events),
    );
    report.check(
        "nothing added to the lake",
        before.lake_ids_hash == after.lake_ids_hash && before.lake_rows == after.lake_rows,
        format!("{} rows before and {} after", before.lake_rows, after.lake_rows),
    );
    report.check("processor exited cleanly", code == 0, format!("exit code {code}"));
    Ok(())
}

/// Samples both sinks' progress while waiting for the drain: (elapsed, pg, lake). The
/// drain counts only once `sending` has finished (traffic may still be on its way).
fn drain_sampling(
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

fn sink_crash(ctx: &DrillContext, report: &mut Report) -> DrillResult {
    let (actor, fault_key) = match ctx.sink {
        DrillSink::Postgres => ("postgres_writer", "EVENTLINE__FAULTS__POSTGRES"),
        DrillSink::Parquet => ("parquet_writer", "EVENTLINE__FAULTS__PARQUET"),
    };
    settle(ctx, report, "sink-crash")?;
    let (before, _) = snap(ctx)?;
    let drill_start = chrono::Utc::now();
    let start = Instant::now();
    let child = ChildProcessor::start(
        &[
            (fault_key, "error,panic,error"),
            ("EVENTLINE__FAULTS__AFTER_BATCHES", "3"),
            ("EVENTLINE__SUPERVISION__BACKOFF_INITIAL_MS", "1000"),
            ("EVENTLINE__PIPELINE__BATCH_MAX_RECORDS", "500"),
        ],
        &processor_log(ctx, "sink-crash"),
    )?;
    report.step(format!("started a processor (pid {}) whose {actor} fails with an error, a panic and an error after 3 batches", child.pid()));
    // Paced over about 10 s, so records keep coming while the failing sink is down (its
    // backoff is 1 + 2 + 4 s): the other sink must keep storing them. Sent all at once,
    // the whole drill fits in the sinks' queues and the other sink is done before the
    // failures start, which proves nothing.
    let traffic_ctx = ctx.clone();
    let rate = (ctx.events as f64 / 10.0).max(100.0);
    let sender = std::thread::spawn(move || send_traffic(&traffic_ctx, Some(rate)));
    let samples = drain_sampling(ctx, start, &sender)?;
    let traffic =
        sender.join().map_err(|_| StepError::Failed("traffic thread panicked".into()))??;
    report
        .step(format!("sent {} generated records (seed {}) at {rate:.0}/s", ctx.events, ctx.seed));
    let code = child.stop(Duration::from_secs(60))?;
    let (after, lake) = snap(ctx)?;
    table_figures(report, &before, &after);
    check_exactly_once(ctx, report, &before, &after, &lake, &traffic)?;
    let entries: Vec<_> = read_log(&ctx.settings.supervision.log_path)
        .map_err(StepError::io("reading the supervision log"))?
        .into_iter()
        .filter(|e| e.at >= drill_start && e.actor == actor)
        .collect();
    let count = |k: EntryKind| entries.iter().filter(|e| e.kind == k).count();
    let downtime = entries.iter().filter_map(|e| e.downtime_ms).max().unwrap_or(0);
    report.check("the failing sink was restarted and recovered", count(EntryKind::Restart) >= 3 && count(EntryKind::Recovered) >= 1, format!(
        "{} failures, {} restarts, {} recoveries in the supervision log; longest downtime {downtime} ms",
        count(EntryKind::Failure),
        count(EntryKind::Restart),
        count(EntryKind::Recovered)
    ));
    match ctx.sink {
        DrillSink::Parquet => check_kept_storing(report, &entries, &samples, drill_start),
        DrillSink::Postgres => {
            // The lake publishes only what Postgres has stored (a record Postgres refuses
            // must stay out of both), so while the Postgres writer is down the lake holds
            // its buffers; what it must never do is run ahead of Postgres.
            let ahead = samples.iter().filter(|(_, pg, lake)| lake > pg).count();
            report.check(
                "the lake never ran ahead of postgres while postgres_writer was down",
                ahead == 0,
                format!("{ahead} of {} samples had the lake ahead of Postgres", samples.len()),
            );
        }
    }
    report.check("processor exited cleanly", code == 0, format!("exit code {code}"));
    Ok(())
}

/// `verify --against FILE`: every event sent is in both sinks (but those a sink refused
/// for good), with the ingestion figures of the seed's validation script.
fn check_against(
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
struct Stored<'a> {
    pg_ids: &'a BTreeSet<String>,
    lake_ids: &'a BTreeSet<&'a str>,
    pg_invalid: &'a BTreeSet<String>,
    lake_invalid: &'a BTreeSet<&'a str>,
}

/// While the lake writer was down (first failure to recovery), Postgres kept storing.
fn check_kept_storing(
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

fn kill(ctx: &DrillContext, report: &mut Report) -> DrillResult {
    settle(ctx, report, "kill")?;
    let (before, _) = snap(ctx)?;
    let log = processor_log(ctx, "kill");
    let traffic_ctx = ctx.clone();
    let sender = std::thread::spawn(move || send_traffic(&traffic_ctx, Some(20_000.0)));
    let mut rng = rand::thread_rng();
    let mut killed_at = Vec::new();
    for _ in 0..ctx.kills {
        let (start_pg, _) = progress_sums(ctx)?;
        let child = ChildProcessor::start(&[], &log)?;
        // Kill while it works: after it has stored something (a killed member's partitions
        // only move after the session timeout), at a random moment.
        wait_for("the restarted processor stores records", ctx.timeout, || {
            Ok(progress_sums(ctx)?.0 > start_pg
                || sender.is_finished() && progress_sums(ctx)?.0 >= start_pg)
        })?;
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..1_500)));
        let (pg, _) = progress_sums(ctx)?;
        killed_at.push(pg);
        child.kill();
    }
    report.step(format!("killed the processor with SIGKILL {} times at random moments (postgres progress then: {killed_at:?})", ctx.kills));
    let traffic =
        sender.join().map_err(|_| StepError::Failed("traffic thread panicked".into()))??;
    report.step(format!(
        "sent {} generated records (seed {}) meanwhile; restarted the processor once more",
        ctx.events, ctx.seed
    ));
    let child = ChildProcessor::start(&[], &log)?;
    wait_drained(ctx)?;
    let code = child.stop(Duration::from_secs(60))?;
    let (after, lake) = snap(ctx)?;
    table_figures(report, &before, &after);
    check_exactly_once(ctx, report, &before, &after, &lake, &traffic)?;
    report.check(
        "processor exited cleanly after the last restart",
        code == 0,
        format!("exit code {code}"),
    );
    Ok(())
}

fn db_outage(ctx: &DrillContext, report: &mut Report) -> DrillResult {
    settle(ctx, report, "db-outage")?;
    let (before, _) = snap(ctx)?;
    let drill_start = chrono::Utc::now();
    let mut child = ChildProcessor::start(&[], &processor_log(ctx, "db-outage"))?;
    let traffic_ctx = ctx.clone();
    let sender = std::thread::spawn(move || send_traffic(&traffic_ctx, Some(10_000.0)));
    wait_for("Postgres is storing events", ctx.timeout, || {
        Ok(progress_sums(ctx).map(|(pg, _)| pg).unwrap_or(0) > before.pg_events)
    })?;
    let shell = |cmd: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .status()
            .map_err(StepError::io(format!("running `{cmd}`")))
            .and_then(|s| match s.success() {
                true => Ok(()),
                false => Err(StepError::Failed(format!("`{cmd}` failed: {s}"))),
            })
    };
    shell(&ctx.pg_stop)?;
    report
        .step(format!("stopped Postgres (`{}`) during traffic for {:?}", ctx.pg_stop, ctx.outage));
    std::thread::sleep(ctx.outage); // the outage itself, not a synchronisation
    let survived = child.alive();
    shell(&ctx.pg_start)?;
    report.step(format!("started Postgres again (`{}`)", ctx.pg_start));
    let traffic =
        sender.join().map_err(|_| StepError::Failed("traffic thread panicked".into()))??;
    wait_drained(ctx)?;
    let code = child.stop(Duration::from_secs(60))?;
    let (after, lake) = snap(ctx)?;
    table_figures(report, &before, &after);
    check_exactly_once(ctx, report, &before, &after, &lake, &traffic)?;
    let failures = read_log(&ctx.settings.supervision.log_path)
        .map_err(StepError::io("reading the supervision log"))?
        .into_iter()
        .filter(|e| e.at >= drill_start && e.kind == EntryKind::Failure)
        .count();
    report.check("the processor rode out the outage", survived && code == 0, format!("alive during the outage: {survived}; exit code {code}; {failures} writer failures logged"));
    Ok(())
}
