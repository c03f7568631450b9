//! The class of a failure, which tells the supervisor what to do: transient (retry with
//! backoff), poison (isolate the record), fenced (drop the partition) or fatal (stop and
//! say what to fix). At the bottom of the layers: every module that classifies its
//! errors imports it, and it imports nothing of the crate. Each module keeps its own
//! `thiserror` enum; there is no crate-wide error type (the binary reports with anyhow).

/// What the supervisor does about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry with backoff: I/O, pool timeouts, broker transport, Postgres down.
    Transient,
    /// This record can never be stored: isolate it, dead-letter it, store the rest.
    Poison,
    /// Another process owns the partition now: drop that partition only.
    Fenced,
    /// Bad settings, missing permissions, an unwritable lake: fail fast, say what to fix.
    Fatal,
}

/// An error that knows its [`FailureClass`].
pub trait Classified {
    /// What the supervisor should do about it.
    fn class(&self) -> FailureClass;
}

/// The class of an I/O failure: a path we may not write, on a read-only file system, or
/// that is a file where a folder must be (or the reverse) is a setting to fix; anything
/// else (a full disk, a file removed under us) may pass.
pub fn io_class(error: &std::io::Error) -> FailureClass {
    use std::io::ErrorKind::*;
    match error.kind() {
        PermissionDenied | ReadOnlyFilesystem | NotADirectory | IsADirectory => FailureClass::Fatal,
        _ => FailureClass::Transient,
    }
}

/// The delay before retry number `attempt` (0 for the first): `initial` doubled per
/// attempt, capped at `max`. How a transient failure is retried, the one backoff rule of the crate: the sink supervisors, the
/// flows' dedup and dead-letter retries and the progress reads all use it.
pub fn exponential_backoff(
    initial: std::time::Duration,
    max: std::time::Duration,
    attempt: u32,
) -> std::time::Duration {
    initial.saturating_mul(2u32.saturating_pow(attempt)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_split_into_settings_to_fix_and_passing_faults() {
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(io_class(&denied), FailureClass::Fatal);
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(io_class(&full), FailureClass::Transient);
    }
}
