//! `podkeeper resolve` and `podkeeper tree`.

/// Arguments of `podkeeper resolve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ResolveArgs {
    /// ZooKeeper connect string.
    #[arg(long, env = "PODKEEPER_ZK_CONNECT", default_value = "127.0.0.1:2181")]
    pub zk_connect: String,
    /// Service path, e.g. /podkeeper/shop/web.
    pub path: String,
}

/// Arguments of `podkeeper tree`.
#[derive(clap::Args, Debug, Clone)]
pub struct TreeArgs {
    /// ZooKeeper connect string.
    #[arg(long, env = "PODKEEPER_ZK_CONNECT", default_value = "127.0.0.1:2181")]
    pub zk_connect: String,
    /// Where to start.
    #[arg(default_value = "/podkeeper")]
    pub path: String,
}

/// Runs `podkeeper resolve`.
pub async fn resolve(_args: ResolveArgs) -> anyhow::Result<()> {
    anyhow::bail!("resolve is not implemented yet")
}

/// Runs `podkeeper tree`.
pub async fn tree(_args: TreeArgs) -> anyhow::Result<()> {
    anyhow::bail!("tree is not implemented yet")
}
