//! kube-runtime wiring: the ServiceRegistration controller, pod/node watches and their index.
//! Decides what to write and hands it to `zk::writer`; never talks to ZooKeeper directly.
//! The index routes pod changes to resources; a reconcile reads as its steps (reconcile.rs).

mod anchors;
pub mod events;
mod fast;
mod gate;
pub mod index;
mod intern;
pub mod leader;
pub mod load;
mod reconcile;
#[cfg(test)]
mod reconcile_tests;
mod release;
pub use release::{configure_allocator, on_thread_park};
pub mod status;
mod status_writer;
mod tenancy;
mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedSender, unbounded};
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};

use crate::crd::ServiceRegistration;
use crate::model::pod_wire::PodWire;
use crate::zk::fence::{Fence, Fencer};
use crate::zk::session::Sessions;
use crate::zk::tamper::{Tamper, Tampered};
use crate::zk::writer::WriteOptions;
use events::{Events, Recorder, Reporter};
use index::{Index, Key};

pub use reconcile::Error;

/// Operator-wide settings the reconciler needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Resources may only write under these prefixes; the first is home (default service
    /// paths, the leader epoch).
    pub allowed_path_prefixes: Vec<String>,
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
    /// The cluster's DNS domain: Template hosts inside it need no RegistryPolicy.
    pub cluster_domain: String,
}

impl Settings {
    /// The first allowed prefix.
    pub fn home_prefix(&self) -> &str {
        self.allowed_path_prefixes
            .first()
            .map_or("", String::as_str)
    }

    /// How the writer writes under these settings and `fence`, with the resource's client
    /// registries.
    pub fn write_options(
        &self,
        fence: Option<Fence>,
        clients: Option<Arc<crate::zk::clients::ClientRegistries>>,
        acls: Arc<crate::zk::acl::NodeAcls>,
    ) -> WriteOptions {
        WriteOptions {
            acls,
            ledger: None,
            fence,
            dry_run: self.dry_run,
            max_deletes_per_txn: self.max_deletes_per_txn,
            format: Default::default(),
            clients: clients.map(|c| c as Arc<dyn crate::zk::writer::ClientNodes>),
        }
    }
}

/// What a reconcile needs, shared by all of them.
pub struct Context {
    client: kube::Client,
    settings: Settings,
    sessions: Sessions,
    fencer: Fencer,
    /// Slim pods and nodes, and which resources select which pods.
    pub index: Index,
    /// Who leads.
    pub leadership: Arc<leader::Leadership>,
    events: Events,
    entries: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<reconcile::Entry>>>>,
    wake: Wake,
    /// Increases with every full resync: caches from an older epoch are re-read.
    resync_epoch: AtomicU64,
    /// Failing watches by name ("nodes", "pods" or "pods in <namespace>").
    watch_errors: Mutex<HashMap<String, String>>,
    /// Watches the owned znodes for changes made behind podkeeper's back.
    tamper: Tamper,
    /// Paths changed by others, per resource, not looked at yet.
    tampered: Mutex<HashMap<Key, Vec<String>>>,
    /// Pod changes reconcile at once, not through the controller's timer.
    fast: fast::FastPath,
    /// Status patches and Events in flight at once (see [`API_WRITES_IN_FLIGHT`]).
    api_writes: Arc<tokio::sync::Semaphore>,
    /// The RegistryPolicies in force.
    policies: tenancy::Policies,
    /// The last reason for not being ready that was logged.
    last_not_ready: Mutex<Option<String>>,
    /// Home folders (by ensemble) whose ACLs were checked, with the resync epoch of the check.
    home_audited: Mutex<HashMap<(String, String), u64>>,
    /// The load weighting of the resources with `spec.load`.
    load: load::LoadBook,
}

/// Status patches and Events sent to the API server at once. A restart of 1,000 resources
/// otherwise sends 1,000 of each together: the API server queues them, and the client opens a
/// connection per request in flight (HTTP/1.1), each with its TLS and I/O buffers, kept in
/// its pool afterwards.
pub const API_WRITES_IN_FLIGHT: usize = 16;

/// The controllers' trigger channels: one resource, or all of them.
struct Wake {
    one: Vec<(
        Option<String>,
        UnboundedSender<ObjectRef<ServiceRegistration>>,
    )>,
    all: Vec<UnboundedSender<()>>,
}

impl Context {
    fn entry(&self, key: &Key) -> Arc<tokio::sync::Mutex<reconcile::Entry>> {
        self.entries
            .lock()
            .expect("entries lock")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    /// Drops what is remembered of a deleted resource (its status writer stops with it).
    fn forget(&self, key: &Key) {
        self.entries.lock().expect("entries lock").remove(key);
        self.load.forget(key);
    }

    /// Asks the controllers to reconcile these resources.
    fn wake(&self, keys: &[Key]) {
        for (namespace, name) in keys {
            let obj = ObjectRef::new(name).within(namespace);
            for (scope, tx) in &self.wake.one {
                if scope.as_deref().is_none_or(|s| s == namespace) {
                    let _ = tx.unbounded_send(obj.clone());
                }
            }
        }
    }

    /// Asks every controller to reconcile every resource.
    fn reconcile_all(&self) {
        for tx in &self.wake.all {
            let _ = tx.unbounded_send(());
        }
    }

    /// Another client changed something under a resource's folders: look at it now.
    fn on_tampered(&self, t: Tampered) {
        let Some((ns, name)) = t.tag.split_once('/') else {
            return;
        };
        let key: Key = (ns.to_string(), name.to_string());
        self.tampered
            .lock()
            .expect("tampered lock")
            .entry(key.clone())
            .or_default()
            .push(t.path);
        self.wake(&[key]);
    }

    /// The paths others changed under `key`'s folders since the last look.
    fn take_tampered(&self, key: &Key) -> Vec<String> {
        self.tampered
            .lock()
            .expect("tampered lock")
            .remove(key)
            .unwrap_or_default()
    }

    /// The Kubernetes client (for the import controller).
    pub(crate) fn kube(&self) -> &kube::Client {
        &self.client
    }

    /// The operator's settings.
    pub(crate) fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The ZooKeeper sessions, the operator's own ensemble first.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Events, rate-limited per object and reason.
    pub(crate) fn events(&self) -> &Events {
        &self.events
    }

    /// Whether namespace `ns` may connect to `ensemble` (`None`: the operator's own, always
    /// allowed); `Err` names the missing grant, or that policies are not listed yet.
    pub(crate) fn ensemble_granted(
        &self,
        ns: &str,
        ensemble: Option<&crate::zk::session::Target>,
    ) -> Result<(), String> {
        let own = self.sessions.get(None);
        let Some(t) = ensemble
            .map(|t| t.canonical())
            .filter(|t| t != own.target())
        else {
            return Ok(());
        };
        let Some(tenancy) = self.policies.tenancy(&self.settings) else {
            return Err("RegistryPolicies are not listed yet".into());
        };
        let labels = self.policies.labels_of(ns);
        tenancy
            .check_ensemble(ns, &labels, (t.connect, t.chroot))
            .map_err(|r| r.0)
    }

    /// Whether the home folder `key` (ensemble, path) is not checked yet in `epoch`; marks it.
    fn home_audit_due(&self, key: (String, String), epoch: u64) -> bool {
        let mut seen = self.home_audited.lock().expect("home audit lock");
        seen.insert(key, epoch) != Some(epoch)
    }

    fn resync_epoch(&self) -> u64 {
        self.resync_epoch.load(Ordering::Acquire)
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

    /// Why the operator is not ready, if it is not. The detail (ensemble, identity, the
    /// failing watch's error) goes to the log when it changes, never to `/readyz`, which
    /// anyone who reaches the health port can read.
    pub fn not_ready(&self) -> Option<NotReady> {
        let why = not_ready(
            self.sessions.unavailable().as_deref(),
            self.index.synced(),
            &self.watch_errors.lock().expect("watch errors lock"),
        );
        let detail = why.as_ref().map(|w| w.detail.clone());
        let mut last = self.last_not_ready.lock().expect("readiness lock");
        if *last != detail {
            match &detail {
                Some(d) => tracing::warn!(reason = %d, "not ready"),
                None => tracing::info!("ready"),
            }
            *last = detail;
        }
        why
    }
}

/// Why the operator is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// For `/readyz`: what is missing, without names, addresses or identities.
    pub summary: String,
    /// For the log.
    pub detail: String,
}

/// Ready means: the operator's own ZooKeeper ensemble has a session, the pod and node lists are
/// complete, and no watch is failing.
fn not_ready(
    unavailable: Option<&str>,
    synced: bool,
    watch_errors: &HashMap<String, String>,
) -> Option<NotReady> {
    if let Some(zk) = unavailable {
        return Some(NotReady {
            summary: "no ZooKeeper session".into(),
            detail: format!("no ZooKeeper session to {zk}"),
        });
    }
    if !synced {
        let why = "pod and node lists are not complete yet".to_string();
        return Some(NotReady {
            summary: why.clone(),
            detail: why,
        });
    }
    let (w, e) = watch_errors.iter().min()?;
    Some(NotReady {
        summary: format!("{} watch(es) failing", watch_errors.len()),
        detail: format!("{w} watch failing: {e}"),
    })
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
    /// Run the RegistryImport controller beside.
    pub import: bool,
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
        import,
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
    let (tampered_tx, mut tampered_rx) = tokio::sync::mpsc::unbounded_channel();
    let reporter = Reporter {
        controller: "podkeeper".into(),
        instance: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok(),
    };
    let api_writes = Arc::new(tokio::sync::Semaphore::new(API_WRITES_IN_FLIGHT));
    let ctx = Arc::new(Context {
        client: client.clone(),
        events: Events::new(Recorder::new(client.clone(), reporter), api_writes.clone()),
        api_writes,
        policies: tenancy::Policies::default(),
        last_not_ready: Mutex::default(),
        home_audited: Mutex::default(),
        load: load::LoadBook::default(),
        fencer: Fencer::new(
            settings.home_prefix(),
            &settings.cluster_id,
            &settings.identity,
        ),
        settings: settings.clone(),
        sessions,
        index: Index::default(),
        leadership: leadership.clone(),
        entries: Mutex::default(),
        wake: Wake {
            one: triggers,
            all: all_tx,
        },
        resync_epoch: AtomicU64::new(0),
        watch_errors: Mutex::default(),
        tamper: Tamper::new(tampered_tx),
        tampered: Mutex::default(),
        fast: fast::FastPath::default(),
    });
    ready(ctx.clone());
    let c = ctx.clone();
    tokio::spawn(async move {
        while let Some(t) = tampered_rx.recv().await {
            tracing::warn!(path = %t.path, change = ?t.kind, resource = %t.tag, "a znode under a registration's folder was changed by another client");
            c.on_tampered(t);
        }
    });

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
            // Every resource is reconciled at least once per interval: an ensemble none asked
            // for in two of them is used by none.
            c.sessions.close_idle(interval * 2);
            c.full_resync();
        }
    });
    tokio::spawn(watch::nodes(ctx.clone(), Api::<Node>::all(client.clone())));
    tokio::spawn(tenancy::watch(ctx.clone(), Api::all(client.clone())));
    tokio::spawn(tenancy::watch_namespaces(
        ctx.clone(),
        Api::all(client.clone()),
    ));
    tokio::spawn(release::run());
    tokio::spawn(load::run(ctx.clone()));

    ctx.index.expect_pod_scopes(scopes.len());
    let import_scopes = scopes.clone();
    let (mut controllers, mut stores) = (Vec::new(), Vec::new());
    for ((scope, triggers), all) in scopes.into_iter().zip(trigger_rx).zip(all_rx) {
        let (srs, pods) = match &scope {
            None => (
                Api::<ServiceRegistration>::all(client.clone()),
                Api::<PodWire>::all(client.clone()),
            ),
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
        };
        tokio::spawn(watch::pods(ctx.clone(), pods, scope.clone()));
        let services = match &scope {
            None => Api::<Service>::all(client.clone()),
            Some(ns) => Api::namespaced(client.clone(), ns),
        };
        tokio::spawn(watch::services(ctx.clone(), services, scope.clone()));
        let (controller, store) = controller_for(srs);
        stores.push((scope.clone(), store));
        let controller = controller
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
    ctx.fast.set_stores(stores);
    let imports = async {
        if import {
            crate::import::run(ctx.clone(), import_scopes).await;
        }
    };
    futures::future::join(futures::future::join_all(controllers), imports).await;
    tracing::info!("controllers stopped");
    Ok(())
}

/// The controller of `srs`, and its cache of the resources, [`slimmed`].
fn controller_for(
    srs: Api<ServiceRegistration>,
) -> (Controller<ServiceRegistration>, Store<ServiceRegistration>) {
    let (store, writer) = reflector::store();
    let resources = watcher(srs, watcher::Config::default().any_semantic()).modify(slimmed);
    let trigger = reflector(writer, resources).applied_objects();
    (Controller::for_stream(trigger, store.clone()), store)
}

/// A resource as the controller's cache keeps it: without its managed fields (the API server
/// keeps them for server-side apply; they were 8 of the cache's 11 KB per resource, heaptrack,
/// 1,000 resources), its labels and its annotations (Helm's, `kubectl apply`'s copy of the
/// whole object; a map of even one entry is a 0.5 KB B-tree leaf). Nothing here reads them:
/// the reconcile reads the name, generation, finalizers, spec and status, the finalizer patch
/// carries the finalizers alone, the status patch the status, an Event the object reference.
fn slimmed(sr: &mut ServiceRegistration) {
    sr.metadata.managed_fields = None;
    sr.metadata.labels = None;
    sr.metadata.annotations = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_drops_managed_fields_labels_and_annotations_and_keeps_the_rest() {
        let mut sr: ServiceRegistration = serde_yaml::from_str(
            "apiVersion: podkeeper.io/v1alpha1\nkind: ServiceRegistration\n\
             metadata: {name: web, namespace: shop, uid: u1, generation: 3,\n\
               finalizers: [podkeeper.io/cleanup], labels: {app.kubernetes.io/managed-by: Helm},\n\
               annotations: {kubectl.kubernetes.io/last-applied-configuration: '{}', team: a},\n\
               managedFields: [{manager: kubectl, operation: Apply}]}\n\
             spec: {selector: {matchLabels: {app: web}}, port: 80}\n\
             status: {path: /services/web, published: 2}\n",
        )
        .unwrap();
        let mut want = sr.clone();
        slimmed(&mut sr);
        want.metadata.managed_fields = None;
        want.metadata.labels = None;
        want.metadata.annotations = None;
        assert_eq!(
            sr.metadata, want.metadata,
            "name, uid, generation, finalizers stay"
        );
        assert_eq!(sr.spec, want.spec);
        assert_eq!(sr.status, want.status);
        assert!(want.status.is_some_and(|s| s.published == 2));
    }

    #[test]
    fn readiness_counts_the_own_ensemble_the_lists_and_the_watches_and_names_nothing() {
        let none = HashMap::new();
        assert_eq!(not_ready(None, true, &none), None);
        let why = not_ready(
            Some("zk-b:2181 (wrong password for user podkeeper)"),
            true,
            &none,
        )
        .unwrap();
        assert!(why.detail.contains("zk-b:2181"), "{why:?}");
        assert_eq!(
            why.summary, "no ZooKeeper session",
            "nothing of it on /readyz"
        );
        let why = not_ready(None, false, &none).unwrap();
        assert!(why.summary.contains("not complete"), "{why:?}");
        let errs: HashMap<String, String> = [("nodes".into(), "forbidden".into())].into();
        let why = not_ready(None, true, &errs).unwrap();
        assert_eq!(why.detail, "nodes watch failing: forbidden");
        assert_eq!(why.summary, "1 watch(es) failing");
    }
}
