//! The crate's error type, and the class of failure the supervisor acts on (DESIGN
//! section 5). Every module has its own `thiserror` enum; [`Error`] wraps them all for
//! callers that want one type, and [`Classified`] tells what to do about any of them.
//! The classes are in the leaf module [`class`], so that the modules which classify
//! their errors do not import this wrapper, which imports them.

pub mod class;

pub use class::{io_class, Classified, FailureClass};

use crate::cli::{
    bench::BenchError, drill::DrillError, produce::ProduceError, status::StatusError,
    supervision::SupervisionCliError,
};
use crate::db::DbError;
use crate::offsets::OffsetsError;
use crate::pipeline::StartError;
use crate::settings::SettingsError;
use crate::sinks::lake::{files::LakeFileError, table::LakeTableError};
use crate::sinks::progress::ProgressError;
use crate::sinks::worker::SinkError;
use crate::stages::{contract::ContractLoadError, dead_letter::DeadLetterError};

/// Any eventline error.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is its module's error, documented there
pub enum Error {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Contracts(#[from] ContractLoadError),
    #[error(transparent)]
    DeadLetter(#[from] DeadLetterError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    LakeFile(#[from] LakeFileError),
    #[error(transparent)]
    LakeTable(#[from] LakeTableError),
    #[error(transparent)]
    Offsets(#[from] OffsetsError),
    #[error(transparent)]
    Progress(#[from] ProgressError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Drill(#[from] DrillError),
    #[error(transparent)]
    Bench(#[from] BenchError),
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error(transparent)]
    Supervision(#[from] SupervisionCliError),
}

/// A result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Classified for Error {
    fn class(&self) -> FailureClass {
        match self {
            Error::Db(e) => e.class(),
            Error::DeadLetter(e) => e.class(),
            Error::Sink(e) => e.class(),
            Error::LakeFile(e) => e.class(),
            Error::LakeTable(e) => e.class(),
            Error::Offsets(e) => e.class(),
            Error::Progress(e) => e.class(),
            Error::Start(e) => e.class(),
            // Settings, contracts and the command-line tools: nothing to retry.
            Error::Settings(_)
            | Error::Contracts(_)
            | Error::Produce(_)
            | Error::Drill(_)
            | Error::Bench(_)
            | Error::Status(_)
            | Error::Supervision(_) => FailureClass::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crate_error_keeps_its_modules_class() {
        let gone = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let file = Error::from(LakeFileError::Io { path: "f".into(), source: gone });
        assert_eq!(file.class(), FailureClass::Transient);
        let down = Error::from(DbError::Unavailable("connection refused".into()));
        assert_eq!(down.class(), FailureClass::Transient);
        let bad = ContractLoadError::BadSchema { path: "c.json".into(), message: "x".into() };
        assert_eq!(Error::from(bad).class(), FailureClass::Fatal);
    }
}
