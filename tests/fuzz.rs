//! Fuzzing against the real services: rounds of generated records (valid events among
//! random bytes, JSON with odd keys and values, huge and tiny records, odd keys and
//! headers, tombstones, committed and aborted transactions) sent with confluent-kafka
//! through the real broker to one `eventline run` with the real Postgres and lake. After
//! each round the sinks are the judge, not the processor's own counters:
//! - P1: every record sent outside an aborted transaction has one outcome;
//! - P2: every valid event is stored once in Postgres and once in the lake, nothing
//!   from an aborted transaction is stored, and the lake holds what Postgres holds;
//! - P7: the process is up, no stage or writer failed or restarted, and every
//!   partition is committed to its end.
//!
//! `make test` runs it for `EVENTLINE_FUZZ_SECONDS` (default 40); `make fuzz` for as
//! long as one wants. `EVENTLINE_FUZZ_SEED` replays one seed. A failing round prints its
//! seed and keeps its records under `tests/fuzz_corpus/`, whose cases run first every
//! time.

mod helpers;

use helpers::hostile::{Delivery, RawRecord};
use helpers::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

/// What a generated record must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A valid event: stored once in both sinks.
    Stored,
    /// Anything else: an outcome, and never an event in a sink.
    NotStored,
}

/// One generated record with what it must do and the event id it carries, if any.
#[derive(Debug, Clone)]
struct Case {
    record: RawRecord,
    expect: Expect,
    event_id: Option<String>,
}

fn random_text(rng: &mut StdRng, max: usize) -> String {
    let len = rng.gen_range(0..=max);
    (0..len)
        .map(|_| match rng.gen_range(0..10) {
            0 => char::from_u32(rng.gen_range(0x80..0xD7FF)).unwrap_or('x'),
            1 => char::from_u32(rng.gen_range(0x1F300..0x1F64F)).unwrap_or('y'),
            2 => ['"', '\\', '/', '\n', '\t', '{', '}'][rng.gen_range(0..7)],
            _ => char::from(rng.gen_range(b' '..=b'~')),
        })
        .collect()
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| rng.gen()).collect()
}

fn event(id: &str, account: &str) -> serde_json::Value {
    serde_json::json!({
        "event_id": id,
        "event_type": "account_created",
        "source": "crm",
        "timestamp": "2026-11-22T10:15:00+01:00",
        "payload": {"account_id": account, "industry": "software", "region": "EMEA"},
    })
}

/// One generated record.
fn generate(rng: &mut StdRng, sent: &[Case]) -> Case {
    let partition = rng.gen_range(0..PARTITIONS);
    let id = uuid::Uuid::from_u128(rng.gen()).to_string();
    let account = format!("acc_f{}", rng.gen_range(0..200));
    let mut doc = event(&id, &account);
    let on = |value: Option<Vec<u8>>, key: Vec<u8>| RawRecord {
        partition: Some(partition),
        key: Some(key),
        value,
        headers: Vec::new(),
    };
    let stored =
        |record, id: &str| Case { record, expect: Expect::Stored, event_id: Some(id.into()) };
    let not = |record| Case { record, expect: Expect::NotStored, event_id: None };
    match rng.gen_range(0..15) {
        0..=3 => stored(on(Some(doc.to_string().into_bytes()), account.into_bytes()), &id),
        4 => {
            // An extra payload field with any text (open contract), any header bytes.
            doc["payload"][format!("x_{}", rng.gen_range(0..5))] = random_text(rng, 300).into();
            let mut r = on(Some(doc.to_string().into_bytes()), random_bytes(rng, 40));
            r.headers = (0..rng.gen_range(0..4))
                .map(|i| {
                    (
                        format!("h{i}-{}", random_text(rng, 8).replace('\0', "")),
                        random_bytes(rng, 200),
                    )
                })
                .collect();
            stored(r, &id)
        }
        5 => {
            // An integer written with a fraction: stored as the integer.
            doc["payload"]["employee_count"] = "COUNT".into();
            let text =
                doc.to_string().replace("\"COUNT\"", &format!("{}.0", rng.gen_range(1..100_000)));
            stored(on(Some(text.into_bytes()), account.into_bytes()), &id)
        }
        6 => not(on(Some(random_bytes(rng, 3000)), random_bytes(rng, 20))),
        7 => {
            // NUL or an escape somewhere in a key or a value.
            let place =
                ["\"region\":\"EMEA", "\"source\":\"crm", "\"industry"][rng.gen_range(0..3)];
            let text = doc.to_string().replacen(place, &format!("{place}\\u0000"), 1);
            not(on(Some(text.into_bytes()), account.into_bytes()))
        }
        8 => {
            let number =
                ["9223372036854775808", "1e400", "-1e30", "2.5", "\"12\""][rng.gen_range(0..5)];
            doc["payload"]["employee_count"] = "COUNT".into();
            let text = doc.to_string().replace("\"COUNT\"", number);
            not(on(Some(text.into_bytes()), account.into_bytes()))
        }
        9 => {
            let depth = rng.gen_range(30..200);
            let text = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            not(on(Some(text.into_bytes()), Vec::new()))
        }
        10 => {
            // A tombstone with any key: an entity's deletion or a dead letter.
            let max = if rng.gen_bool(0.2) { 3000 } else { 30 };
            not(on(None, random_bytes(rng, max)))
        }
        11 => {
            doc["event_type"] = format!("made_up_{}", rng.gen_range(0..1000)).into();
            if rng.gen_bool(0.5) {
                doc["event_type"] = "account_created".into();
                doc["schema_version"] =
                    ["2.0", "0", "4294967297", "\"1\""][rng.gen_range(0..4)].into();
                let text = doc.to_string().replace("\"schema_version\":\"", "\"schema_version\":");
                let text = text.replacen("\",\"source\"", ",\"source\"", 1);
                return not(on(Some(text.into_bytes()), account.into_bytes()));
            }
            not(on(Some(doc.to_string().into_bytes()), account.into_bytes()))
        }
        12 => {
            // A copy of an earlier record: a duplicate, or the same dead letter again.
            match sent
                .iter()
                .filter(|c| c.record.value.is_some())
                .nth(rng.gen_range(0..sent.len().max(1)))
            {
                Some(earlier) => {
                    Case { expect: Expect::NotStored, event_id: None, ..earlier.clone() }
                }
                None => not(on(Some(b"{}".to_vec()), Vec::new())),
            }
        }
        13 => not(on(Some(vec![b'z'; rng.gen_range(900_000..1_040_000)]), b"big".to_vec())),
        _ => not(on(Some(Vec::new()), Vec::new())),
    }
}

/// A round's records, group by group, each group sent one way.
type Round = Vec<(Delivery, Vec<Case>)>;

/// A round: plain records, then a committed and an aborted transaction of valid events.
fn round(rng: &mut StdRng, size: usize) -> Round {
    let mut plain: Vec<Case> = Vec::new();
    for _ in 0..size {
        let case = generate(rng, &plain);
        plain.push(case);
    }
    let valid = |rng: &mut StdRng, n: usize| -> Vec<Case> {
        (0..n)
            .map(|_| {
                let id = uuid::Uuid::from_u128(rng.gen()).to_string();
                let account = format!("acc_t{}", rng.gen_range(0..50));
                let value = event(&id, &account).to_string().into_bytes();
                let record =
                    RawRecord::new(rng.gen_range(0..PARTITIONS), account.as_bytes(), Some(&value));
                Case { record, expect: Expect::Stored, event_id: Some(id) }
            })
            .collect()
    };
    let committed = valid(rng, 20);
    let mut aborted = valid(rng, 20);
    for case in &mut aborted {
        case.expect = Expect::NotStored;
    }
    vec![(Delivery::Plain, plain), (Delivery::Committed, committed), (Delivery::Aborted, aborted)]
}

fn corpus_dir() -> std::path::PathBuf {
    repo().join("tests/fuzz_corpus")
}

/// Bytes as corpus text: hex, or `rep:{byte}:{count}` for a long run of one byte (the
/// near-limit records), so that a kept case stays small.
fn bytes_text(bytes: &[u8]) -> String {
    match bytes.first() {
        Some(first) if bytes.len() > 64 && bytes.iter().all(|b| b == first) => {
            format!("rep:{first:02x}:{}", bytes.len())
        }
        _ => bytes.iter().map(|x| format!("{x:02x}")).collect(),
    }
}

fn text_bytes(text: &str) -> Vec<u8> {
    if let Some(run) = text.strip_prefix("rep:") {
        let (byte, count) = run.split_once(':').expect("rep:{byte}:{count}");
        return vec![u8::from_str_radix(byte, 16).unwrap(); count.parse().unwrap()];
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

/// A round as kept in the corpus: the records and what each must do.
fn to_json(groups: &[(Delivery, Vec<Case>)]) -> serde_json::Value {
    let hex = |b: &[u8]| bytes_text(b);
    groups
        .iter()
        .map(|(delivery, cases)| {
            serde_json::json!({
                "delivery": format!("{delivery:?}"),
                "records": cases.iter().map(|c| serde_json::json!({
                    "partition": c.record.partition,
                    "key": c.record.key.as_deref().map(hex),
                    "value": c.record.value.as_deref().map(hex),
                    "headers": c.record.headers.iter().map(|(k, v)| serde_json::json!([k, hex(v)])).collect::<Vec<_>>(),
                    "stored": c.expect == Expect::Stored,
                    "event_id": c.event_id,
                })).collect::<Vec<_>>(),
            })
        })
        .collect()
}

fn from_json(value: &serde_json::Value) -> Round {
    let unhex = |v: &serde_json::Value| v.as_str().map(text_bytes);
    value
        .as_array()
        .expect("a corpus case is a list of groups")
        .iter()
        .map(|group| {
            let delivery = match group["delivery"].as_str() {
                Some("Committed") => Delivery::Committed,
                Some("Aborted") => Delivery::Aborted,
                _ => Delivery::Plain,
            };
            let cases = group["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| Case {
                    record: RawRecord {
                        partition: r["partition"].as_i64().map(|p| p as i32),
                        key: unhex(&r["key"]),
                        value: unhex(&r["value"]),
                        headers: r["headers"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|h| (h[0].as_str().unwrap().to_string(), unhex(&h[1]).unwrap()))
                            .collect(),
                    },
                    expect: if r["stored"].as_bool() == Some(true) {
                        Expect::Stored
                    } else {
                        Expect::NotStored
                    },
                    event_id: r["event_id"].as_str().map(String::from),
                })
                .collect();
            (delivery, cases)
        })
        .collect()
}

/// Runs one round against the running processor `p`; `Err` says which property broke.
fn run_round(
    env: &mut TestEnv,
    p: usize,
    groups: &[(Delivery, Vec<Case>)],
    stored_so_far: &mut BTreeSet<String>,
    sent_so_far: &mut i64,
) -> Result<(), String> {
    let plan: Vec<(Delivery, Vec<RawRecord>)> = groups
        .iter()
        .map(|(d, cases)| (*d, cases.iter().map(|c| c.record.clone()).collect()))
        .collect();
    env.send_confluent(&plan);
    for (delivery, cases) in groups {
        if *delivery != Delivery::Aborted {
            *sent_so_far += cases.len() as i64;
        }
        for case in cases.iter().filter(|c| c.expect == Expect::Stored) {
            stored_so_far.insert(case.event_id.clone().expect("a stored case has an id"));
        }
    }
    let end = env.high_watermarks(PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(90);
    while env.committed(PARTITIONS) != end || env.outcomes_total() != *sent_so_far {
        if Instant::now() > deadline {
            return Err(format!(
                "P1/P7: not drained in 90 s: committed {:?} of {end:?}, {} outcomes for {} records",
                env.committed(PARTITIONS),
                env.outcomes_total(),
                sent_so_far
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pg: BTreeSet<String> = env.event_ids_pg().into_iter().collect();
    if pg != *stored_so_far {
        let missing: Vec<_> = stored_so_far.difference(&pg).take(5).collect();
        let extra: Vec<_> = pg.difference(stored_so_far).take(5).collect();
        return Err(format!(
            "P2: Postgres events differ: missing {missing:?}, unexpected {extra:?}"
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.lake_counts_duckdb() != (pg.len() as i64, pg.len() as i64) {
        if Instant::now() > deadline {
            return Err(format!(
                "P2: the lake holds {:?} (rows, ids), Postgres {}",
                env.lake_counts_duckdb(),
                pg.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if env.processor_exited(p) {
        return Err(format!("P7: the processor exited: {}", env.processor_log(p)));
    }
    let failures = env.supervision_failures();
    if !failures.is_empty() {
        return Err(format!("P7: failures in the supervision log: {failures:?}"));
    }
    Ok(())
}

#[test]
fn generated_hostile_traffic_keeps_p1_p2_and_p7() {
    let budget =
        std::env::var("EVENTLINE_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40u64);
    let seed: u64 = std::env::var("EVENTLINE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut env = TestEnv::new(PARTITIONS);
    let p = env.start_processor(&[]);
    let (mut stored, mut sent) = (BTreeSet::new(), 0i64);
    let mut corpus: Vec<(String, Round)> = std::fs::read_dir(corpus_dir())
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .map(|e| {
                    let text = std::fs::read_to_string(e.path()).expect("a corpus file");
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        from_json(&serde_json::from_str(&text).unwrap()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    corpus.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, groups) in &corpus {
        if let Err(why) = run_round(&mut env, p, groups, &mut stored, &mut sent) {
            panic!("corpus case {name} fails again: {why}");
        }
    }
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rounds = 0;
    while rounds == 0 || started.elapsed() < Duration::from_secs(budget) {
        let groups = round(&mut rng, 150);
        if let Err(why) = run_round(&mut env, p, &groups, &mut stored, &mut sent) {
            let name = format!("seed-{seed}-round-{rounds}.json");
            let _ = std::fs::create_dir_all(corpus_dir());
            let _ = std::fs::write(corpus_dir().join(&name), to_json(&groups).to_string());
            panic!(
                "seed {seed}, round {rounds}: {why}\n(kept as tests/fuzz_corpus/{name}; replay with EVENTLINE_FUZZ_SEED={seed})"
            );
        }
        rounds += 1;
    }
    assert_eq!(env.stop_processor(p), 0);
    eprintln!(
        "fuzz: seed {seed}: {rounds} rounds, {sent} records (+{} corpus cases) in {:?}, {} events stored, no failure",
        corpus.len(),
        started.elapsed(),
        stored.len()
    );
}
