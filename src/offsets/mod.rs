//! Offsets: where each partition resumes and what may be committed ([`progress`], pure),
//! and committing to Kafka only what both sinks stored ([`tracker`]). Both sinks'
//! durable progress is read by [`crate::sinks::progress`].

pub mod progress;
pub mod tracker;

/// Why offsets could not be committed.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    /// Kafka refused the commit; the next commit carries the same offsets.
    #[error("commit failed: {0}")]
    Commit(rdkafka::error::KafkaError),
}

impl crate::failure::Classified for OffsetsError {
    fn class(&self) -> crate::failure::FailureClass {
        crate::failure::FailureClass::Transient
    }
}
