//! Client library: discovers the endpoints podkeeper publishes and picks one per request.
//! Reads ZooKeeper only; never writes, and never touches the operator's controller or writer.
//!
//! ```no_run
//! # async fn demo() -> Result<(), podkeeper::discovery::DiscoveryError> {
//! use podkeeper::discovery::{Discovery, PickContext};
//! let discovery = Discovery::builder("127.0.0.1:2181", "/podkeeper/shop/web").start().await?;
//! if let Some(picked) = discovery.pick(&PickContext::default()) {
//!     println!("send to {}", picked.address());
//! }
//! # Ok(()) }
//! ```

pub mod balance;
mod endpoint;
mod registry;
mod snapshot;
mod watch;

pub use self::balance::Balancer;
pub use self::balance::shape::ZonePreference;
pub use self::endpoint::{Endpoint, InFlightGuard, PickContext, Picked, host_port};
pub use self::registry::{Node, browse};
pub use self::snapshot::{Registry, Snapshot, Staleness};
pub use self::watch::{Discovery, DiscoveryBuilder};
pub use crate::zk::format::registry::Kind as ClientFormat;
pub use crate::zk::security::{Mechanism, SecurityFiles};

/// How to reach ZooKeeper: the ensemble, an optional chroot, the session timeout and credentials.
#[derive(Clone, Debug)]
pub struct Ensemble {
    /// Connect string, e.g. `zk1:2181,zk2:2181`.
    pub connect: String,
    /// Every path is read below this one (e.g. `/prod`).
    pub chroot: Option<String>,
    /// Session timeout; connecting gives up after about twice as long.
    pub session_timeout: std::time::Duration,
    /// TLS and login files (read-only identity); empty: plaintext, anonymous.
    pub security: SecurityFiles,
}

impl Ensemble {
    /// `connect` with no chroot, no credentials and a 10 s session timeout.
    pub fn new(connect: impl Into<String>) -> Ensemble {
        Ensemble {
            connect: connect.into(),
            chroot: None,
            session_timeout: std::time::Duration::from_secs(10),
            security: SecurityFiles::default(),
        }
    }
}

/// What can go wrong while discovering.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The service path is not a valid ZooKeeper path.
    #[error("invalid service path {path:?}: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// ZooKeeper could not be reached or answered with an error.
    #[error("ZooKeeper at {connect}: {source}")]
    ZooKeeper {
        /// The connect string.
        connect: String,
        /// What failed.
        #[source]
        source: crate::zk::reader::ReadError,
    },
    /// No session: TLS, login or the servers refused (the message says which).
    #[error("ZooKeeper at {connect}: {reason}")]
    Connect {
        /// The connect string.
        connect: String,
        /// Why, in words.
        reason: String,
    },
    /// The TLS or login files cannot be used.
    #[error(transparent)]
    Credentials(#[from] crate::zk::security::SecurityError),
    /// No answer within the deadline.
    #[error("ZooKeeper at {connect} did not answer within {after:?}")]
    Timeout {
        /// The connect string.
        connect: String,
        /// How long we waited.
        after: std::time::Duration,
    },
}
