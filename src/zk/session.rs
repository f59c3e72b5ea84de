//! ZooKeeper sessions: connect, follow the session state, and build a new client after expiry.
//! Owns client lifetimes only; it never reads or writes znodes beyond creating a chroot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use zookeeper_client::{Acls, Client, CreateMode, SessionState};

use super::ZkError;
use super::acl::{AclPolicy, NodeAcls, NodeKind};
use super::security::Credentials;

/// A ZooKeeper ensemble plus optional chroot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// Comma-separated `host:port` list.
    pub connect: String,
    /// Applied to every path.
    pub chroot: Option<String>,
}

impl Target {
    /// One spelling per ensemble: hosts trimmed, lowercased, sorted and once each; the chroot
    /// without a trailing `/` (and `/` alone is none). Two spellings of one ensemble must not
    /// look like two ensembles: a move between them would retire what was just written, and
    /// their fences would fence each other.
    pub fn canonical(&self) -> Target {
        let mut hosts: Vec<String> = self
            .connect
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        hosts.sort();
        hosts.dedup();
        let chroot = self
            .chroot
            .as_deref()
            .map(|c| c.trim_end_matches('/'))
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        Target {
            connect: hosts.join(","),
            chroot,
        }
    }
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
    /// TLS and login; `None`: plaintext and anonymous.
    pub credentials: Option<Arc<Credentials>>,
    /// Which ACLs the nodes written through this session get.
    pub acl: AclPolicy,
}

impl SessionOptions {
    /// Plaintext, anonymous, open ACLs.
    pub fn anonymous(timeout: Duration) -> SessionOptions {
        SessionOptions {
            timeout,
            credentials: None,
            acl: AclPolicy::default(),
        }
    }
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
    /// The ACLs of what this session creates (from who it authenticated as).
    pub acls: Option<Arc<NodeAcls>>,
}

/// One ZooKeeper session, kept alive and replaced on expiry by a background task, which
/// closes it when the `Session` is dropped.
pub struct Session {
    target: Target,
    status: watch::Sender<SessionStatus>,
    stop: Arc<tokio::sync::Notify>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A permit is stored if the task is not waiting right now: it stops at its next wait.
        self.stop.notify_one();
    }
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
        let stop = Arc::new(tokio::sync::Notify::new());
        let session = Arc::new(Session {
            target,
            status,
            stop: stop.clone(),
        });
        tokio::spawn(run(Arc::downgrade(&session), options, changed, stop));
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

    /// The ACLs nodes created through the current session get.
    pub fn acls(&self) -> Arc<NodeAcls> {
        self.status
            .borrow()
            .acls
            .clone()
            .unwrap_or_else(|| Arc::new(NodeAcls::open()))
    }

    /// Why the session is not available, if it is not.
    pub fn last_error(&self) -> Option<String> {
        self.status.borrow().last_error.clone()
    }

    /// Connected right now?
    pub fn is_available(&self) -> bool {
        let s = self.status.borrow();
        s.connected && s.client.is_some()
    }
}

/// A new authenticated session (no chroot), or why not, in words. For readers too (the
/// discovery client and `podkeeper resolve`/`tree`).
pub async fn establish(
    connect: &str,
    timeout: Duration,
    creds: Option<&Credentials>,
) -> Result<Client, String> {
    let connector = creds.map_or_else(Client::connector, Credentials::connector);
    let connector = connector
        .with_session_timeout(timeout)
        .with_connection_timeout(Duration::from_secs(2).min(timeout));
    let connected = match creds {
        Some(c) if c.is_tls() => connector.secure_connect(connect).await,
        _ => connector.connect(connect).await,
    };
    let client = match (connected, creds) {
        (Ok(client), _) => client,
        (Err(err), Some(c)) => return Err(c.diagnose(connect, &err).await),
        (Err(err), None) => return Err(err.to_string()),
    };
    if let Some(c) = creds
        && let Some(auth) = c.digest_auth()
        && let Err(err) = client.auth("digest", &auth).await
    {
        return Err(c.diagnose(connect, &err).await);
    }
    Ok(client)
}

/// A new session, authenticated, below the chroot, with the ACLs its identity gets.
async fn connect(target: &Target, options: &SessionOptions) -> Result<(Client, NodeAcls), String> {
    let creds = options.credentials.as_deref();
    let client = establish(&target.connect, options.timeout, creds).await?;
    let writers = super::acl::session_identities(&client, creds)
        .await
        .map_err(|e| format!("whoami: {e}"))?;
    let acls = NodeAcls::new(&options.acl, writers);
    let client = match &target.chroot {
        None => client,
        Some(root) => {
            let create = CreateMode::Persistent.with_acls(Acls::new(acls.of(NodeKind::Ancestor)));
            client
                .mkdir(root, &create)
                .await
                .map_err(|e| format!("creating the chroot {root}: {e}"))?;
            client
                .chroot(root.as_str())
                .map_err(|_| format!("invalid chroot {root}"))?
        }
    };
    Ok((client, acls))
}

async fn run(
    session: std::sync::Weak<Session>,
    options: SessionOptions,
    changed: mpsc::UnboundedSender<()>,
    stop: Arc<tokio::sync::Notify>,
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
            Ok((client, acls)) => {
                backoff = Duration::from_millis(100);
                generation += 1;
                crate::metrics::get().zk_sessions.inc();
                if acls.is_open() && !options.acl.open {
                    tracing::warn!(%target, "ZooKeeper session has no identity (no login, no client certificate): nodes are created writable by anyone");
                }
                let writers: Vec<String> = acls.writers.iter().map(ToString::to_string).collect();
                tracing::info!(%target, generation, session = ?client.session_id(), ?writers, "ZooKeeper session established");
                let mut states = client.state_watcher();
                publish(&session, |s| {
                    *s = SessionStatus {
                        client: Some(client.clone()),
                        generation,
                        connected: true,
                        last_error: None,
                        acls: Some(Arc::new(acls)),
                    }
                });
                let _ = changed.send(());
                loop {
                    let state = tokio::select! {
                        state = states.changed() => state,
                        // Dropped: the client goes with this task, and with it the session.
                        () = stop.notified() => return,
                    };
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
                            let reason = match (state, options.credentials.as_deref()) {
                                (SessionState::AuthFailed, Some(c)) => {
                                    c.diagnose(
                                        &target.connect,
                                        &zookeeper_client::Error::AuthFailed,
                                    )
                                    .await
                                }
                                _ => format!("session {state:?}"),
                            };
                            tracing::warn!(%target, ?state, %reason, "ZooKeeper session ended; building a new client");
                            publish(&session, |s| {
                                s.client = None;
                                s.connected = false;
                                s.last_error = Some(reason);
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
                    s.last_error = Some(err);
                });
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.notified() => return,
                }
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

/// The operator's default session plus one per distinct per-resource ensemble, each kept while
/// resources use it.
pub struct Sessions {
    default: Arc<Session>,
    options: SessionOptions,
    others: Mutex<HashMap<Target, (Arc<Session>, Instant)>>,
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
            default: Session::start(default.canonical(), options.clone(), changed.clone()),
            options,
            others: Mutex::new(HashMap::new()),
            changed,
        }
    }

    /// The session for a resource's target (`None`: the operator's default).
    pub fn get(&self, target: Option<&Target>) -> Arc<Session> {
        let target = target.map(Target::canonical);
        match target.as_ref() {
            None => self.default.clone(),
            Some(t) if *t == *self.default.target() => self.default.clone(),
            Some(t) => {
                let mut others = self.others.lock().expect("sessions lock");
                let (session, used) = others.entry(t.clone()).or_insert_with(|| {
                    // The operator's credentials go to its own ensemble only: a resource
                    // must not be able to send them to a server of its choosing.
                    let options = SessionOptions {
                        credentials: None,
                        ..self.options.clone()
                    };
                    let s = Session::start(t.clone(), options, self.changed.clone());
                    (s, Instant::now())
                });
                *used = Instant::now();
                session.clone()
            }
        }
    }

    /// Closes the per-resource sessions nothing asked for in `idle` (their resources were
    /// fixed, re-pointed or deleted); returns how many. A later `get` opens one again.
    pub fn close_idle(&self, idle: Duration) -> usize {
        let mut others = self.others.lock().expect("sessions lock");
        let before = others.len();
        others.retain(|target, (_, used)| {
            let keep = used.elapsed() < idle;
            if !keep {
                tracing::info!(%target, "closing a ZooKeeper session no resource uses any more");
            }
            keep
        });
        before - others.len()
    }

    /// Per-resource ensembles open now.
    pub fn open_others(&self) -> usize {
        self.others.lock().expect("sessions lock").len()
    }

    /// Why the operator's own ensemble has no connected session, if it has none. Per-resource
    /// ensembles are reported on their resources' status, not here: one resource pointing at a
    /// wrong address must not make every replica unready.
    pub fn unavailable(&self) -> Option<String> {
        let s = &self.default;
        (!s.is_available()).then(|| match s.last_error() {
            Some(why) => format!("{} ({why})", s.target()),
            None => s.target().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ensemble_has_one_canonical_spelling() {
        let t = |c: &str, r: Option<&str>| Target {
            connect: c.into(),
            chroot: r.map(Into::into),
        };
        let a = t("zk-0:2181,zk-1:2181", Some("/team/"));
        let b = t(" ZK-1:2181, zk-0:2181,zk-0:2181", Some("/team"));
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.canonical().to_string(), "zk-0:2181,zk-1:2181/team");
        assert_eq!(t("zk:2181", Some("/")).canonical(), t("zk:2181", None));
        assert_ne!(
            t("zk:2181", None).canonical(),
            t("zk:2182", None).canonical()
        );
    }
}
