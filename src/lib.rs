//! podkeeper: mirrors ready pods selected by `ServiceRegistration` resources into ZooKeeper,
//! and lets programs outside Kubernetes discover and load-balance across them.

pub mod config;
pub mod crd;
pub mod discovery;
pub mod model;

/// Runs the operator until a signal arrives.
pub async fn run(_args: config::RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("the operator is not wired yet")
}
