//! Current-state projections: one table per entity type (`account_states`,
//! `order_states`) holding each entity's latest state, folded from its events as the
//! contracts declare ([`declaration`]), recomputed per touched key by SQL
//! ([`fold_sql`]) in the Postgres writer's transaction ([`refresh`]).

pub mod declaration;
pub mod fold_sql;
pub mod refresh;
