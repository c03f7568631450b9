//! The drills themselves; the steps they share are in [`super::steps`].

use super::inspect::{pg_counts, pg_per_day};
use super::kafka_ops;
use super::processor::{wait_for, ChildProcessor};
use super::report::Report;
use super::steps::*;
use super::{DrillContext, DrillName, DrillSink, StepError};
use crate::cli::publisher::Publisher;
use crate::db;
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
