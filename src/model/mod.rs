//! Pure domain logic: pods to endpoints, weights, and the plan of ZooKeeper changes.
//! No I/O and no clocks: callers pass time in, so every function here is deterministic.

#[cfg(feature = "operator")]
pub mod address;
#[cfg(feature = "operator")]
pub mod desired;
#[cfg(feature = "operator")]
pub mod gate;
pub mod guard;
pub mod import;
pub mod load;
pub mod nodes;
#[cfg(feature = "operator")]
pub mod placement;
pub mod plan;
#[cfg(feature = "operator")]
pub mod pod;
#[cfg(feature = "operator")]
pub mod pod_wire;
pub mod policy;
pub mod record;
#[cfg(feature = "operator")]
pub mod registration;
#[cfg(feature = "operator")]
pub mod selector;
pub mod small_map;
#[cfg(feature = "operator")]
pub mod tenancy;
#[cfg(feature = "operator")]
pub mod tracker;
pub mod weights;

#[cfg(all(test, feature = "operator"))]
mod desired_tests;
