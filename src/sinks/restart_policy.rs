//! Exponential backoff with a restart-rate cap, as a pure state machine so the
//! supervisor's decisions are unit-tested without actors or clocks.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Restart after this delay; `attempt` counts consecutive failures from 1.
    RestartAfter {
        /// Delay.
        backoff: Duration,
        /// Consecutive failure number.
        attempt: u32,
    },
    /// Too many restarts within the window.
    GiveUp,
}

pub use crate::failure::exponential_backoff;

/// Backoff and rate-cap settings plus the recent restart times.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    initial: Duration,
    max: Duration,
    max_restarts: u32,
    window: Duration,
    recent: VecDeque<Instant>,
    consecutive: u32,
}

impl From<&crate::settings::SupervisionSettings> for RestartPolicy {
    fn from(s: &crate::settings::SupervisionSettings) -> Self {
        RestartPolicy::new(
            Duration::from_millis(s.backoff_initial_ms),
            Duration::from_millis(s.backoff_max_ms),
            s.max_restarts,
            Duration::from_secs(s.restart_window_s),
        )
    }
}

impl RestartPolicy {
    /// A policy with no failures yet.
    pub fn new(initial: Duration, max: Duration, max_restarts: u32, window: Duration) -> Self {
        RestartPolicy {
            initial,
            max,
            max_restarts,
            window,
            recent: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, now: Instant) -> RestartDecision {
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.max_restarts {
            return RestartDecision::GiveUp;
        }
        self.recent.push_back(now);
        self.consecutive += 1;
        let backoff = exponential_backoff(self.initial, self.max, self.consecutive - 1);
        RestartDecision::RestartAfter { backoff, attempt: self.consecutive }
    }

    /// A successful write resets the backoff (not the rate window).
    pub fn on_success(&mut self) {
        self.consecutive = 0;
    }

    /// Consecutive failures so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn backoff_doubles_from_initial_and_stops_at_max() {
        let (ms, s) = (Duration::from_millis, Duration::from_secs);
        assert_eq!(exponential_backoff(ms(100), s(5), 0), ms(100));
        assert_eq!(exponential_backoff(ms(100), s(5), 3), ms(800));
        assert_eq!(exponential_backoff(ms(100), s(5), 40), s(5), "no overflow, capped");
    }
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy::new(
            Duration::from_millis(100),
            Duration::from_millis(500),
            4,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets_after_success() {
        let mut p = policy();
        let t = Instant::now();
        let delays: Vec<_> = (0..4)
            .map(|_| match p.on_failure(t) {
                RestartDecision::RestartAfter { backoff, .. } => backoff.as_millis(),
                RestartDecision::GiveUp => 0,
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 500]);
        p.on_success();
        assert_eq!(p.consecutive_failures(), 0);
    }

    #[test]
    fn gives_up_past_the_rate_cap_but_forgets_old_restarts() {
        let mut p = policy();
        let t = Instant::now();
        for _ in 0..4 {
            assert!(matches!(p.on_failure(t), RestartDecision::RestartAfter { .. }));
        }
        assert_eq!(p.on_failure(t), RestartDecision::GiveUp);
        let later = t + Duration::from_secs(61);
        assert!(matches!(p.on_failure(later), RestartDecision::RestartAfter { .. }));
    }
}
