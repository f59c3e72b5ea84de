//! The one harness of the integration, e2e and fault suites: real ZooKeeper servers, the golden
//! wire-format records, a registry reader, and (feature e2e) the local control plane.

pub mod clients;
#[cfg(feature = "e2e")]
pub mod cluster;
pub mod pki;
pub mod records;
pub mod registry;
pub mod zk;
