//! Where records come in: the Kafka consumer and its rebalance callback ([`consumer`]),
//! where each assigned partition starts ([`positioning`], read off the event loop),
//! the source actor that batches records per partition ([`actor`], with its rules in
//! [`batching`]; revoked partitions handed over by [`release`]), and the per-partition flow ([`flow`]) that carries each batch through
//! the stages to the sinks. [`group_watch`] guards against a consumer stuck outside its
//! group. [`raw_headers`] reads a record's headers without trusting their names to be UTF-8.

pub mod actor;
pub mod batching;
pub mod consumer;
pub mod flow;
pub mod group_watch;
mod partition_state;
pub mod positioning;
pub mod raw_headers;
pub mod release;
