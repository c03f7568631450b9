//! Fault injection for tests and drills (a plan of [`Fault`]s consumed one per write or
//! batch), and the text of a caught panic. A leaf: the sinks and the stages use it.

pub use crate::settings::Fault;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Fault injection shared across restarts: a plan consumed one entry per write.
#[derive(Debug, Default)]
pub struct Faults {
    plan: VecDeque<Fault>,
    after_batches: u64,
    writes: u64,
    /// No fault before this moment either (a soak's restart halfway through its time).
    not_before: Option<Instant>,
}

impl Faults {
    /// A plan of faults, starting after `after_batches` writes and once `after` has
    /// passed from now.
    pub fn new(plan: &[Fault], after_batches: u64, after: Duration) -> Arc<Mutex<Faults>> {
        Arc::new(Mutex::new(Faults {
            plan: plan.iter().copied().collect(),
            after_batches,
            writes: 0,
            not_before: Instant::now().checked_add(after),
        }))
    }

    /// Called before each write; returns the fault to inject now, if any.
    pub fn take_next(&mut self) -> Option<Fault> {
        self.writes += 1;
        let early = self.not_before.is_some_and(|t| Instant::now() < t);
        if self.writes <= self.after_batches || early {
            return None;
        }
        self.plan.pop_front()
    }
}

/// A wait inside each Postgres transaction (`faults.postgres_pause_in_transaction_ms`),
/// so that a test can hold a write's locks open while it acts.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransactionPause(Option<Duration>);

impl TransactionPause {
    /// No wait when `pause` is zero.
    pub fn new(pause: Duration) -> Self {
        TransactionPause((!pause.is_zero()).then_some(pause))
    }

    /// Called by the transaction, where the wait belongs.
    pub fn inside_transaction(self) {
        if let Some(pause) = self.0 {
            std::thread::sleep(pause);
        }
    }
}

/// The text of a caught panic.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic with a non-string payload".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_in_order_after_the_grace_writes() {
        let faults = Faults::new(&[Fault::Error, Fault::Panic], 2, Duration::ZERO);
        let mut f = faults.lock().unwrap();
        assert_eq!(f.take_next(), None);
        assert_eq!(f.take_next(), None);
        assert_eq!(f.take_next(), Some(Fault::Error));
        assert_eq!(f.take_next(), Some(Fault::Panic));
        assert_eq!(f.take_next(), None);
    }

    #[test]
    fn no_fault_fires_before_its_time() {
        let faults = Faults::new(&[Fault::Error], 0, Duration::from_secs(3600));
        assert_eq!(faults.lock().unwrap().take_next(), None, "an hour is not over");
    }
}
