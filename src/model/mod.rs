//! Pure domain logic: pods to endpoints, weights, and the plan of ZooKeeper changes.
//! No I/O and no clocks: callers pass time in, so every function here is deterministic.

pub mod desired;
pub mod guard;
pub mod nodes;
pub mod plan;
pub mod pod;
pub mod policy;
pub mod record;
pub mod selector;
pub mod small_map;
pub mod weights;

#[cfg(test)]
mod desired_tests;
