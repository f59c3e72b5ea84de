//! The operator's settings, already parsed and checked: what `podkeeper run` hands the library.
//! Flags and environment variables are the binary's business (src/cli/); nothing here connects.

use std::net::SocketAddr;
use std::time::Duration;

/// Everything `podkeeper run` needs; see `podkeeper run --help` for each setting.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// ZooKeeper connect string (comma-separated host:port).
    pub zk_connect: String,
    /// Chroot applied to every path the operator writes (created if missing).
    pub zk_chroot: Option<String>,
    /// ZooKeeper session timeout.
    pub zk_session_timeout: Duration,
    /// TLS and login files, re-read when they change.
    pub zk_security: crate::zk::security::SecurityFiles,
    /// The ACLs of the znodes the operator creates.
    pub zk_acl: crate::zk::acl::AclPolicy,
    /// Address of /healthz, /readyz and /metrics.
    pub health_addr: SocketAddr,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Resources may only write under these znode prefixes; the first is home (default
    /// service paths and the leader epoch live under it).
    pub allowed_path_prefix: Vec<String>,
    /// Interval of the full resync that repairs tampering.
    pub resync_interval: Duration,
    /// Identifies this Kubernetes cluster in owner records.
    pub cluster_id: String,
    /// The cluster's DNS domain: Template hosts inside it need no RegistryPolicy.
    pub cluster_domain: String,
    /// Elect one leader among replicas through a Lease.
    pub leader_elect: bool,
    /// Namespace of the Lease (default: POD_NAMESPACE, else `default`).
    pub lease_namespace: Option<String>,
    /// Name of the Lease.
    pub lease_name: String,
    /// How long a leader's Lease lasts without renewal.
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (default: POD_NAME, else hostname-pid).
    pub identity: Option<String>,
    /// Log the plan of every write and write nothing.
    pub dry_run: bool,
    /// Run the RegistryImport controller (the reverse mirror).
    pub import: bool,
    /// At most this many endpoint deletions per ZooKeeper transaction (0: no cap).
    pub max_deletes_per_txn: usize,
    /// How logs are printed.
    pub log_format: LogFormat,
}

/// How logs are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}
