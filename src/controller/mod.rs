//! kube-runtime wiring: the ServiceRegistration controller, pod/node watches and their index.
//! Decides what to write and hands it to `zk::writer`; never talks to ZooKeeper directly.

pub mod index;
pub mod leader;
mod reconcile;
pub mod status;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

use crate::crd::ServiceRegistration;
use crate::model::desired::Registration;
use crate::zk::session::Sessions;
use index::{Index, PodChange};

pub use reconcile::Error;

/// Operator-wide settings the reconciler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Resources may only write under this prefix.
    pub allowed_path_prefix: String,
    /// Written into owner records.
    pub cluster_id: String,
    /// Full resync interval.
    pub resync_interval: Duration,
    /// Log plans, write nothing.
    pub dry_run: bool,
    /// Cap on deletions per transaction (0: none).
    pub max_deletes_per_txn: usize,
    /// This replica's identity (written into the epoch znode).
    pub identity: String,
}

type Key = (String, String);
/// (namespace, name, reason) of a resource's Events.
type EventKey = (String, String, String);

/// Shared state of the controller.
pub struct Context {
    client: kube::Client,
    settings: Settings,
    sessions: Sessions,
    /// Slim pods and nodes.
    pub index: Index,
    /// Compiled registrations by namespace, to route pod changes.
    registrations: RwLock<HashMap<String, HashMap<String, Arc<Registration>>>>,
    annotation_keys: RwLock<Arc<BTreeSet<String>>>,
    relist: tokio::sync::Notify,
    entries: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<reconcile::Entry>>>>,
    recorder: Recorder,
    triggers: Vec<(
        Option<String>,
        UnboundedSender<ObjectRef<ServiceRegistration>>,
    )>,
    reconcile_all: Vec<UnboundedSender<()>>,
    resync_epoch: AtomicU64,
    /// Failing watches by name ("nodes", "pods" or "pods in <namespace>").
    watch_errors: Mutex<HashMap<String, String>>,
    /// Who leads.
    pub leadership: Arc<leader::Leadership>,
    /// Pods changed since each resource's last reconcile (only those records are rebuilt).
    dirty: Mutex<HashMap<Key, std::collections::HashSet<String>>>,
    /// Increases with every node change (zone or readiness): records must be rebuilt.
    node_epoch: AtomicU64,
    /// Last Event time and suppressed count per (namespace, name, reason).
    event_limits: Mutex<HashMap<EventKey, (std::time::Instant, u32)>>,
    /// Per ensemble: the term and fence of the epoch this leader set.
    fences: tokio::sync::Mutex<HashMap<String, (u64, crate::zk::writer::Fence)>>,
}

impl Context {
    fn annotation_keys(&self) -> Arc<BTreeSet<String>> {
        self.annotation_keys.read().expect("keys lock").clone()
    }

    /// Sends a reconcile trigger for every resource whose selector matches the pod before or after.
    fn trigger_for(&self, change: &PodChange) {
        let regs = self.registrations.read().expect("registrations lock");
        let Some(in_ns) = regs.get(&change.namespace) else {
            return;
        };
        for (name, reg) in in_ns {
            let hit = change.old.as_ref().is_some_and(|p| reg.selects(p))
                || change.new.as_ref().is_some_and(|p| reg.selects(p));
            if hit {
                let pod = change
                    .new
                    .as_ref()
                    .or(change.old.as_ref())
                    .map(|p| p.name.to_string());
                if let Some(pod) = pod {
                    self.dirty
                        .lock()
                        .expect("dirty lock")
                        .entry((change.namespace.clone(), name.clone()))
                        .or_default()
                        .insert(pod);
                }
                self.trigger(&change.namespace, name);
            }
        }
    }

    /// Takes the pods changed since the resource's last reconcile.
    fn take_dirty(&self, key: &Key) -> std::collections::HashSet<String> {
        self.dirty
            .lock()
            .expect("dirty lock")
            .remove(key)
            .unwrap_or_default()
    }

    /// A node's zone or readiness changed: every record may change.
    fn node_changed(&self) {
        self.node_epoch.fetch_add(1, Ordering::AcqRel);
        self.reconcile_all();
    }

    fn trigger(&self, namespace: &str, name: &str) {
        let obj = ObjectRef::new(name).within(namespace);
        for (ns, tx) in &self.triggers {
            if ns.as_deref().is_none_or(|n| n == namespace) {
                let _ = tx.unbounded_send(obj.clone());
            }
        }
    }

    /// Asks every controller to reconcile every resource.
    fn reconcile_all(&self) {
        for tx in &self.reconcile_all {
            let _ = tx.unbounded_send(());
        }
    }

    /// Forces a re-read of ZooKeeper on the next reconcile of every resource.
    fn full_resync(&self) {
        self.resync_epoch.fetch_add(1, Ordering::AcqRel);
        self.reconcile_all();
    }

    fn set_watch_error(&self, watch: &str, err: Option<String>) {
        let mut errs = self.watch_errors.lock().expect("watch errors lock");
        match err {
            Some(e) => {
                errs.insert(watch.to_string(), e);
            }
            None => {
                errs.remove(watch);
            }
        }
    }

    /// The fence for writes to `session` in `term`, bumping the epoch znode on first use.
    async fn fence(
        &self,
        session: &crate::zk::session::Session,
        client: &crate::zk::Client,
        term: u64,
    ) -> Result<Option<crate::zk::writer::Fence>, crate::zk::ZkError> {
        if !self.leadership.is_elected() {
            return Ok(None);
        }
        let key = session.target().to_string();
        let mut fences = self.fences.lock().await;
        if let Some((t, f)) = fences.get(&key)
            && *t == term
        {
            return Ok(Some(f.clone()));
        }
        let path = format!("{}/.leader-epoch", self.settings.allowed_path_prefix);
        let fence = crate::zk::writer::bump_epoch(client, &path, &self.settings.identity).await?;
        tracing::info!(term, epoch_version = fence.version, target = %key, "bumped the leader epoch");
        fences.insert(key, (term, fence.clone()));
        Ok(Some(fence))
    }

    /// Why the operator is not ready, if it is not.
    pub fn not_ready_reason(&self) -> Option<String> {
        if !self.sessions.default_session().is_available() {
            return Some("ZooKeeper session is not connected".into());
        }
        if !self.index.synced() {
            return Some("pod and node lists are not complete yet".into());
        }
        let errs = self.watch_errors.lock().expect("watch errors lock");
        if let Some((w, e)) = errs.iter().next() {
            return Some(format!("{w} watch failing: {e}"));
        }
        None
    }
}

/// Everything `run` needs besides the kube client.
pub struct Wiring {
    /// Settings.
    pub settings: Settings,
    /// ZooKeeper sessions.
    pub sessions: Sessions,
    /// Session changes: each one triggers a full resync.
    pub session_changes: tokio::sync::mpsc::UnboundedReceiver<()>,
    /// Namespaces to watch; empty means all.
    pub namespaces: Vec<String>,
    /// Who leads.
    pub leadership: Arc<leader::Leadership>,
}

/// Builds the context and runs the controllers until shutdown. `ready` receives the context as
/// soon as it exists, for the health server.
pub async fn run(
    client: kube::Client,
    wiring: Wiring,
    ready: impl FnOnce(Arc<Context>),
) -> anyhow::Result<()> {
    let Wiring {
        settings,
        sessions,
        mut session_changes,
        namespaces,
        leadership,
    } = wiring;
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let mut trigger_rx = Vec::new();
    let mut triggers = Vec::new();
    let mut all_rx = Vec::new();
    let mut all_tx = Vec::new();
    for scope in &scopes {
        let (tx, rx) = unbounded();
        triggers.push((scope.clone(), tx));
        trigger_rx.push(rx);
        let (tx, rx) = unbounded();
        all_tx.push(tx);
        all_rx.push(rx);
    }
    let reporter = Reporter {
        controller: "podkeeper".into(),
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        settings: settings.clone(),
        sessions,
        index: Index::default(),
        registrations: RwLock::default(),
        annotation_keys: RwLock::default(),
        relist: tokio::sync::Notify::new(),
        entries: Mutex::default(),
        triggers,
        reconcile_all: all_tx,
        resync_epoch: AtomicU64::new(0),
        watch_errors: Mutex::default(),
        leadership: leadership.clone(),
        dirty: Mutex::default(),
        node_epoch: AtomicU64::new(0),
        event_limits: Mutex::default(),
        fences: tokio::sync::Mutex::default(),
    });
    ready(ctx.clone());

    // A new or re-connected ZooKeeper session may have missed changes: re-read everything.
    let c = ctx.clone();
    tokio::spawn(async move {
        while session_changes.recv().await.is_some() {
            c.full_resync();
        }
    });
    // A new leader starts from what ZooKeeper holds, not from what it saw while following.
    let c = ctx.clone();
    let mut leading = leadership.subscribe();
    tokio::spawn(async move {
        while leading.changed().await.is_ok() {
            let term = *leading.borrow_and_update();
            if term.is_some() {
                c.full_resync();
            }
        }
    });
    let c = ctx.clone();
    let interval = settings.resync_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            tracing::debug!("periodic full resync");
            c.full_resync();
        }
    });
    tokio::spawn(watch::nodes(ctx.clone(), Api::<Node>::all(client.clone())));

    ctx.index.expect_pod_scopes(scopes.len());
    let mut controllers = Vec::new();
    for ((scope, triggers), all) in scopes.into_iter().zip(trigger_rx).zip(all_rx) {
        let (srs, pods) = match &scope {
            None => (
                Api::<ServiceRegistration>::all(client.clone()),
                Api::<Pod>::all(client.clone()),
            ),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
        };
        tokio::spawn(watch::pods(ctx.clone(), pods, scope.clone()));
        let controller = Controller::new(srs, watcher::Config::default().any_semantic())
            .with_config(ControllerConfig::default().concurrency(32))
            .reconcile_on(triggers)
            .reconcile_all_on(all)
            .shutdown_on_signal()
            .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
            .for_each(|res| async move {
                if let Err(err) = res {
                    tracing::debug!(%err, "reconcile failed");
                }
            });
        controllers.push(controller);
    }
    futures::future::join_all(controllers).await;
    tracing::info!("controllers stopped");
    Ok(())
}
