//! Fault injection for tests and drills (a plan of [`Fault`]s consumed one per write or
//! batch), and the text of a caught panic. A leaf: the sinks and the stages use it.

pub use crate::settings::Fault;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Fault injection shared across restarts: a plan consumed one entry per write.
#[derive(Debug, Default)]
pub struct Faults {
    plan: VecDeque<Fault>,
    after_batches: u64,
    writes: u64,
}

impl Faults {
    /// A plan of faults, starting after `after_batches` writes.
    pub fn new(plan: &[Fault], after_batches: u64) -> Arc<Mutex<Faults>> {
        Arc::new(Mutex::new(Faults {
            plan: plan.iter().copied().collect(),
            after_batches,
            writes: 0,
        }))
    }

    /// Called before each write; returns the fault to inject now, if any.
    pub fn take_next(&mut self) -> Option<Fault> {
        self.writes += 1;
        if self.writes <= self.after_batches {
            return None;
        }
        self.plan.pop_front()
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
        let faults = Faults::new(&[Fault::Error, Fault::Panic], 2);
        let mut f = faults.lock().unwrap();
        assert_eq!(f.take_next(), None);
        assert_eq!(f.take_next(), None);
        assert_eq!(f.take_next(), Some(Fault::Error));
        assert_eq!(f.take_next(), Some(Fault::Panic));
        assert_eq!(f.take_next(), None);
    }
}
