//! Read-only ZooKeeper access for the discovery client and `podkeeper resolve`/`tree`: one
//! session, pipelined reads, and a persistent recursive watch turned into plain events.
//! Returns bytes and names; decoding records is the caller's. Never writes.

use std::time::Duration;

use futures::future::try_join_all;
use zookeeper_client::{
    AddWatchMode, Client, EventType, MultiReadResult, PersistentWatcher, SessionState,
};

use super::security::{Credentials, SecurityFiles};

/// Why a read did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    /// The session is over (expired, closed, refused): connect again and read everything.
    #[error("the ZooKeeper session ended: {0}")]
    SessionEnded(String),
    /// No answer in time.
    #[error("ZooKeeper did not answer in time")]
    Timeout,
    /// Anything else (connection loss, a server error): retry.
    #[error("ZooKeeper read failed: {0}")]
    Failed(String),
}

impl From<zookeeper_client::Error> for ReadError {
    fn from(e: zookeeper_client::Error) -> Self {
        use zookeeper_client::Error as E;
        match e {
            E::SessionExpired | E::ClientClosed | E::AuthFailed => {
                ReadError::SessionEnded(e.to_string())
            }
            E::Timeout => ReadError::Timeout,
            other => ReadError::Failed(other.to_string()),
        }
    }
}

/// Why no session could be opened, in words (TLS, login or the servers).
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpenError {
    /// The credential files cannot be used.
    #[error(transparent)]
    Credentials(#[from] super::security::SecurityError),
    /// Refused or unreachable.
    #[error("{0}")]
    Refused(String),
    /// No session within the deadline.
    #[error("no session within {0:?}")]
    Timeout(Duration),
    /// The chroot is not a valid path.
    #[error("invalid chroot {0:?}")]
    Chroot(String),
}

/// One read-only session.
#[derive(Clone, Debug)]
pub struct ReadSession {
    client: Client,
}

/// What the watch on a tree reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeEvent {
    /// A node at or below the watched path was created, changed or deleted.
    Node(String, Change),
    /// Connected again within the same session: events may have been missed meanwhile, and the
    /// watch must be set again (zookeeper-client 0.11 does not restore persistent watches).
    Reconnected,
    /// The connection dropped; the session may still come back.
    Disconnected,
    /// The session is over; the watch delivers nothing more.
    Ended,
}

/// What happened to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Appeared.
    Created,
    /// Went away.
    Deleted,
    /// Its data changed.
    Changed,
}

/// A persistent recursive watch that survives reconnects: zookeeper-client 0.11 restores only
/// one-shot watches when it resumes a session (its SetWatches request leaves persistent ones
/// out), so this sets the watch again at every reconnect before it reports
/// [`TreeEvent::Reconnected`]. The one place that does so, for the discovery client and the
/// operator's tamper watch alike.
pub struct TreeWatch {
    client: Client,
    path: String,
    watcher: PersistentWatcher,
    ended: bool,
}

impl TreeWatch {
    /// Watches `path` and everything below it through `client`.
    pub async fn open(client: &Client, path: &str) -> Result<TreeWatch, zookeeper_client::Error> {
        let watcher = client
            .watch(path, AddWatchMode::PersistentRecursive)
            .await?;
        Ok(TreeWatch {
            client: client.clone(),
            path: path.to_string(),
            watcher,
            ended: false,
        })
    }

    /// The next event. After [`TreeEvent::Ended`] it stays ended (the client would panic if
    /// asked again).
    pub async fn next(&mut self) -> TreeEvent {
        if self.ended {
            return std::future::pending().await;
        }
        loop {
            let event = self.watcher.changed().await;
            match event.event_type {
                EventType::Session => match event.session_state {
                    s if s.is_terminated() => {
                        self.ended = true;
                        return TreeEvent::Ended;
                    }
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        if self.rearm().await {
                            return TreeEvent::Reconnected;
                        }
                    }
                    SessionState::Disconnected => return TreeEvent::Disconnected,
                    _ => continue,
                },
                EventType::NodeChildrenChanged => continue,
                EventType::NodeCreated => return TreeEvent::Node(event.path, Change::Created),
                EventType::NodeDeleted => return TreeEvent::Node(event.path, Change::Deleted),
                EventType::NodeDataChanged => return TreeEvent::Node(event.path, Change::Changed),
            }
        }
    }

    /// Sets the watch again; false when that failed (the connection dropped again: the old
    /// watcher still reports the next session state, and the next reconnect tries again).
    async fn rearm(&mut self) -> bool {
        let mode = AddWatchMode::PersistentRecursive;
        match self.client.watch(&self.path, mode).await {
            Ok(watcher) => {
                // The new watcher first, then the old one goes: the path stays watched.
                self.watcher = watcher;
                crate::metrics::get().watch_rearms.inc();
                true
            }
            Err(err) => {
                tracing::warn!(path = %self.path, %err, "cannot set the watch again after a reconnect; retrying at the next one");
                false
            }
        }
    }
}

impl ReadSession {
    /// Reads through a session opened elsewhere (the operator's, for the import controller).
    pub fn of(client: Client) -> ReadSession {
        ReadSession { client }
    }

    /// Opens a session with the files' TLS and login (a read-only identity), below `chroot`.
    pub async fn open(
        connect: &str,
        chroot: Option<&str>,
        session_timeout: Duration,
        security: &SecurityFiles,
    ) -> Result<ReadSession, OpenError> {
        let creds = match security.is_empty() {
            true => None,
            false => Some(Credentials::load(security.clone())?),
        };
        let deadline = session_timeout * 2;
        let session = super::session::establish(connect, session_timeout, creds.as_deref());
        let client = tokio::time::timeout(deadline, session)
            .await
            .map_err(|_| OpenError::Timeout(deadline))?
            .map_err(OpenError::Refused)?;
        let client = match chroot {
            None => client,
            Some(root) => client
                .chroot(root)
                .map_err(|_| OpenError::Chroot(root.to_string()))?,
        };
        Ok(ReadSession { client })
    }

    /// Watches `path` and everything below it.
    pub async fn watch_tree(&self, path: &str) -> Result<TreeWatch, ReadError> {
        Ok(TreeWatch::open(&self.client, path).await?)
    }

    /// The data at `path`, `None` when there is no node.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
        match self.client.get_data(path).await {
            Ok((data, _)) => Ok(Some(data)),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The children of `path`, `None` when there is no node.
    pub async fn children(&self, path: &str) -> Result<Option<Vec<String>>, ReadError> {
        match self.client.list_children(path).await {
            Ok(c) => Ok(Some(c)),
            Err(zookeeper_client::Error::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The data at `node` and the children of `folder`, in one request (so both come from the
    /// same moment); `None` for a missing node.
    pub async fn node_and_children(
        &self,
        node: &str,
        folder: &str,
    ) -> Result<(Option<Vec<u8>>, Option<Vec<String>>), ReadError> {
        let mut head = self.client.new_multi_reader();
        head.add_get_data(node)?;
        head.add_get_children(folder)?;
        let mut results = head.commit().await?.into_iter();
        let data = match results.next() {
            Some(r) => data_of(r)?,
            None => None,
        };
        let children = match results.next() {
            Some(MultiReadResult::Children { children }) => Some(children),
            Some(r) => {
                data_of(r)?;
                None
            }
            None => None,
        };
        Ok((data, children))
    }

    /// The data of every path (`None`: no such node), read in pipelined multi requests, so a
    /// thousand nodes cost a handful of round trips.
    pub async fn get_many(&self, paths: &[String]) -> Result<Vec<Option<Vec<u8>>>, ReadError> {
        let chunks = paths
            .chunks(super::READS_PER_MULTI)
            .map(|chunk| async move {
                let mut reader = self.client.new_multi_reader();
                for p in chunk {
                    reader.add_get_data(p)?;
                }
                let results = reader.commit().await?;
                results
                    .into_iter()
                    .map(data_of)
                    .collect::<Result<Vec<_>, _>>()
            });
        Ok(try_join_all(chunks).await?.into_iter().flatten().collect())
    }
}

/// The data of one multi-read result; `None` for a missing node.
fn data_of(r: MultiReadResult) -> Result<Option<Vec<u8>>, ReadError> {
    match r {
        MultiReadResult::Data { data, .. } => Ok(Some(data)),
        MultiReadResult::Error {
            err: zookeeper_client::Error::NoNode,
        } => Ok(None),
        MultiReadResult::Error { err } => Err(err.into()),
        other => Err(ReadError::Failed(format!(
            "unexpected multi read result {other:?}"
        ))),
    }
}
