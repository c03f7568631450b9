//! The class of a failure, which tells the supervisor what to do (DESIGN section 5). A
//! leaf module: every module that classifies its errors imports it, and it imports none.

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
