//! ZooKeeper sessions: connect, follow the session state, and build a new client after expiry.
//! Owns client lifetimes only; it never reads or writes znodes beyond creating a chroot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use zookeeper_client::{Acls, Client, CreateMode, SessionState};

use super::ZkError;

/// A ZooKeeper ensemble plus optional chroot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Comma-separated `host:port` list.
    pub connect: String,
    /// Applied to every path.
    pub chroot: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}",
            self.connect,
            self.chroot.as_deref().unwrap_or("")
        )
    }
}

/// Settings shared by all sessions.
#[derive(Clone, Debug)]
pub struct SessionOptions {
    /// Session timeout negotiated with the server.
    pub timeout: Duration,
    /// Digest credentials (`user:password`).
    pub digest: Option<Vec<u8>>,
}

/// What a session looks like right now.
#[derive(Clone, Debug, Default)]
pub struct SessionStatus {
    /// The client of the current session, if one was established and has not expired.
    pub client: Option<Client>,
    /// Increases with every new session: state cached under an older one must be re-read.
    pub generation: u64,
    /// Connected to a server right now.
    pub connected: bool,
    /// Why it is not connected.
    pub last_error: Option<String>,
}

/// One ZooKeeper session, kept alive and replaced on expiry by a background task.
pub struct Session {
    target: Target,
    status: watch::Sender<SessionStatus>,
}

impl Session {
    /// Starts connecting in the background. `changed` receives a unit whenever the session
    /// connects, disconnects or is replaced, so the controller can re-sync.
    pub fn start(
        target: Target,
        options: SessionOptions,
        changed: mpsc::UnboundedSender<()>,
    ) -> Arc<Session> {
        let (status, _) = watch::channel(SessionStatus::default());
        let session = Arc::new(Session { target, status });
        tokio::spawn(run(Arc::downgrade(&session), options, changed));
        session
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The current client and session generation, or why there is none.
    pub fn client(&self) -> Result<(Client, u64), ZkError> {
        let s = self.status.borrow();
        match (&s.client, s.connected) {
            (Some(c), true) => Ok((c.clone(), s.generation)),
            _ => Err(ZkError::Unavailable {
                target: self.target.to_string(),
                reason: s
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not connected".into()),
            }),
        }
    }

    /// Connected right now?
    pub fn is_available(&self) -> bool {
        let s = self.status.borrow();
        s.connected && s.client.is_some()
    }
}

async fn connect(
    target: &Target,
    options: &SessionOptions,
) -> Result<Client, zookeeper_client::Error> {
    let mut connector = Client::connector()
        .with_session_timeout(options.timeout)
        .with_connection_timeout(Duration::from_secs(2).min(options.timeout));
    if let Some(d) = &options.digest {
        connector = connector.with_auth("digest", d);
    }
    let client = connector.connect(&target.connect).await?;
    match &target.chroot {
        None => Ok(client),
        Some(root) => {
            client
                .mkdir(root, &CreateMode::Persistent.with_acls(Acls::anyone_all()))
                .await?;
            client
                .chroot(root.as_str())
                .map_err(|_| zookeeper_client::Error::BadArguments(&"invalid chroot"))
        }
    }
}

async fn run(
    session: std::sync::Weak<Session>,
    options: SessionOptions,
    changed: mpsc::UnboundedSender<()>,
) {
    // Reconnect backoff: 100 ms doubling to 5 s, reset by a session. Kept as three lines rather
    // than `backon`: there is no retried future to wrap (the loop also follows session states),
    // no jitter is wanted (one client per ensemble), and it costs nothing per attempt.
    let mut backoff = Duration::from_millis(100);
    let mut generation = 0u64;
    loop {
        let Some(target) = session.upgrade().map(|s| s.target.clone()) else {
            return;
        };
        match connect(&target, &options).await {
            Ok(client) => {
                backoff = Duration::from_millis(100);
                generation += 1;
                crate::metrics::get().zk_sessions.inc();
                tracing::info!(%target, generation, session = ?client.session_id(), "ZooKeeper session established");
                let mut states = client.state_watcher();
                publish(&session, |s| {
                    *s = SessionStatus {
                        client: Some(client.clone()),
                        generation,
                        connected: true,
                        last_error: None,
                    }
                });
                let _ = changed.send(());
                loop {
                    let state = states.changed().await;
                    match state {
                        SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                            tracing::info!(%target, "ZooKeeper reconnected");
                            publish(&session, |s| {
                                s.connected = true;
                                s.last_error = None;
                            });
                        }
                        SessionState::Disconnected => {
                            tracing::warn!(%target, "ZooKeeper disconnected; the client reconnects within the session");
                            publish(&session, |s| {
                                s.connected = false;
                                s.last_error = Some("disconnected".into());
                            });
                        }
                        SessionState::Expired | SessionState::Closed | SessionState::AuthFailed => {
                            tracing::warn!(%target, ?state, "ZooKeeper session ended; building a new client");
                            publish(&session, |s| {
                                s.client = None;
                                s.connected = false;
                                s.last_error = Some(format!("session {state:?}"));
                            });
                            let _ = changed.send(());
                            break;
                        }
                    }
                    let _ = changed.send(());
                }
            }
            Err(err) => {
                tracing::warn!(%target, %err, ?backoff, "ZooKeeper connect failed");
                publish(&session, |s| {
                    s.connected = false;
                    s.last_error = Some(err.to_string());
                });
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn publish(session: &std::sync::Weak<Session>, f: impl FnOnce(&mut SessionStatus)) {
    if let Some(s) = session.upgrade() {
        s.status.send_modify(f);
    }
}

/// The operator's default session plus one per distinct per-resource ensemble.
pub struct Sessions {
    default: Arc<Session>,
    options: SessionOptions,
    others: Mutex<HashMap<Target, Arc<Session>>>,
    changed: mpsc::UnboundedSender<()>,
}

impl Sessions {
    /// Starts the default session.
    pub fn new(
        default: Target,
        options: SessionOptions,
        changed: mpsc::UnboundedSender<()>,
    ) -> Sessions {
        Sessions {
            default: Session::start(default, options.clone(), changed.clone()),
            options,
            others: Mutex::new(HashMap::new()),
            changed,
        }
    }

    /// The session for a resource's target (`None`: the operator's default).
    pub fn get(&self, target: Option<&Target>) -> Arc<Session> {
        match target {
            None => self.default.clone(),
            Some(t) if *t == *self.default.target() => self.default.clone(),
            Some(t) => {
                let mut others = self.others.lock().expect("sessions lock");
                others
                    .entry(t.clone())
                    .or_insert_with(|| {
                        Session::start(t.clone(), self.options.clone(), self.changed.clone())
                    })
                    .clone()
            }
        }
    }

    /// The ensembles in use without a connected session (the default one first).
    pub fn unavailable(&self) -> Vec<String> {
        let others = self.others.lock().expect("sessions lock");
        std::iter::once(&self.default)
            .chain(others.values())
            .filter(|s| !s.is_available())
            .map(|s| s.target().to_string())
            .collect()
    }
}
