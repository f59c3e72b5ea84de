//! The live side of discovery: one ZooKeeper session and a persistent recursive watch per
//! service path, turned into published snapshots. Reads only; owns no pick logic.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use crate::zk::reader::{ReadError, ReadSession, TreeEvent, TreeWatch};
use arc_swap::ArcSwap;
use futures::FutureExt as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout, timeout_at};

use super::balance::rng::thread_u64;
use super::balance::shape::ZonePreference;
use super::endpoint::{PickContext, Picked};
use super::registry::{self, Layout, Touched};
use super::snapshot::{Registry, Snapshot, Staleness};
use super::{ClientFormat, DiscoveryError, Ensemble};
use crate::model::policy::Policy;

/// How to follow a service path; see [`Discovery::builder`].
#[derive(Clone, Debug)]
pub struct DiscoveryBuilder {
    ensemble: Ensemble,
    path: String,
    pinned: Option<Policy>,
    fail_static: bool,
    coalesce: Duration,
    vnodes: u32,
    zone: Option<Arc<ZonePreference>>,
    format: Option<ClientFormat>,
}

impl DiscoveryBuilder {
    /// Read a folder of another client's layout instead of a podkeeper service path: Dubbo
    /// providers (`/dubbo/<interface>/providers`), Curator / Spring Cloud instances
    /// (`/services/<name>`) or ServerSet members, whoever wrote them (podkeeper, or providers
    /// that register themselves). There is no service record there: the policy is the pinned
    /// one, else the default.
    pub fn format(mut self, format: Option<ClientFormat>) -> Self {
        self.format = format;
        self
    }

    /// Pick only endpoints in the caller's zone while that zone holds at least
    /// `pref.min_share` of the ready weight, and all endpoints otherwise (off by default).
    pub fn prefer_zone(mut self, pref: ZonePreference) -> Self {
        self.zone = pref.zone.is_some().then(|| Arc::new(pref));
        self
    }

    /// Follow this policy whatever the service record says.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.pinned = Some(policy);
        self
    }

    /// Pin a policy, or follow the service record with `None` (the default).
    pub fn pinned_policy(mut self, policy: Option<Policy>) -> Self {
        self.pinned = policy;
        self
    }

    /// Keep the last known endpoints when the registry loses all of them in one step or the
    /// session is lost (on by default). Off: such a snapshot is empty instead.
    pub fn fail_static(mut self, on: bool) -> Self {
        self.fail_static = on;
        self
    }

    /// The ZooKeeper session timeout (default 10 s); connecting gives up after about as long.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.ensemble.session_timeout = timeout;
        self
    }

    /// Read below this chroot: the service path is relative to it.
    pub fn chroot(mut self, chroot: Option<String>) -> Self {
        self.ensemble.chroot = chroot;
        self
    }

    /// TLS and login files (see [`SecurityFiles`](crate::discovery::SecurityFiles)).
    pub fn security(mut self, security: crate::discovery::SecurityFiles) -> Self {
        self.ensemble.security = security;
        self
    }

    /// Connection settings all at once (connect string, chroot, timeout, credentials).
    pub fn ensemble(mut self, ensemble: Ensemble) -> Self {
        self.ensemble = ensemble;
        self
    }

    /// How long to gather further events after the first one before re-reading (default 10 ms).
    /// The operator writes a rollout in batches; one read per batch instead of one per node.
    pub fn coalesce(mut self, window: Duration) -> Self {
        self.coalesce = window;
        self
    }

    /// Ring points per endpoint under ConsistentHash (default 160).
    pub fn vnodes(mut self, vnodes: u32) -> Self {
        self.vnodes = vnodes.max(1);
        self
    }

    /// Connects, reads the service path once and starts following it. Fails when ZooKeeper
    /// cannot be reached within about the session timeout; a missing path is not an error (the
    /// snapshot is empty until the operator writes it). Must run inside a tokio runtime.
    pub async fn start(self) -> Result<Discovery, DiscoveryError> {
        let layout = Layout::new(&self.path)?.with_format(self.format);
        let follower = Follower {
            config: self,
            layout,
            registry: Registry::default(),
        };
        let (session, registry) = follower.open().await?;
        let first = Snapshot::build_at(
            &registry,
            follower.config.pinned,
            None,
            follower.config.vnodes,
            follower.config.zone.clone(),
            crate::now_ms(),
        );
        let first = Arc::new(first);
        let (updates, _) = watch::channel(Arc::clone(&first));
        let shared = Arc::new(Shared {
            current: ArcSwap::new(first),
            updates,
        });
        let path = follower.config.path.clone();
        let follower = Follower {
            registry,
            ..follower
        };
        let task = tokio::spawn(follower.run(Arc::clone(&shared), session));
        let ramp = tokio::spawn(ramp(Arc::clone(&shared)));
        Ok(Discovery {
            shared,
            task,
            ramp,
            path,
        })
    }
}

/// Follows one service path and picks endpoints from its latest snapshot.
///
/// Picks read an [`ArcSwap`], so they never wait on the watch task; subscribers get every new
/// snapshot through a tokio watch channel. Dropping the handle stops the task and closes the session.
#[derive(Debug)]
pub struct Discovery {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    ramp: JoinHandle<()>,
    path: String,
}

#[derive(Debug)]
struct Shared {
    current: ArcSwap<Snapshot>,
    updates: watch::Sender<Arc<Snapshot>>,
}

impl Discovery {
    /// Starts describing a client for the service at `path` (e.g. `/podkeeper/shop/web`) on the
    /// ensemble `connect` (e.g. `zk1:2181,zk2:2181`).
    pub fn builder(connect: impl Into<String>, path: impl Into<String>) -> DiscoveryBuilder {
        DiscoveryBuilder {
            ensemble: Ensemble::new(connect),
            path: path.into(),
            pinned: None,
            fail_static: true,
            coalesce: Duration::from_millis(10),
            vnodes: super::balance::ring::DEFAULT_VNODES,
            zone: None,
            format: None,
        }
    }

    /// Picks an endpoint by the current snapshot's policy; `None` when nothing is pickable.
    #[inline]
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<Picked> {
        self.shared.current.load().pick(ctx)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// Whether the current snapshot may be out of date (see [`Staleness`]).
    pub fn is_stale(&self) -> bool {
        self.shared.current.load().is_stale()
    }

    /// Every snapshot published from now on (the receiver starts at the current one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.updates.subscribe()
    }

    /// The service path followed.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.task.abort();
        self.ramp.abort();
    }
}

/// Rebuilds the current snapshot's tables when a warming endpoint's next ramp step is due. The
/// snapshot says when, so picks never read a clock, and nothing runs while nothing warms.
async fn ramp(shared: Arc<Shared>) {
    let mut updates = shared.updates.subscribe();
    loop {
        let current = shared.current.load_full();
        let Some(at) = current.next_step_ms() else {
            if updates.changed().await.is_err() {
                return;
            }
            continue;
        };
        let wait = Duration::from_millis((at - crate::now_ms()).max(0) as u64);
        tokio::select! {
            changed = updates.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(wait) => {
                let next = Arc::new(current.restepped(crate::now_ms()));
                // Only over the snapshot it was built from: a newer read wins. Subscribers get
                // whatever is current after the swap, so they never see an older view last.
                let before = shared.current.compare_and_swap(&current, next);
                if Arc::ptr_eq(&before, &current) {
                    shared.updates.send_replace(shared.current.load_full());
                }
            }
        }
    }
}

impl Shared {
    fn publish(&self, snapshot: Snapshot) {
        let snapshot = Arc::new(snapshot);
        self.current.store(Arc::clone(&snapshot));
        self.updates.send_replace(snapshot);
    }

    /// Publishes what was read, unless fail-static says to keep the last view: only when the
    /// registry lists no endpoint at all any more.
    fn publish_registry(&self, config: &DiscoveryBuilder, registry: &Registry) {
        let previous = self.current.load_full();
        let fresh =
            Snapshot::build_with_vnodes(registry, config.pinned, Some(&previous), config.vnodes);
        // Only a registry that lists nothing is suspect (wiped, a broken writer): endpoints that
        // are listed but DRAINING or at weight 0 are the operator saying "pick none of these".
        let wiped = fresh.endpoints().is_empty();
        if config.fail_static && wiped && !previous.pickable().is_empty() {
            tracing::warn!(
                path = %config.path,
                kept = previous.pickable().len(),
                "every pickable endpoint vanished at once; keeping the last snapshot (fail-static)"
            );
            if previous.staleness() != Staleness::Emptied {
                self.publish(previous.marked(Staleness::Emptied));
            }
            return;
        }
        self.publish(fresh);
    }

    /// Marks the view as possibly out of date, or, without fail-static after the session is
    /// gone, replaces it with an empty one.
    fn unreachable(&self, config: &DiscoveryBuilder, session_lost: bool) {
        let previous = self.current.load_full();
        if session_lost && !config.fail_static {
            let empty = Snapshot::build_with_vnodes(
                &Registry::default(),
                config.pinned,
                Some(&previous),
                config.vnodes,
            );
            self.publish(empty.marked(Staleness::Unreachable));
        } else if previous.staleness() != Staleness::Unreachable {
            self.publish(previous.marked(Staleness::Unreachable));
        }
    }
}

/// A live session and its watch on the service path.
struct Session {
    zk: ReadSession,
    watcher: TreeWatch,
}

/// What one burst of events asks for.
#[derive(Default)]
struct Batch {
    service: bool,
    everything: bool,
    names: BTreeSet<String>,
    /// The burst ended disconnected.
    disconnected: bool,
    /// The session is over.
    ended: bool,
    reconnected: bool,
}

/// More changed endpoints than this in one burst are cheaper to read by listing the folder.
const MAX_NAMED_READS: usize = 512;

impl Batch {
    fn add(&mut self, layout: &Layout, event: TreeEvent) {
        let path = match event {
            TreeEvent::Node(path, _) => path,
            TreeEvent::Reconnected => {
                self.reconnected = true;
                self.disconnected = false;
                return;
            }
            TreeEvent::Disconnected => {
                self.disconnected = true;
                return;
            }
            TreeEvent::Ended => {
                self.ended = true;
                return;
            }
        };
        match layout.touched(&path) {
            Touched::Service => self.service = true,
            Touched::Folder => self.everything = true,
            Touched::Endpoint(name) if self.names.len() < MAX_NAMED_READS => {
                self.names.insert(name.to_string());
            }
            Touched::Endpoint(_) => self.everything = true,
            Touched::Other => {}
        }
    }

    fn is_terminal(&self) -> bool {
        self.ended
    }

    fn is_empty(&self) -> bool {
        !self.service && !self.everything && self.names.is_empty()
    }
}

/// The watch task's state: its settings and the raw records last read.
struct Follower {
    config: DiscoveryBuilder,
    layout: Layout,
    registry: Registry,
}

impl Follower {
    /// Connects, sets the watch, then reads everything: in that order, so a change made while
    /// reading still raises an event and is read again.
    async fn open(&self) -> Result<(Session, Registry), DiscoveryError> {
        let ensemble = &self.config.ensemble;
        let connect = &ensemble.connect;
        let failed = |source| DiscoveryError::ZooKeeper {
            connect: connect.clone(),
            source,
        };
        let zk = registry::connect(ensemble).await?;
        let deadline = ensemble.session_timeout;
        let prepare = async {
            let watcher = zk.watch_tree(self.layout.service()).await?;
            let registry = registry::read_all(&zk, &self.layout).await?;
            Ok((watcher, registry))
        };
        match timeout(deadline, prepare).await {
            Ok(Ok((watcher, registry))) => Ok((Session { zk, watcher }, registry)),
            Ok(Err(source)) => Err(failed(source)),
            Err(_) => Err(DiscoveryError::Timeout {
                connect: connect.clone(),
                after: deadline,
            }),
        }
    }

    async fn run(mut self, shared: Arc<Shared>, session: Session) {
        let mut session = Some(session);
        let mut backoff = Duration::from_millis(100);
        loop {
            let live = match session.take() {
                Some(live) => live,
                None => match self.open().await {
                    Ok((live, registry)) => {
                        tracing::info!(
                            path = self.layout.service(),
                            "session re-established; registry re-read"
                        );
                        backoff = Duration::from_millis(100);
                        self.registry = registry;
                        shared.publish_registry(&self.config, &self.registry);
                        live
                    }
                    Err(err) => {
                        tracing::warn!(path = self.layout.service(), %err, retry_in = ?backoff, "cannot reach ZooKeeper");
                        // Jittered, so that clients cut off together do not return in lockstep.
                        let spread = 0.5 + 0.5 * (thread_u64() >> 11) as f64 / (1u64 << 53) as f64;
                        tokio::time::sleep(backoff.mul_f64(spread)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            // A panic inside the pre-1.0 client must not leave the snapshot frozen forever:
            // treat it as a lost session and start over with a full read.
            if AssertUnwindSafe(self.follow(&shared, live))
                .catch_unwind()
                .await
                .is_err()
            {
                tracing::error!(
                    path = self.layout.service(),
                    "the watch loop panicked; reconnecting"
                );
            }
            tracing::warn!(
                path = self.layout.service(),
                "ZooKeeper session lost; reconnecting"
            );
            shared.unreachable(&self.config, true);
        }
    }

    /// Applies event bursts; returns when the session is over (expired, closed, refused).
    async fn follow(&mut self, shared: &Shared, mut session: Session) {
        // Set when events may have been missed (a disconnect, a failed read): the next read is
        // a full one, because ZooKeeper does not replay persistent-watch events after a reconnect
        // (the watch itself is set again by `TreeWatch` before it reports the reconnect).
        let mut full_read = false;
        let mut retry_at: Option<Instant> = None;
        loop {
            let mut batch = Batch::default();
            let first = match retry_at {
                Some(at) => timeout_at(at, session.watcher.next()).await.ok(),
                None => Some(session.watcher.next().await),
            };
            if let Some(event) = first {
                batch.add(&self.layout, event);
                let until = Instant::now() + self.config.coalesce;
                // After a terminal session event the watch delivers nothing more.
                while !batch.is_terminal() {
                    match timeout_at(until, session.watcher.next()).await {
                        Ok(event) => batch.add(&self.layout, event),
                        Err(_) => break,
                    }
                }
            }
            if batch.is_terminal() {
                return;
            }
            if batch.disconnected {
                tracing::warn!(
                    path = self.layout.service(),
                    "disconnected from ZooKeeper; keeping the last snapshot"
                );
                full_read = true;
                shared.unreachable(&self.config, false);
                continue;
            }
            full_read |= batch.reconnected || batch.everything;
            if !full_read && batch.is_empty() {
                continue;
            }
            match self.read(&session.zk, full_read, batch).await {
                Ok(()) => {
                    full_read = false;
                    retry_at = None;
                    shared.publish_registry(&self.config, &self.registry);
                }
                Err(ReadError::SessionEnded(_)) => return,
                Err(err) => {
                    tracing::warn!(path = self.layout.service(), %err, "reading the registry failed; will re-read all");
                    full_read = true;
                    retry_at = Some(Instant::now() + Duration::from_secs(1));
                    shared.unreachable(&self.config, false);
                }
            }
        }
    }

    async fn read(&mut self, zk: &ReadSession, full: bool, batch: Batch) -> Result<(), ReadError> {
        let deadline = self.config.ensemble.session_timeout;
        let timed_out = |_| ReadError::Timeout;
        if full {
            self.registry = timeout(deadline, registry::read_all(zk, &self.layout))
                .await
                .map_err(timed_out)??;
            return Ok(());
        }
        let read = registry::read_changed(zk, &self.layout, batch.service, batch.names);
        let (service, endpoints) = timeout(deadline, read).await.map_err(timed_out)??;
        if let Some(service) = service {
            self.registry.service = service;
        }
        for (name, record) in endpoints {
            match record {
                Some(record) => self.registry.endpoints.insert(name, record),
                None => self.registry.endpoints.remove(&name),
            };
        }
        Ok(())
    }
}
