//! Everything that talks to ZooKeeper: sessions, the transactional writer, and the path layout.
//! The `zookeeper-client` crate is pre-1.0, so it is used only inside this module.

pub mod acl;
pub mod clients;
pub mod fence;
pub mod format;
pub mod layout;
pub mod reader;
pub mod security;
pub mod session;
pub mod tamper;
mod tls_probe;
pub mod writer;

pub use zookeeper_client::Client;

/// Reads per multi-read request, for the writer and the discovery client alike. Every request
/// costs a fixed ~70 µs here whatever it carries: 10,000 `get_data` pipelined on one connection
/// took 0.5–1.1 s, the same reads in multi-reads of 128 about 30 ms (docs/performance-history.md,
/// round 11). Records are a few hundred bytes, so a response of 128 stays far below the 1 MiB
/// packet limit of Java readers.
pub(crate) const READS_PER_MULTI: usize = 128;

/// Maps a `zookeeper-client` error of `op` on `path` to [`ZkError::Server`] (for `map_err`).
pub(crate) fn server<'p>(
    op: &'static str,
    path: &'p str,
) -> impl FnOnce(zookeeper_client::Error) -> ZkError + 'p {
    move |source| ZkError::Server {
        op,
        path: path.to_string(),
        source,
    }
}

/// A ZooKeeper failure, by what the caller should do about it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ZkError {
    /// No usable session: retry with backoff and show ZooKeeperAvailable=False.
    #[error("ZooKeeper {target} is unavailable: {reason}")]
    Unavailable {
        /// The ensemble.
        target: String,
        /// Why.
        reason: String,
    },
    /// What the operator had cached no longer matches ZooKeeper: re-read and plan again.
    #[error("ZooKeeper state changed under us at {path}: {source}")]
    Stale {
        /// Where.
        path: String,
        /// The server's answer.
        source: zookeeper_client::Error,
    },
    /// The leader epoch moved on: another replica leads now. Step down; nothing was written.
    #[error("fenced at {path}: a newer leader bumped the epoch; this replica steps down")]
    Fenced {
        /// The service path of the rejected write.
        path: String,
    },
    /// Any other server or connection error.
    #[error("ZooKeeper {op} {path}: {source}")]
    Server {
        /// Operation.
        op: &'static str,
        /// Where.
        path: String,
        /// The error.
        source: zookeeper_client::Error,
    },
    /// A node this resource deletes has children another client created below it (ZooKeeper
    /// deletes no node with children); the writer clears them and tries again.
    #[error("ZooKeeper refused to delete {path}: another client created nodes below it")]
    Occupied {
        /// The node.
        path: String,
    },
    /// Another Kubernetes cluster already uses this cluster id on the ensemble: nothing is
    /// written there, instead of taking over its paths.
    #[error(
        "cluster id {id:?} is already used on this ZooKeeper ensemble by another Kubernetes cluster (its kube-system namespace uid is {theirs}, this one's is {ours}; see {path}): give each cluster its own --cluster-id"
    )]
    ClusterIdTaken {
        /// The cluster id.
        id: String,
        /// The marker node.
        path: String,
        /// The marker found.
        theirs: String,
        /// This cluster's.
        ours: String,
    },
    /// One record is larger than a transaction may carry.
    #[error("endpoint record {name} is {bytes} bytes, over the {limit}-byte transaction budget")]
    TooLarge {
        /// Endpoint name.
        name: String,
        /// Its size.
        bytes: usize,
        /// The budget.
        limit: usize,
    },
}

impl ZkError {
    /// A short label for metrics and condition reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            ZkError::Unavailable { .. } => "unavailable",
            ZkError::Stale { .. } => "stale",
            ZkError::Fenced { .. } => "fenced",
            ZkError::Server { .. } => "server",
            ZkError::TooLarge { .. } => "too_large",
            ZkError::Occupied { .. } => "occupied",
            ZkError::ClusterIdTaken { .. } => "cluster_id_taken",
        }
    }

    /// Worth retrying soon (connection trouble or a race), rather than a lasting problem?
    pub fn is_transient(&self) -> bool {
        match self {
            ZkError::Unavailable { .. } | ZkError::Stale { .. } | ZkError::Occupied { .. } => true,
            ZkError::Server { source, .. } => matches!(
                source,
                zookeeper_client::Error::ConnectionLoss
                    | zookeeper_client::Error::SessionExpired
                    | zookeeper_client::Error::Timeout
                    | zookeeper_client::Error::ClientClosed
                    | zookeeper_client::Error::Throttled
                    | zookeeper_client::Error::SessionMoved
            ),
            ZkError::TooLarge { .. } | ZkError::Fenced { .. } | ZkError::ClusterIdTaken { .. } => {
                false
            }
        }
    }
}
