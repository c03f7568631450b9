//! `eventline dlq replay`: sends dead letters back to their source topic, once the
//! contract (or the code) that refused them is fixed.
//!
//! The dead letters come from the `dead_letters` table: it holds each one exactly once,
//! with its raw key and value, its headers, its class and its coordinates. Each selected
//! letter is checked against the contracts as they are now; only those that pass now are
//! sent, to the partition they came from, with their headers and one more,
//! `eventline.redriven_from` = `topic/partition/offset`. Every re-drive is recorded in
//! `dlq_redrives`, so a letter is re-driven at most once however often the command runs.
//! The claim and the sends share one transaction: the rows are committed only after
//! the broker confirmed every record, and a second run waits for a first one on the
//! same letters. A crash after the broker confirmed and before the commit leaves the
//! letters unclaimed: a second run sends them again, and the processor's dedup counts
//! those copies as `duplicate` (the same `event_id` and content), so nothing is stored
//! twice.

use crate::cli::console::out;
use crate::cli::supervision::parse_since;
use crate::record::{Coords, ErrorClass, SourceRecord};
use crate::settings::Settings;
use crate::stages::contract::{ContractLoadError, Contracts};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Integer, Nullable, Text, Timestamptz};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;
use std::time::Duration;

/// The header a re-driven record carries: where its dead letter was read.
pub const REDRIVEN_FROM: &str = "eventline.redriven_from";

/// `eventline dlq ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DlqCommand {
    /// Send dead letters back to their source topic once they pass the current
    /// contracts; each dead letter at most once (recorded in `dlq_redrives`).
    Replay(ReplayArgs),
}

/// Which dead letters to re-drive (all filters combine).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayArgs {
    /// Only these error classes (comma separated or repeated), e.g. contract_violation.
    #[arg(long = "class", value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Only this event type.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Only dead letters rejected at or after this time (RFC 3339, or an age: 2h, 1d).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Only dead letters rejected before this time (RFC 3339, or an age).
    #[arg(long, value_parser = parse_since)]
    pub until: Option<DateTime<Utc>>,
    /// Only dead letters read from this topic (default: any).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only this source partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Only source offsets from this one on.
    #[arg(long)]
    pub from_offset: Option<i64>,
    /// Only source offsets up to this one (inclusive).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// At most this many dead letters, oldest coordinates first.
    #[arg(long)]
    pub limit: Option<i64>,
    /// Check and list, send nothing, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Why `dlq replay` failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A `--class` that is not an error class.
    #[error("--class: '{0}' is not an error class (one of: {classes})", classes = class_names().join(", "))]
    UnknownClass(String),
    /// The contracts did not load.
    #[error(transparent)]
    Contracts(#[from] ContractLoadError),
    /// Postgres failed; nothing was recorded.
    #[error("postgres: {0}")]
    Db(#[from] crate::db::DbError),
    /// A query failed; nothing was recorded.
    #[error("postgres: {0}")]
    Query(#[from] diesel::result::Error),
    /// The broker cannot be reached.
    #[error(transparent)]
    Unreachable(#[from] crate::source::consumer::ConnectError),
    /// The producer could not be made or a record was not confirmed; nothing was
    /// recorded, so running the command again re-drives the same letters.
    #[error("kafka (nothing recorded; run it again): {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The runtime that waits for the broker's confirmations could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Output(std::io::Error),
}

fn class_names() -> Vec<&'static str> {
    ErrorClass::ALL.iter().map(|c| c.as_str()).collect()
}

/// Where a dead letter was read: its key in `dead_letters` and `dlq_redrives`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, QueryableByName)]
pub struct Origin {
    #[diesel(sql_type = Text)]
    topic: String,
    #[diesel(sql_type = Integer)]
    partition: i32,
    #[diesel(sql_type = BigInt)]
    offset: i64,
}

/// Origins as the three arrays that `unnest` takes.
fn origin_arrays<'a>(
    origins: impl Iterator<Item = &'a Origin>,
) -> (Vec<String>, Vec<i32>, Vec<i64>) {
    let mut arrays = (Vec::new(), Vec::new(), Vec::new());
    for o in origins {
        arrays.0.push(o.topic.clone());
        arrays.1.push(o.partition);
        arrays.2.push(o.offset);
    }
    arrays
}

/// One dead letter as the table holds it, and whether it was re-driven.
#[derive(Debug, Clone, QueryableByName)]
pub struct Letter {
    #[diesel(embed)]
    origin: Origin,
    #[diesel(sql_type = Nullable<Bytea>)]
    record_key: Option<Vec<u8>>,
    #[diesel(sql_type = Nullable<Bytea>)]
    record_value: Option<Vec<u8>>,
    #[diesel(sql_type = Text)]
    headers: String,
    #[diesel(sql_type = Text)]
    error_class: String,
    #[diesel(sql_type = Nullable<Text>)]
    event_type: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    redriven_at: Option<DateTime<Utc>>,
}

impl Letter {
    fn coords(&self) -> String {
        let o = &self.origin;
        format!("{}/{}@{}", o.topic, o.partition, o.offset)
    }

    /// The headers it was read with (the table's JSON copy of them).
    fn original_headers(&self) -> Vec<(String, Option<Vec<u8>>)> {
        let parsed: serde_json::Value = serde_json::from_str(&self.headers).unwrap_or_default();
        parsed
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                let key = h["key"].as_str()?.to_string();
                Some((key, h["value"].as_str().map(|v| v.as_bytes().to_vec())))
            })
            .collect()
    }

    fn as_source_record(&self) -> SourceRecord {
        SourceRecord {
            coords: Coords {
                topic: Arc::from(self.origin.topic.as_str()),
                partition: self.origin.partition,
                offset: self.origin.offset,
            },
            key: self.record_key.clone(),
            value: self.record_value.clone(),
            headers: self.original_headers(),
            timestamp_ms: None,
        }
    }
}

/// What the current contracts say about a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Already re-driven (by an earlier run): not sent again.
    AlreadyRedriven {
        /// When.
        at: DateTime<Utc>,
    },
    /// It passes now: sent (or, with `--dry-run`, would be).
    PassesNow,
    /// It still fails, for this reason.
    StillFails {
        /// The class it would get now.
        class: &'static str,
        /// Which field, which rule.
        reason: String,
    },
}

/// Checks `letter` as the validator would check it now (pure: no I/O).
pub fn verdict(contracts: &Contracts, letter: &Letter) -> Verdict {
    if let Some(at) = letter.redriven_at {
        return Verdict::AlreadyRedriven { at };
    }
    let record = letter.as_source_record();
    let checked = match &record.value {
        None => {
            let entities = contracts.entities().names();
            crate::stages::tombstone::meaning(&record, 0, &entities).map(|_| ())
        }
        Some(value) => {
            // The transforms too: a `transform_failed` letter passes only once its rule does.
            let checked = contracts.check(Some(value.as_slice()), record.coords.clone(), None);
            checked.and_then(|event| contracts.transform(event)).map(|_| ())
        }
    };
    match checked {
        Ok(()) => Verdict::PassesNow,
        Err(rejection) => {
            Verdict::StillFails { class: rejection.class.as_str(), reason: rejection.reason }
        }
    }
}

const SELECT_LETTERS: &str = "\
    SELECT d.topic, d.\"partition\", d.\"offset\", d.record_key, d.record_value, d.headers::text AS headers, \
           d.error_class, d.event_type, r.redriven_at \
    FROM dead_letters d LEFT JOIN dlq_redrives r USING (topic, \"partition\", \"offset\") \
    WHERE (cardinality($1::text[]) = 0 OR d.error_class = ANY($1)) \
      AND ($2::text IS NULL OR d.event_type = $2) \
      AND ($3::timestamptz IS NULL OR d.rejected_at >= $3) \
      AND ($4::timestamptz IS NULL OR d.rejected_at < $4) \
      AND ($5::text IS NULL OR d.topic = $5) \
      AND ($6::int IS NULL OR d.\"partition\" = $6) \
      AND ($7::bigint IS NULL OR d.\"offset\" >= $7) \
      AND ($8::bigint IS NULL OR d.\"offset\" <= $8) \
    ORDER BY d.topic, d.\"partition\", d.\"offset\" \
    LIMIT $9";

/// Claims letters for this run: the rows another run holds wait for it, and the ones it
/// committed are skipped.
const CLAIM: &str = "\
    INSERT INTO dlq_redrives (topic, \"partition\", \"offset\") \
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[]) \
    ON CONFLICT DO NOTHING \
    RETURNING topic, \"partition\", \"offset\"";

const RECORD_DELIVERY: &str = "\
    UPDATE dlq_redrives r SET sent_partition = t.p, sent_offset = t.o \
    FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bigint[]) AS t(topic, part, off, p, o) \
    WHERE r.topic = t.topic AND r.\"partition\" = t.part AND r.\"offset\" = t.off";

/// What `dlq replay` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    /// Dead letters the filters selected.
    pub selected: usize,
    /// Of those, re-driven by an earlier run.
    pub already_redriven: usize,
    /// Of those, passing the current contracts.
    pub passing: usize,
    /// Of those, still failing.
    pub still_failing: usize,
    /// Sent to their source topic by this run (0 with `--dry-run`).
    pub sent: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// One line per selected dead letter.
    pub letters: Vec<LetterReport>,
}

/// One dead letter in the report.
#[derive(Debug, serde::Serialize)]
pub struct LetterReport {
    /// `topic/partition@offset`.
    pub coords: String,
    /// The class it was dead-lettered with.
    pub error_class: String,
    /// Its event type, if known.
    pub event_type: Option<String>,
    /// What the current contracts say.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Runs `eventline dlq ...`; exit 0 when it did what was asked.
pub fn run(settings: &Settings, command: DlqCommand) -> Result<i32, DlqError> {
    let DlqCommand::Replay(args) = command;
    for class in &args.classes {
        if !class_names().contains(&class.as_str()) {
            return Err(DlqError::UnknownClass(class.clone()));
        }
    }
    let contracts = Contracts::load(&settings.pipeline.contracts_dir, settings.into())?;
    let pool = crate::db::pool(&settings.postgres);
    let mut conn = crate::db::conn(&pool)?;
    crate::db::migrate(&mut conn)?;
    let letters: Vec<Letter> = diesel::sql_query(SELECT_LETTERS)
        .bind::<Array<Text>, _>(&args.classes)
        .bind::<Nullable<Text>, _>(&args.event_type)
        .bind::<Nullable<Timestamptz>, _>(args.since)
        .bind::<Nullable<Timestamptz>, _>(args.until)
        .bind::<Nullable<Text>, _>(&args.topic)
        .bind::<Nullable<Integer>, _>(args.partition)
        .bind::<Nullable<BigInt>, _>(args.from_offset)
        .bind::<Nullable<BigInt>, _>(args.to_offset)
        .bind::<BigInt, _>(args.limit.unwrap_or(i64::MAX))
        .load(&mut conn)?;
    let mut report =
        ReplayReport { selected: letters.len(), dry_run: args.dry_run, ..Default::default() };
    let mut passing = Vec::new();
    for letter in letters {
        let verdict = verdict(&contracts, &letter);
        match &verdict {
            Verdict::AlreadyRedriven { .. } => report.already_redriven += 1,
            Verdict::PassesNow => report.passing += 1,
            Verdict::StillFails { .. } => report.still_failing += 1,
        }
        report.letters.push(LetterReport {
            coords: letter.coords(),
            error_class: letter.error_class.clone(),
            event_type: letter.event_type.clone(),
            verdict: verdict.clone(),
        });
        if verdict == Verdict::PassesNow {
            passing.push(letter);
        }
    }
    if !args.dry_run && !passing.is_empty() {
        crate::source::consumer::probe(&settings.kafka)?;
        report.sent = redrive(settings, &mut conn, &passing)?;
    }
    out(&render(&report, args.json)).map_err(DlqError::Output)?;
    Ok(0)
}

/// Claims, sends and records `letters` in one transaction; returns how many were sent
/// (letters another run re-drove in the meantime are skipped).
fn redrive(
    settings: &Settings,
    conn: &mut PgConnection,
    letters: &[Letter],
) -> Result<usize, DlqError> {
    let producer: FutureProducer = crate::settings::kafka_client::client_config(&settings.kafka)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "30000")
        .create()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(DlqError::Runtime)?;
    conn.transaction(|conn| {
        let (topics, partitions, offsets) = origin_arrays(letters.iter().map(|l| &l.origin));
        let claimed: std::collections::HashSet<Origin> = diesel::sql_query(CLAIM)
            .bind::<Array<Text>, _>(&topics)
            .bind::<Array<Integer>, _>(&partitions)
            .bind::<Array<BigInt>, _>(&offsets)
            .load::<Origin>(conn)?
            .into_iter()
            .collect();
        let mine: Vec<&Letter> = letters.iter().filter(|l| claimed.contains(&l.origin)).collect();
        let deliveries = runtime.block_on(async {
            let sends = mine.iter().map(|letter| {
                let origin = letter.coords();
                let mut headers = OwnedHeaders::new();
                for (key, value) in letter.original_headers() {
                    headers = headers.insert(Header { key: &key, value: value.as_deref() });
                }
                headers =
                    headers.insert(Header { key: REDRIVEN_FROM, value: Some(origin.as_bytes()) });
                let mut record = FutureRecord::<[u8], [u8]>::to(&letter.origin.topic)
                    .partition(letter.origin.partition)
                    .headers(headers);
                if let Some(key) = &letter.record_key {
                    record = record.key(key.as_slice());
                }
                if let Some(value) = &letter.record_value {
                    record = record.payload(value.as_slice());
                }
                producer.send(record, Duration::from_secs(30))
            });
            futures::future::join_all(sends).await
        });
        let mut sent = (Vec::new(), Vec::new());
        for result in deliveries {
            match result {
                Ok(delivery) => {
                    sent.0.push(delivery.partition);
                    sent.1.push(delivery.offset);
                }
                // Rolls the claims back: nothing is recorded, a second run sends again.
                Err((error, _)) => return Err(DlqError::Kafka(error)),
            }
        }
        let (topics, partitions, offsets) = origin_arrays(mine.iter().map(|l| &l.origin));
        diesel::sql_query(RECORD_DELIVERY)
            .bind::<Array<Text>, _>(&topics)
            .bind::<Array<Integer>, _>(&partitions)
            .bind::<Array<BigInt>, _>(&offsets)
            .bind::<Array<Integer>, _>(&sent.0)
            .bind::<Array<BigInt>, _>(&sent.1)
            .execute(conn)?;
        Ok(mine.len())
    })
}

fn render(report: &ReplayReport, json: bool) -> String {
    if json {
        return format!("{}\n", serde_json::to_string(report).expect("a report serialises"));
    }
    let mut text = String::new();
    for letter in &report.letters {
        let what = match &letter.verdict {
            Verdict::AlreadyRedriven { at } => format!("already re-driven at {}", at.to_rfc3339()),
            Verdict::PassesNow if report.dry_run => "passes now: would be sent".to_string(),
            Verdict::PassesNow => "passes now: sent".to_string(),
            Verdict::StillFails { class, reason } => format!("still fails: {class}: {reason}"),
        };
        text.push_str(&format!(
            "{}  {}  {}  {what}\n",
            letter.coords,
            letter.error_class,
            letter.event_type.as_deref().unwrap_or("-")
        ));
    }
    text.push_str(&format!(
        "{} dead letters selected: {} pass the current contracts, {} still fail, {} already re-driven; {}\n",
        report.selected,
        report.passing,
        report.still_failing,
        report.already_redriven,
        if report.dry_run {
            "dry run, nothing sent".to_string()
        } else {
            format!("{} sent back to their source topic", report.sent)
        }
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contracts() -> Contracts {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contracts");
        Contracts::load(&dir, Default::default()).unwrap()
    }

    fn letter(value: Option<&str>, redriven_at: Option<DateTime<Utc>>) -> Letter {
        Letter {
            origin: Origin { topic: "t".into(), partition: 0, offset: 7 },
            record_key: Some(b"k".to_vec()),
            record_value: value.map(|v| v.as_bytes().to_vec()),
            headers:
                r#"[{"key": "correlation_id", "value": "req-1"}, {"key": "n", "value": null}]"#
                    .into(),
            error_class: "unknown_event_type".into(),
            event_type: None,
            redriven_at,
        }
    }

    #[test]
    fn the_verdict_is_the_validators_today() {
        let c = contracts();
        let good = serde_json::json!({
            "event_id": "7d0f6c1e-1f7a-4a8e-9b7e-3c1f1d2a9e01", "event_type": "account_created",
            "source": "crm", "timestamp": "2026-11-22T10:15:00Z",
            "payload": {"account_id": "acc_000001", "industry": "software", "region": "EMEA"}
        })
        .to_string();
        assert_eq!(verdict(&c, &letter(Some(&good), None)), Verdict::PassesNow);
        match verdict(&c, &letter(Some("{nope"), None)) {
            Verdict::StillFails { class, .. } => assert_eq!(class, "not_json"),
            other => panic!("{other:?}"),
        }
        // A tombstone keyed by something that is not an event id deletes that entity now
        // that the contracts declare entities; one without a key still fails.
        assert_eq!(verdict(&c, &letter(None, None)), Verdict::PassesNow);
        let mut keyless = letter(None, None);
        keyless.record_key = None;
        assert!(matches!(verdict(&c, &keyless), Verdict::StillFails { class: "tombstone", .. }));
        let at = Utc::now();
        assert_eq!(verdict(&c, &letter(Some(&good), Some(at))), Verdict::AlreadyRedriven { at });
    }

    #[test]
    fn headers_come_back_from_the_tables_json() {
        assert_eq!(
            letter(None, None).original_headers(),
            vec![("correlation_id".to_string(), Some(b"req-1".to_vec())), ("n".to_string(), None)]
        );
        assert_eq!(class_names().len(), ErrorClass::ALL.len());
        assert!(class_names().contains(&"sink_rejected"));
    }
}
