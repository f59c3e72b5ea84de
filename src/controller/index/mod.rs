//! The in-memory index of slim pods, nodes and Services, fed by watch events, and the routing
//! from a pod or Service change to the resources it concerns. Projections only; knows nothing
//! about ZooKeeper.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::intern::Interner;
use crate::model::address::ServiceInfo;
use crate::model::pod::{Labels, NodeInfo, PodInfo};
use crate::model::registration::Registration;
use smol_str::SmolStr;

mod cluster;
mod pods;
mod routes;
#[cfg(test)]
mod tests;

use self::routes::Routes;

/// A resource: (namespace, name).
pub type Key = (String, String);

/// Drained tombstones are dropped after the longest drain a spec may ask for.
const MAX_DRAIN_MS: i64 = 3_600_000;

/// A pod and when its projection last changed.
#[derive(Debug, Clone)]
pub struct PodEntry {
    /// The projection.
    pub info: PodInfo,
    /// When the operator saw the change that produced `info`.
    pub changed_at: Instant,
    /// The pod is gone from the API but still drains.
    pub deleted: bool,
}

/// The pods of one namespace by name. Entries are boxed: a hash table keeps between 7/16 and
/// 7/8 of its buckets full, and with 200-byte buckets (name and entry) the index took 430 B
/// per pod at 10,000 pods; with 32-byte buckets and the boxes, 331 B (348 -> 303 B at
/// 100,000; `cargo run --release --example memory`).
pub type Pods = HashMap<SmolStr, Box<PodEntry>>;

#[derive(Default)]
struct Inner {
    pods: HashMap<String, Pods>,
    nodes: HashMap<String, NodeInfo>,
    /// Per watcher scope (`None`: all namespaces): pods seen since it (re)started listing;
    /// the rest of that scope are gone at InitDone.
    relisting: HashMap<Option<String>, HashSet<(String, SmolStr)>>,
    /// Scopes whose list completed at least once.
    listed: HashSet<Option<String>>,
    /// Tombstones dropped after their drain, not yet reported.
    purged: Vec<PodChange>,
    node_relisting: Option<HashSet<String>>,
    /// Live pods per namespace that list the `podkeeper.io/registered` gate: a resource whose
    /// namespace has none skips the gate pass.
    gated: HashMap<String, usize>,
    /// Services by (namespace, name): the node ports NodePort addresses read.
    services: HashMap<Key, ServiceInfo>,
    /// Per watcher scope, like `relisting` for pods.
    service_relisting: HashMap<Option<String>, HashSet<Key>>,
    services_listed: HashSet<Option<String>>,
    bytes: usize,
    routes: Routes,
    /// One copy of each distinct label set (labels and annotations) and port list.
    labels: Interner<Labels>,
    ports: Interner<Arc<[(SmolStr, u16)]>>,
}

impl Inner {
    /// Makes `info` hold the index's shared copies of its label sets and ports.
    fn share(&mut self, info: &mut PodInfo) {
        self.labels.intern(&mut info.labels);
        self.labels.intern(&mut info.annotations);
        self.ports.intern(&mut info.ports);
    }
}

/// What changed for a pod, so the caller can find the resources that select it.
#[derive(Debug, Clone)]
pub struct PodChange {
    /// Namespace.
    pub namespace: String,
    /// The projection before, if any.
    pub old: Option<PodInfo>,
    /// The projection after, if the pod is still known.
    pub new: Option<PodInfo>,
}

/// Pods by namespace and name, nodes by name, and the routes from pods to resources.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
    /// Woken when the annotation keys grow: the pod watchers re-list to project them.
    relist: tokio::sync::Notify,
    /// How many pod watchers (scopes) must list before the index counts as synced; 0 means 1.
    pod_scopes: std::sync::atomic::AtomicUsize,
    pods_synced: AtomicBool,
    nodes_synced: AtomicBool,
    services_synced: AtomicBool,
}

impl Index {
    /// The pod, node and Service lists have completed at least once.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire)
            && self.nodes_synced.load(Ordering::Acquire)
            && self.services_synced.load(Ordering::Acquire)
    }

    /// The pods are watched by `n` watchers (one per namespace, or one for all).
    pub fn expect_pod_scopes(&self, n: usize) {
        self.pod_scopes.store(n, Ordering::Release);
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().expect("index lock")
    }

    /// Marks the changed pods dirty for the resources that select them (tombstones purged
    /// meanwhile included) and returns those resources.
    fn route(&self, changes: impl IntoIterator<Item = PodChange>) -> Vec<Key> {
        let mut inner = self.write();
        let purged = std::mem::take(&mut inner.purged);
        let routes = &mut inner.routes;
        let mut wake: Vec<Key> = changes
            .into_iter()
            .chain(purged)
            .flat_map(|c| routes.route(&c))
            .collect();
        wake.sort_unstable();
        wake.dedup();
        wake
    }

    /// Runs `f` with the pods of a namespace by name and a node lookup, under the read lock.
    pub fn with_namespace_map<R>(
        &self,
        namespace: &str,
        f: impl FnOnce(Option<&Pods>, &HashMap<String, NodeInfo>) -> R,
    ) -> R {
        let inner = self.inner.read().expect("index lock");
        f(inner.pods.get(namespace), &inner.nodes)
    }

    /// Runs `f` with the pods of a namespace that `reg` may select (a superset: those with its
    /// anchor label, or all when it has none or no registered resource anchors there) and a
    /// node lookup, under the read lock.
    pub fn with_selectable<R>(
        &self,
        namespace: &str,
        reg: &Registration,
        f: impl FnOnce(&mut dyn Iterator<Item = &PodEntry>, &HashMap<String, NodeInfo>) -> R,
    ) -> R {
        let inner = self.inner.read().expect("index lock");
        let Some(pods) = inner.pods.get(namespace) else {
            return f(&mut std::iter::empty(), &inner.nodes);
        };
        let anchor = reg.anchor();
        let anchored = anchor.as_ref().and_then(|a| {
            let names = inner.routes.anchors.get(namespace)?.pods(a)?;
            Some(names.filter_map(|n| pods.get(n).map(|e| &**e)))
        });
        match anchored {
            Some(mut names) => f(&mut names, &inner.nodes),
            None => f(&mut pods.values().map(|e| &**e), &inner.nodes),
        }
    }

    /// (pods held, approximate bytes held).
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.read().expect("index lock");
        let shared = inner.labels.heap_bytes() + inner.ports.heap_bytes();
        (
            inner.pods.values().map(HashMap::len).sum(),
            inner.bytes + shared,
        )
    }
}
