//! A guard against a consumer stuck outside its group. librdkafka has been seen, after a
//! broker restart, to revoke its assignment, fail to rejoin ("Waiting for coordinator")
//! and stay without partitions for good while records waited (confluentinc/librdkafka
//! #2944, #3396). Nothing in the process would notice: the source loop keeps turning.
//!
//! [`GroupWatch`] keeps what librdkafka's statistics last said about the group
//! membership (`cgrp.state`, `cgrp.join_state`); [`Watchdog`] decides, as a pure
//! function of time, membership and whether records wait, when to make the consumer
//! rejoin and when to give up so that the process's own supervisor restarts it.

use crate::offsets::progress::resume_offset;
use crate::sinks::progress::ProgressStore;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The group part of librdkafka's statistics (`statistics.interval.ms`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupState {
    /// The coordinator state: `up` once the coordinator is known.
    pub state: String,
    /// The join state: `steady` while a member of the group (with or without partitions).
    pub join_state: String,
    /// Partitions currently assigned.
    pub assignment_size: i32,
}

impl GroupState {
    /// A member of its group, partitions or not (a group with more members than
    /// partitions leaves some with none, and that is fine).
    pub fn is_member(&self) -> bool {
        self.state == "up" && self.join_state == "steady"
    }
}

#[derive(Deserialize)]
struct Stats {
    cgrp: Option<GroupState>,
}

/// What librdkafka last reported, shared by the consumer context and the source loop.
#[derive(Debug, Default)]
pub struct GroupWatch {
    latest: Mutex<Option<GroupState>>,
}

impl GroupWatch {
    /// Takes the group part of a statistics document (other parts are skipped).
    pub fn record_stats(&self, json: &[u8]) {
        match serde_json::from_slice::<Stats>(json) {
            Ok(Stats { cgrp: Some(state) }) => {
                *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
            }
            Ok(_) => {}
            Err(e) => log::debug!("Kafka statistics not understood: {e}"),
        }
    }

    /// The latest group state, if statistics arrived yet.
    pub fn latest(&self) -> Option<GroupState> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What to do about the consumer's membership now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Fine,
    /// Out of the group too long while records wait: leave and join again.
    Rejoin,
    /// Still out as long again after rejoining: fail health and exit non-zero.
    GiveUp,
}

/// Decides, from successive observations, when a consumer has been out of its group for
/// too long. Observations where it is unknown whether records wait (the broker or
/// Postgres unreachable) never lead to an action: an outage is not a stuck consumer.
#[derive(Debug)]
pub struct Watchdog {
    limit: Duration,
    out_since: Option<Instant>,
    rejoined_at: Option<Instant>,
}

impl Watchdog {
    /// A watchdog that acts after `limit` out of the group.
    pub fn new(limit: Duration) -> Self {
        Watchdog { limit, out_since: None, rejoined_at: None }
    }

    /// One observation at `now`: `in_group` (partitions assigned, or a steady member)
    /// and `records_wait` (`None`: unknown).
    pub fn judge(&mut self, now: Instant, in_group: bool, records_wait: Option<bool>) -> Verdict {
        if in_group {
            self.out_since = None;
            self.rejoined_at = None;
            return Verdict::Fine;
        }
        let out_since = *self.out_since.get_or_insert(now);
        if now.duration_since(out_since) < self.limit || records_wait != Some(true) {
            return Verdict::Fine;
        }
        match self.rejoined_at {
            None => {
                self.rejoined_at = Some(now);
                Verdict::Rejoin
            }
            Some(at) if now.duration_since(at) >= self.limit => Verdict::GiveUp,
            Some(_) => Verdict::Fine,
        }
    }
}

/// Whether records wait on any partition of `topic`: a high watermark above what both
/// sinks stored. `None` when the broker or the sinks cannot be read (blocking: run it on
/// the blocking pool).
pub fn records_waiting<C: rdkafka::consumer::ConsumerContext>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
    store: &ProgressStore,
    topic: &str,
) -> Option<bool> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout).ok()?;
    let partitions = metadata.topics().first()?.partitions().len() as i32;
    for partition in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout).ok()?;
        let progress = store.read(partition).ok()?;
        let stored = resume_offset(&[progress.postgres, progress.lake]).unwrap_or(low);
        if high > stored.max(low) {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn out_of_the_group_past_the_limit_with_records_waiting_rejoins_then_gives_up() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = Watchdog::new(LIMIT);
        assert_eq!(w.judge(s(0), false, Some(true)), Verdict::Fine);
        assert_eq!(w.judge(s(59), false, Some(true)), Verdict::Fine);
        assert_eq!(w.judge(s(60), false, Some(true)), Verdict::Rejoin);
        assert_eq!(w.judge(s(100), false, Some(true)), Verdict::Fine, "rejoining takes time");
        assert_eq!(w.judge(s(120), false, Some(true)), Verdict::GiveUp);
    }

    #[test]
    fn being_back_in_the_group_resets_everything() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = Watchdog::new(LIMIT);
        w.judge(s(0), false, Some(true));
        assert_eq!(w.judge(s(60), false, Some(true)), Verdict::Rejoin);
        assert_eq!(w.judge(s(70), true, Some(true)), Verdict::Fine);
        assert_eq!(w.judge(s(80), false, Some(true)), Verdict::Fine);
        assert_eq!(w.judge(s(140), false, Some(true)), Verdict::Rejoin, "a fresh rejoin");
    }

    #[test]
    fn no_action_while_nothing_waits_or_nobody_can_tell() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = Watchdog::new(LIMIT);
        w.judge(s(0), false, None);
        assert_eq!(w.judge(s(300), false, None), Verdict::Fine, "broker or Postgres down");
        assert_eq!(w.judge(s(300), false, Some(false)), Verdict::Fine, "idle, not stuck");
        assert_eq!(w.judge(s(301), false, Some(true)), Verdict::Rejoin);
    }

    #[test]
    fn the_group_part_of_librdkafka_statistics_is_read_and_the_rest_skipped() {
        let watch = GroupWatch::default();
        watch.record_stats(br#"{"name":"c","brokers":{},"cgrp":{"state":"up","stateage":1,"join_state":"steady","rebalance_age":5,"rebalance_cnt":1,"rebalance_reason":"","assignment_size":3}}"#);
        let state = watch.latest().unwrap();
        assert!(state.is_member());
        assert_eq!(state.assignment_size, 3);
        watch.record_stats(br#"{"cgrp":{"state":"wait-coord","join_state":"wait-unassign-to-complete","assignment_size":0}}"#);
        assert!(!watch.latest().unwrap().is_member());
    }
}
