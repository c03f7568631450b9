//! What happens to a batch between the source and the sinks: the contract check
//! ([`contract`], run by [`validator`]), the replay-stable dedup decision
//! ([`dedup_decision`], run by [`deduplicator`]) the dead-letter queue
//! ([`dead_letter`]), what a tombstone deletes ([`tombstone`]), and which Kafka headers
//! an accepted event keeps ([`headers`]), the typed fields a contract declares
//! ([`crate::payload_fields`]), their values made exact for the sinks ([`typed_values`]), and the declarative transforms beside the contracts ([`transform`], with their Postgres lookup
//! tables read by [`reference_table`]).

pub mod contract;
pub mod dead_letter;
pub mod dedup_decision;
pub mod deduplicator;
pub mod headers;
pub mod lateness;
pub mod reference_table;
pub mod tombstone;
pub mod transform;
pub mod typed_values;
pub mod validator;
