//! The generator's own tests: reproducible, valid where it says so, plausible life cycles.

use super::*;
use crate::record::Coords;
use crate::stages::contract::Contracts;

fn check(
    c: &Contracts,
    r: &GeneratedRecord,
) -> Result<crate::record::Event, crate::stages::contract::Rejection> {
    c.check(r.value.as_deref(), Coords { topic: "t".into(), partition: 0, offset: 0 }, None)
}

#[test]
fn the_same_seed_gives_the_same_records() {
    let a: Vec<_> = Generator::new(GeneratorConfig {
        seed: 42,
        duplicate_ratio: 0.1,
        invalid_ratio: 0.1,
        ..Default::default()
    })
    .take(500)
    .collect();
    let b: Vec<_> = Generator::new(GeneratorConfig {
        seed: 42,
        duplicate_ratio: 0.1,
        invalid_ratio: 0.1,
        ..Default::default()
    })
    .take(500)
    .collect();
    let c: Vec<_> = Generator::new(GeneratorConfig {
        seed: 43,
        duplicate_ratio: 0.1,
        invalid_ratio: 0.1,
        ..Default::default()
    })
    .take(500)
    .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn valid_records_pass_their_contracts_and_invalid_ones_do_not() {
    let c = Contracts::shipped();
    let config = GeneratorConfig {
        seed: 7,
        invalid_ratio: 0.1,
        late_ratio: 0.2,
        tombstone_ratio: 0.02,
        ..Default::default()
    };
    let mut kinds = std::collections::HashMap::new();
    for r in Generator::new(config).take(3_000) {
        *kinds.entry(r.kind).or_insert(0) += 1;
        match r.kind {
            Kind::Valid => {
                if let Err(e) = check(&c, &r) {
                    panic!("{e:?} for {}", String::from_utf8_lossy(r.value.as_ref().unwrap()));
                }
            }
            Kind::Invalid | Kind::Tombstone => assert!(check(&c, &r).is_err()),
            _ => {}
        }
    }
    assert!(kinds[&Kind::Invalid] > 200 && kinds[&Kind::Tombstone] > 20, "{kinds:?}");
}

#[test]
fn invalidations_and_deletions_retract_earlier_events_once_and_never_a_copied_one() {
    let c = Contracts::shipped();
    let config = GeneratorConfig {
        seed: 11,
        duplicate_ratio: 0.05,
        invalidate_ratio: 0.03,
        delete_ratio: 0.03,
        ..Default::default()
    };
    let (mut sent, mut copied, mut retracted) = (
        std::collections::HashMap::new(),
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    let mut kinds = std::collections::HashMap::new();
    for r in Generator::new(config).take(5_000) {
        *kinds.entry(r.kind).or_insert(0) += 1;
        match r.kind {
            Kind::Valid => {
                let e = check(&c, &r).unwrap();
                sent.insert(e.event_id, (r.key.clone(), e.payload_hash));
            }
            Kind::Duplicate => {
                let e = check(&c, &r).unwrap();
                assert!(!retracted.contains(&e.event_id), "no copy after a retraction");
                copied.insert(e.event_id);
            }
            Kind::Invalidation => {
                let e = check(&c, &r).unwrap();
                assert!(!e.is_valid);
                let (key, hash) = &sent[&e.event_id];
                assert_eq!((&r.key, &e.payload_hash), (key, hash), "the same event, same key");
                assert!(retracted.insert(e.event_id), "retracted once");
            }
            Kind::Deletion => {
                assert!(r.value.is_none());
                let id: uuid::Uuid = r.key.parse().expect("keyed by the event id");
                assert!(sent.contains_key(&id) && !copied.contains(&id), "an uncopied event");
                assert!(retracted.insert(id), "retracted once");
            }
            _ => {}
        }
    }
    assert!(kinds[&Kind::Invalidation] > 80 && kinds[&Kind::Deletion] > 80, "{kinds:?}");
}

#[test]
fn life_cycles_are_plausible() {
    let c = Contracts::shipped();
    let mut created = std::collections::HashSet::new();
    let mut stage_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let order = ["prospecting", "qualification", "proposal", "negotiation"];
    for r in Generator::new(GeneratorConfig { seed: 3, ..Default::default() }).take(5_000) {
        let e = check(&c, &r).unwrap();
        let payload: Value = serde_json::from_str(&e.payload).unwrap();
        let account = payload["account_id"].as_str().unwrap().to_string();
        assert_eq!(r.key, account, "keyed by the owning account");
        match e.event_type.as_str() {
            "account_created" => assert!(created.insert(account)),
            "opportunity_created" => {
                assert!(created.contains(&account));
                stage_of.insert(payload["opportunity_id"].as_str().unwrap().into(), 0);
            }
            "opportunity_stage_changed" => {
                let id = payload["opportunity_id"].as_str().unwrap();
                let from = order.iter().position(|s| *s == payload["from_stage"]).unwrap();
                assert_eq!(stage_of[id], from, "stages move forward one at a time");
                if let Some(to) = order.iter().position(|s| *s == payload["to_stage"]) {
                    assert_eq!(to, from + 1);
                    stage_of.insert(id.into(), to);
                } else {
                    stage_of.insert(id.into(), usize::MAX);
                }
            }
            _ => assert!(created.contains(&account), "{} before its account", e.event_type),
        }
    }
}

#[test]
fn duplicates_repeat_bytes_and_conflicts_reuse_ids() {
    let records: Vec<_> = Generator::new(GeneratorConfig {
        seed: 9,
        duplicate_ratio: 0.2,
        conflict_ratio: 0.1,
        ..Default::default()
    })
    .take(1_000)
    .collect();
    let valid: std::collections::HashSet<_> =
        records.iter().filter(|r| r.kind == Kind::Valid).map(|r| r.value.clone()).collect();
    for r in records.iter().filter(|r| r.kind == Kind::Duplicate) {
        assert!(valid.contains(&r.value));
    }
    assert!(records.iter().any(|r| r.kind == Kind::Conflict));
}

#[test]
fn orders_pass_their_contracts_and_transforms_and_ship_only_once_paid() {
    let c = Contracts::shipped();
    let types: Vec<String> = ORDER_EVENT_TYPES.iter().map(|t| t.to_string()).collect();
    let config = GeneratorConfig { seed: 3, types, ..Default::default() };
    let mut paid: std::collections::HashMap<String, f64> = Default::default();
    let mut seen = std::collections::BTreeSet::new();
    for r in Generator::new(config).take(2_000) {
        let event = c.transform(check(&c, &r).expect("a valid order event")).unwrap();
        let fields: Value = serde_json::from_str(event.fields()).unwrap();
        assert_eq!(event.entity_key.as_deref(), Some(r.key.as_str()), "keyed by the order");
        seen.insert(event.event_type.clone());
        match event.event_type.as_str() {
            "order_paid" => {
                *paid.entry(r.key.clone()).or_default() += fields["amount_paid"].as_f64().unwrap()
            }
            "order_shipped" => assert!(paid.contains_key(&r.key), "{} shipped unpaid", r.key),
            "order_cancelled" => {
                assert!(!paid.contains_key(&r.key), "{} cancelled once paid", r.key)
            }
            _ => assert_eq!(fields["status"], "created"),
        }
    }
    assert_eq!(seen.len(), 4, "every order event type: {seen:?}");
}
