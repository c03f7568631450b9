//! Synthetic CRM traffic for demos, drills and benchmarks. Entities follow plausible
//! life cycles (an account is created before it is updated or gets contacts and
//! opportunities; opportunity stages only move forward) and the output is a pure
//! function of the seed and the start time, so a run can be reproduced exactly.
//! Knobs add the messiness of real feeds: duplicates, conflicts, invalid records,
//! late events and tombstones.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::VecDeque;

/// Every event type the generator knows, in the order they usually appear.
pub const EVENT_TYPES: [&str; 5] = [
    "account_created",
    "account_updated",
    "contact_created",
    "opportunity_created",
    "opportunity_stage_changed",
];

/// The order domain (seed 003's), generated when `types` names its event types.
pub const ORDER_EVENT_TYPES: [&str; 4] =
    ["order_created", "order_paid", "order_shipped", "order_cancelled"];

/// Every event type of both domains, for the command line.
pub const ALL_EVENT_TYPES: [&str; 9] = [
    "account_created",
    "account_updated",
    "contact_created",
    "opportunity_created",
    "opportunity_stage_changed",
    "order_created",
    "order_paid",
    "order_shipped",
    "order_cancelled",
];

#[cfg(test)]
mod tests;
mod vocabulary;

use vocabulary::*;

/// Generator knobs (ratios are probabilities per record, 0.0 to 1.0).
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Same seed and start time: same records.
    pub seed: u64,
    /// Time of the first event; later events advance from it.
    pub start_time: DateTime<Utc>,
    /// Event types to emit (others still happen to entities, silently).
    pub types: Vec<String>,
    /// Exact copies of an earlier record.
    pub duplicate_ratio: f64,
    /// An earlier `event_id` with a different payload.
    pub conflict_ratio: f64,
    /// Records that break the contract (sent raw, for drills).
    pub invalid_ratio: f64,
    /// Events whose timestamp lies in the past by up to `max_lateness`.
    pub late_ratio: f64,
    /// How late a late event can be.
    pub max_lateness: Duration,
    /// Null values keyed by an account id (dead letters: not an event id).
    pub tombstone_ratio: f64,
    /// Invalidations of an earlier event: the same record with `is_valid: false`, same
    /// key (so the same partition, after the event).
    pub invalidate_ratio: f64,
    /// Deletions of an earlier event: tombstones keyed by its `event_id` (so usually on
    /// another partition: whether copies sent before it end up `duplicate` or `deleted`
    /// depends on the order the partitions are read in).
    pub delete_ratio: f64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            start_time: DateTime::parse_from_rfc3339("2026-11-22T08:00:00Z")
                .expect("valid")
                .with_timezone(&Utc),
            types: EVENT_TYPES.iter().map(|t| t.to_string()).collect(),
            duplicate_ratio: 0.0,
            conflict_ratio: 0.0,
            invalid_ratio: 0.0,
            late_ratio: 0.0,
            max_lateness: Duration::hours(1),
            tombstone_ratio: 0.0,
            invalidate_ratio: 0.0,
            delete_ratio: 0.0,
        }
    }
}

/// What kind of record this is, so callers can count and route it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A new, valid event.
    Valid,
    /// An exact copy of an earlier record.
    Duplicate,
    /// An earlier id with other content.
    Conflict,
    /// Breaks the contract on purpose.
    Invalid,
    /// A null value keyed by an account id: that account's deletion (its state row).
    Tombstone,
    /// An earlier event again with `is_valid: false`.
    Invalidation,
    /// A null value keyed by an earlier event's id.
    Deletion,
}

/// One generated Kafka record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedRecord {
    /// The owning entity (account id): one entity's events share a partition.
    pub key: String,
    /// The value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its kind.
    pub kind: Kind,
}

struct Account {
    id: String,
    region: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OrderStage {
    Created,
    Paid,
}

struct Order {
    id: String,
    amount_cents: i64,
    paid_cents: i64,
    currency: &'static str,
    stage: OrderStage,
}

struct Opportunity {
    id: String,
    account: usize,
    stage: usize,
    closed: bool,
}

/// The generator; an iterator of records.
pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    clock: DateTime<Utc>,
    accounts: Vec<Account>,
    contacts: u64,
    opportunities: Vec<Opportunity>,
    /// Indices into `opportunities` that are not closed yet.
    open: Vec<usize>,
    /// Orders neither shipped nor cancelled yet.
    orders: Vec<Order>,
    order_count: u64,
    /// Recent events (key, JSON, copied since): the pool copies and retractions come from.
    recent: VecDeque<(String, String, bool)>,
}

impl Generator {
    /// A generator for `config`.
    pub fn new(config: GeneratorConfig) -> Generator {
        let rng = StdRng::seed_from_u64(config.seed);
        let clock = config.start_time;
        Generator {
            config,
            rng,
            clock,
            accounts: Vec::new(),
            contacts: 0,
            opportunities: Vec::new(),
            open: Vec::new(),
            orders: Vec::new(),
            order_count: 0,
            recent: VecDeque::new(),
        }
    }

    fn uuid(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.gen()).into_uuid().to_string()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        items.choose(&mut self.rng).expect("non-empty")
    }

    /// A Salesforce-style 18-character id: the object's key prefix (`001` accounts,
    /// `003` contacts, `006` opportunities) and 15 characters, like `001xx000003DGb2AAG`.
    fn salesforce_id(&mut self, key_prefix: &str) -> String {
        const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let rest: String = (0..15).map(|_| *self.pick(CHARS) as char).collect();
        format!("{key_prefix}{rest}")
    }

    fn envelope(&mut self, event_type: &str, payload: Value) -> Value {
        self.clock += Duration::milliseconds(self.rng.gen_range(1..250));
        let mut at = self.clock;
        if self.rng.gen_bool(self.config.late_ratio) {
            let late_ms =
                self.rng.gen_range(1..=self.config.max_lateness.num_milliseconds().max(1));
            at -= Duration::milliseconds(late_ms);
        }
        json!({
            "event_id": self.uuid(),
            "event_type": event_type,
            "source": "crm",
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "schema_version": 1,
            "payload": payload,
        })
    }

    fn new_account(&mut self) -> (String, Value) {
        let region = self.rng.gen_range(0..REGIONS.len());
        let id = self.salesforce_id("001");
        let name = format!("{} {}", self.pick(&NAME_PARTS), self.pick(&NAME_SUFFIXES));
        let country = *self.pick(REGIONS[region].1);
        let payload = json!({
            "account_id": id,
            "name": name,
            "industry": self.pick(&INDUSTRIES),
            "region": REGIONS[region].0,
            "country": country,
            "employee_count": self.rng.gen_range(5..50_000),
            "owner_email": format!("{}.{}@crm.example.com", self.pick(&FIRST_NAMES).to_lowercase(), self.pick(&LAST_NAMES).to_lowercase()),
        });
        self.accounts.push(Account { id: id.clone(), region });
        (id, self.envelope("account_created", payload))
    }

    /// The next order event: orders are placed, paid (sometimes in two parts), shipped
    /// once paid, or cancelled before they are paid. Keyed by the order id.
    fn next_order_event(&mut self) -> (String, String, Value) {
        loop {
            let weights = [if self.orders.len() < 20 { 70 } else { 30 }, 35, 25, 8];
            let choice = weighted(&mut self.rng, &weights);
            if choice == 0 || self.orders.is_empty() {
                self.order_count += 1;
                let id = format!("ord_{:08}", self.order_count);
                let amount_cents = self.rng.gen_range(500..50_000);
                let currency = *self.pick(&["EUR", "USD", "GBP"]);
                let payload = json!({
                    "order_id": id,
                    "customer_id": format!("cus_{:04}", self.rng.gen_range(0..2_000)),
                    "amount": amount_cents as f64 / 100.0,
                    "currency": currency,
                    "channel": self.pick(&CHANNELS),
                    "country": self.pick(&COUNTRIES),
                });
                self.orders.push(Order {
                    id: id.clone(),
                    amount_cents,
                    paid_cents: 0,
                    currency,
                    stage: OrderStage::Created,
                });
                return (
                    id.clone(),
                    "order_created".into(),
                    self.shop_envelope("order_created", payload),
                );
            }
            let slot = self.rng.gen_range(0..self.orders.len());
            let order = &self.orders[slot];
            let (id, currency) = (order.id.clone(), order.currency);
            match (choice, order.stage) {
                (1, OrderStage::Created) => {
                    let due = order.amount_cents - order.paid_cents;
                    let part =
                        if order.paid_cents == 0 && self.rng.gen_bool(0.3) { due / 2 } else { due };
                    let payment = self.order_count * 10 + self.rng.gen_range(0..10);
                    let order = &mut self.orders[slot];
                    order.paid_cents += part;
                    if order.paid_cents >= order.amount_cents {
                        order.stage = OrderStage::Paid;
                    }
                    let payload = json!({
                        "order_id": id, "payment_id": format!("pay_{payment:010}"),
                        "amount_paid": part as f64 / 100.0, "currency": currency,
                        "method": self.pick(&["card", "transfer", "wallet"]),
                    });
                    return (id, "order_paid".into(), self.shop_envelope("order_paid", payload));
                }
                (2, OrderStage::Paid) => {
                    self.orders.swap_remove(slot);
                    let tracking =
                        format!("TRK{:012}", self.rng.gen_range(0..1_000_000_000_000u64));
                    let payload = json!({"order_id": id, "carrier": self.pick(&CARRIERS), "tracking_number": tracking});
                    return (
                        id,
                        "order_shipped".into(),
                        self.shop_envelope("order_shipped", payload),
                    );
                }
                (3, OrderStage::Created) if order.paid_cents == 0 => {
                    self.orders.swap_remove(slot);
                    let payload = json!({"order_id": id, "reason": self.pick(&CANCEL_REASONS)});
                    return (
                        id,
                        "order_cancelled".into(),
                        self.shop_envelope("order_cancelled", payload),
                    );
                }
                _ => continue,
            }
        }
    }

    fn shop_envelope(&mut self, event_type: &str, payload: Value) -> Value {
        let mut value = self.envelope(event_type, payload);
        value["source"] = json!("shop");
        value
    }

    fn next_event(&mut self) -> (String, String, Value) {
        let wants = |types: &[&str]| self.config.types.iter().any(|t| types.contains(&t.as_str()));
        let (crm, orders) = (wants(&EVENT_TYPES), wants(&ORDER_EVENT_TYPES));
        // CRM traffic alone draws exactly what it drew before orders existed.
        if orders && (!crm || self.rng.gen_bool(0.3)) {
            return self.next_order_event();
        }
        // Early on, most events create accounts; later the mix shifts to activity.
        let weights = [if self.accounts.len() < 20 { 60 } else { 12 }, 18, 22, 18, 30];
        loop {
            let index = weighted(&mut self.rng, &weights);
            let event_type = EVENT_TYPES[index];
            if index == 0 || self.accounts.is_empty() {
                let (key, value) = self.new_account();
                return (key, "account_created".into(), value);
            }
            let account = self.rng.gen_range(0..self.accounts.len());
            let key = self.accounts[account].id.clone();
            let payload = match event_type {
                "account_updated" => {
                    let changes = if self.rng.gen_bool(0.5) {
                        json!({"employee_count": self.rng.gen_range(5..50_000)})
                    } else {
                        json!({"name": format!("{} {}", self.pick(&NAME_PARTS), self.pick(&NAME_SUFFIXES))})
                    };
                    json!({"account_id": key, "changes": changes, "updated_by": "ops@crm.example.com"})
                }
                "contact_created" => {
                    self.contacts += 1;
                    let (first, last) = (*self.pick(&FIRST_NAMES), *self.pick(&LAST_NAMES));
                    json!({
                        "contact_id": self.salesforce_id("003"),
                        "account_id": key,
                        "email": format!("{}.{}{}@customer.example.org", first.to_lowercase(), last.to_lowercase(), self.contacts),
                        "first_name": first,
                        "last_name": last,
                        "title": self.pick(&TITLES),
                        "phone": format!("+{}", self.rng.gen_range(10_000_000_000u64..99_999_999_999)),
                    })
                }
                "opportunity_created" => {
                    let id = self.salesforce_id("006");
                    self.open.push(self.opportunities.len());
                    self.opportunities.push(Opportunity {
                        id: id.clone(),
                        account,
                        stage: 0,
                        closed: false,
                    });
                    let close = self.clock + Duration::days(self.rng.gen_range(14..180));
                    json!({
                        "opportunity_id": id,
                        "account_id": key,
                        "name": format!("{} renewal", self.pick(&NAME_PARTS)),
                        "amount": (self.rng.gen_range(1_000.0..250_000.0f64) * 100.0).round() / 100.0,
                        "currency": REGIONS[self.accounts[account].region].2,
                        "stage": STAGES[0],
                        "close_date": close.format("%Y-%m-%d").to_string(),
                    })
                }
                _ => {
                    if self.open.is_empty() {
                        continue;
                    }
                    let slot = self.rng.gen_range(0..self.open.len());
                    let o = self.open[slot];
                    let opp = &self.opportunities[o];
                    let from = STAGES[opp.stage];
                    let (to, stage, closed) = if opp.stage + 1 < STAGES.len() {
                        (STAGES[opp.stage + 1], opp.stage + 1, false)
                    } else if self.rng.gen_bool(0.6) {
                        ("closed_won", opp.stage, true)
                    } else {
                        ("closed_lost", opp.stage, true)
                    };
                    let (id, owner) = (opp.id.clone(), self.accounts[opp.account].id.clone());
                    self.opportunities[o].stage = stage;
                    self.opportunities[o].closed = closed;
                    if closed {
                        self.open.swap_remove(slot);
                    }
                    let probability = if closed {
                        if to == "closed_won" {
                            100
                        } else {
                            0
                        }
                    } else {
                        (stage as i64 + 1) * 20
                    };
                    let value = self.envelope(event_type, json!({"opportunity_id": id, "account_id": owner, "from_stage": from, "to_stage": to, "probability": probability}));
                    return (owner, event_type.into(), value);
                }
            };
            let value = self.envelope(event_type, payload);
            return (key, event_type.into(), value);
        }
    }

    fn remember(&mut self, key: &str, value: &str) {
        self.recent.push_back((key.to_string(), value.to_string(), false));
        if self.recent.len() > 1_000 {
            self.recent.pop_front();
        }
    }

    fn invalid(&mut self, key: String) -> GeneratedRecord {
        let broken: Vec<u8> = match self.rng.gen_range(0..5) {
            0 => b"{\"event_id\": \"truncated".to_vec(),
            1 => json!({"event_id": "not-a-uuid", "event_type": "account_created", "source": "crm", "timestamp": "2026-11-22T08:00:00Z", "payload": {}}).to_string().into_bytes(),
            2 => json!({"event_id": self.uuid(), "event_type": "invoice_paid", "source": "billing", "timestamp": "2026-11-22T08:00:00Z", "payload": {"invoice_id": "inv_1"}}).to_string().into_bytes(),
            3 => json!({"event_id": self.uuid(), "event_type": "account_created", "source": "crm", "timestamp": "2026-11-22T08:00:00Z", "payload": {"account_id": key, "industry": "Software", "region": "US", "employee_count": -5}}).to_string().into_bytes(),
            _ => json!({"event_id": self.uuid(), "event_type": "contact_created", "source": "crm", "timestamp": "yesterday", "payload": {"contact_id": "con_x1y2", "account_id": key, "email": "nobody"}}).to_string().into_bytes(),
        };
        GeneratedRecord { key, value: Some(broken), kind: Kind::Invalid }
    }
}

impl Iterator for Generator {
    type Item = GeneratedRecord;

    fn next(&mut self) -> Option<GeneratedRecord> {
        let roll: f64 = self.rng.gen();
        let c = &self.config;
        let (dup, conflict, invalid, tombstone) =
            (c.duplicate_ratio, c.conflict_ratio, c.invalid_ratio, c.tombstone_ratio);
        if !self.recent.is_empty() && roll < dup + conflict {
            let i = self.rng.gen_range(0..self.recent.len());
            self.recent[i].2 = true;
            let (key, text, _) = self.recent[i].clone();
            if roll < dup {
                return Some(GeneratedRecord {
                    key,
                    value: Some(text.into_bytes()),
                    kind: Kind::Duplicate,
                });
            }
            let mut value: Value = serde_json::from_str(&text).expect("generated JSON parses");
            value["source"] = json!("crm-replica");
            return Some(GeneratedRecord {
                key,
                value: Some(value.to_string().into_bytes()),
                kind: Kind::Conflict,
            });
        }
        if roll < dup + conflict + invalid {
            let key = self
                .accounts
                .choose(&mut self.rng)
                .map(|a| a.id.clone())
                .unwrap_or_else(|| "acc_unknown".into());
            return Some(self.invalid(key));
        }
        if roll < dup + conflict + invalid + tombstone && !self.accounts.is_empty() {
            let key = self.accounts.choose(&mut self.rng).map(|a| a.id.clone()).expect("non-empty");
            return Some(GeneratedRecord { key, value: None, kind: Kind::Tombstone });
        }
        let retracted = dup + conflict + invalid + tombstone;
        let (invalidate, delete) = (c.invalidate_ratio, c.delete_ratio);
        if roll >= retracted && roll < retracted + invalidate && !self.recent.is_empty() {
            // Taken out of `recent`: an event is retracted once, and never copied after.
            let i = self.rng.gen_range(0..self.recent.len());
            let (key, text, _) = self.recent.remove(i).expect("in range");
            let mut value: Value = serde_json::from_str(&text).expect("generated JSON parses");
            value["is_valid"] = json!(false);
            let value = Some(value.to_string().into_bytes());
            return Some(GeneratedRecord { key, value, kind: Kind::Invalidation });
        }
        if roll >= retracted + invalidate && roll < retracted + invalidate + delete {
            // Only events never copied: a copy on the event's partition and the tombstone
            // on another would make the copy's outcome depend on which is read first.
            let uncopied: Vec<usize> =
                (0..self.recent.len()).filter(|i| !self.recent[*i].2).collect();
            if let Some(&i) = uncopied.choose(&mut self.rng) {
                let (_, text, _) = self.recent.remove(i).expect("in range");
                let value: Value = serde_json::from_str(&text).expect("generated JSON parses");
                let id = value["event_id"].as_str().unwrap_or_default().to_string();
                return Some(GeneratedRecord { key: id, value: None, kind: Kind::Deletion });
            }
        }
        loop {
            let (key, event_type, value) = self.next_event();
            if self.config.types.contains(&event_type) {
                let text = value.to_string();
                self.remember(&key, &text);
                return Some(GeneratedRecord {
                    key,
                    value: Some(text.into_bytes()),
                    kind: Kind::Valid,
                });
            }
        }
    }
}

fn weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut roll = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if roll < *w {
            return i;
        }
        roll -= w;
    }
    weights.len() - 1
}
