//! The in-memory index of slim pods, nodes and Services, fed by watch events, and the routing
//! from a pod or Service change to the resources it concerns. Projections only; knows nothing
//! about ZooKeeper.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::anchors::Anchors;
use super::intern::Interner;
use crate::model::address::ServiceInfo;
use crate::model::desired::Registration;
use crate::model::pod::{Labels, NodeInfo, PodInfo};
use smol_str::SmolStr;

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

/// Which resources select which pods, and what each has not seen yet.
#[derive(Default)]
struct Routes {
    /// Compiled registrations by namespace and name.
    registrations: HashMap<String, HashMap<String, Arc<Registration>>>,
    /// Per namespace: pods and registrations by the labels their selectors anchor on.
    anchors: HashMap<String, Anchors>,
    /// Annotation keys some registration reads; the pod projection keeps only these.
    annotation_keys: Arc<BTreeSet<String>>,
    /// Pods changed since each resource's last reconcile (only those records are rebuilt).
    dirty: HashMap<Key, HashSet<String>>,
    /// Increases with every node change (zone or readiness): every record must be rebuilt.
    node_epoch: u64,
}

impl Routes {
    /// Marks the pod dirty for every resource that selects it before or after the change, and
    /// returns those resources. Only the resources anchored on one of its labels are tested.
    fn route(&mut self, change: &PodChange) -> Vec<Key> {
        let (Some(in_ns), Some(anchors)) = (
            self.registrations.get(&change.namespace),
            self.anchors.get(&change.namespace),
        ) else {
            return Vec::new();
        };
        let Some(pod) = change.new.as_ref().or(change.old.as_ref()) else {
            return Vec::new();
        };
        let mut wake = Vec::new();
        let candidates = [&change.old, &change.new]
            .into_iter()
            .flatten()
            .flat_map(|p| anchors.resources(&p.labels));
        for name in candidates {
            let Some(reg) = in_ns.get(name) else { continue };
            let hit = change.old.as_ref().is_some_and(|p| reg.selects(p))
                || change.new.as_ref().is_some_and(|p| reg.selects(p));
            if hit {
                let key = (change.namespace.clone(), name.clone());
                self.dirty
                    .entry(key.clone())
                    .or_default()
                    .insert(pod.name.to_string());
                wake.push(key);
            }
        }
        wake
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

    /// A pod was added or modified. Returns the resources to wake (none when nothing they see
    /// changed).
    pub fn apply_pod(&self, namespace: &str, info: PodInfo, now: Instant) -> Vec<Key> {
        let change = Self::pod_applied(&mut self.write(), namespace, info, now);
        self.route(change)
    }

    /// A pod was deleted. A pod that was ready when it began terminating stays as a tombstone
    /// until its drain ends. Returns the resources to wake, tombstones purged meanwhile included.
    pub fn delete_pod(
        &self,
        namespace: &str,
        info: PodInfo,
        now: Instant,
        now_ms: i64,
    ) -> Vec<Key> {
        let change = Self::pod_deleted(&mut self.write(), namespace, info, now, now_ms);
        self.route(change)
    }

    /// The pod watcher of `scope` (a namespace, or `None` for all) starts a (re)list.
    pub fn pods_relist_started(&self, scope: Option<&str>) {
        self.write()
            .relisting
            .insert(scope.map(str::to_string), HashSet::new());
    }

    /// The (re)list of `scope` finished: its pods not seen are gone. Returns the resources to
    /// wake.
    pub fn pods_relist_done(&self, scope: Option<&str>, now: Instant, now_ms: i64) -> Vec<Key> {
        let changes = self.relist_done(scope, now, now_ms);
        self.route(changes)
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

    fn pod_applied(
        inner: &mut Inner,
        namespace: &str,
        mut info: PodInfo,
        now: Instant,
    ) -> Option<PodChange> {
        inner.share(&mut info);
        for (scope, seen) in inner.relisting.iter_mut() {
            if scope.as_deref().is_none_or(|s| s == namespace) {
                seen.insert((namespace.to_string(), info.name.clone()));
            }
        }
        let ns = inner.pods.entry(namespace.to_string()).or_default();
        let old = ns.get(&info.name);
        if let Some(old) = old {
            // The name the tracker, the records and the writer's cache already share.
            info.name = old.info.name.clone();
            info.carry_termination_readiness(&old.info);
            if old.info == info && !old.deleted {
                return None;
            }
        }
        let was_gated = old.is_some_and(|e| !e.deleted && e.info.registered.is_some());
        let old_info = old.map(|e| e.info.clone());
        let is_gated = info.registered.is_some();
        let delta = info.memory_bytes() as isize
            - old_info.as_ref().map_or(0, |o| o.memory_bytes() as isize);
        let entry = PodEntry {
            info: info.clone(),
            changed_at: now,
            deleted: false,
        };
        match ns.get_mut(&info.name) {
            Some(e) => **e = entry,
            None => {
                ns.insert(info.name.clone(), Box::new(entry));
            }
        }
        if let Some(anchors) = inner.routes.anchors.get_mut(namespace) {
            let old_labels = old_info.as_ref().map(|o| &o.labels);
            anchors.pod_moved(&info.name, old_labels, Some(&info.labels));
        }
        inner.bytes = (inner.bytes as isize + delta).max(0) as usize;
        Self::count_gated(inner, namespace, was_gated, is_gated);
        Some(PodChange {
            namespace: namespace.to_string(),
            old: old_info,
            new: Some(info),
        })
    }

    fn pod_deleted(
        inner: &mut Inner,
        namespace: &str,
        mut info: PodInfo,
        now: Instant,
        now_ms: i64,
    ) -> Option<PodChange> {
        inner.share(&mut info);
        let ns = inner.pods.entry(namespace.to_string()).or_default();
        let old = ns.remove(&info.name)?;
        info.name = old.info.name.clone();
        let was_gated = !old.deleted && old.info.registered.is_some();
        let mut freed = old.info.memory_bytes();
        info.carry_termination_readiness(&old.info);
        let tombstone = info.ready_at_termination
            && info
                .terminating_since_ms
                .is_some_and(|t| t + MAX_DRAIN_MS > now_ms);
        if let Some(anchors) = inner.routes.anchors.get_mut(namespace) {
            let kept = tombstone.then_some(&info.labels);
            anchors.pod_moved(&info.name, Some(&old.info.labels), kept);
        }
        let change = if tombstone {
            freed = freed.saturating_sub(info.memory_bytes());
            let entry = PodEntry {
                info: info.clone(),
                changed_at: now,
                deleted: true,
            };
            ns.insert(info.name.clone(), Box::new(entry));
            PodChange {
                namespace: namespace.to_string(),
                old: Some(old.info),
                new: Some(info),
            }
        } else {
            PodChange {
                namespace: namespace.to_string(),
                old: Some(old.info),
                new: None,
            }
        };
        inner.bytes = inner.bytes.saturating_sub(freed);
        // Tombstones are not counted: the gate pass skips them.
        Self::count_gated(inner, namespace, was_gated, false);
        Self::gc_tombstones(inner, now_ms);
        Some(change)
    }

    fn count_gated(inner: &mut Inner, namespace: &str, was: bool, is: bool) {
        if was == is {
            return;
        }
        let n = inner.gated.entry(namespace.to_string()).or_default();
        *n = if is { *n + 1 } else { n.saturating_sub(1) };
    }

    /// Does the namespace hold a live pod with the `podkeeper.io/registered` gate?
    pub fn has_gated_pods(&self, namespace: &str) -> bool {
        let inner = self.inner.read().expect("index lock");
        inner.gated.get(namespace).is_some_and(|n| *n > 0)
    }

    fn gc_tombstones(inner: &mut Inner, now_ms: i64) {
        let mut freed = 0;
        let mut purged = Vec::new();
        for (namespace, ns) in inner.pods.iter_mut() {
            let mut anchors = inner.routes.anchors.get_mut(namespace);
            ns.retain(|_, e| {
                let keep = !e.deleted
                    || e.info
                        .terminating_since_ms
                        .is_some_and(|t| t + MAX_DRAIN_MS > now_ms);
                if !keep {
                    if let Some(a) = anchors.as_mut() {
                        a.pod_moved(&e.info.name, Some(&e.info.labels), None);
                    }
                    freed += e.info.memory_bytes();
                    purged.push(PodChange {
                        namespace: namespace.clone(),
                        old: Some(e.info.clone()),
                        new: None,
                    });
                }
                keep
            });
        }
        inner.bytes = inner.bytes.saturating_sub(freed);
        inner.purged.extend(purged);
    }

    fn relist_done(&self, scope: Option<&str>, now: Instant, now_ms: i64) -> Vec<PodChange> {
        let mut inner = self.write();
        let key = scope.map(str::to_string);
        let seen = inner.relisting.remove(&key).unwrap_or_default();
        inner.listed.insert(key);
        let gone: Vec<(String, PodInfo)> = inner
            .pods
            .iter()
            .filter(|(ns, _)| scope.is_none_or(|s| s == ns.as_str()))
            .flat_map(|(ns, pods)| pods.iter().map(move |(n, e)| (ns, n, e)))
            .filter(|(ns, n, e)| !e.deleted && !seen.contains(&((*ns).clone(), (*n).clone())))
            .map(|(ns, _, e)| (ns.clone(), e.info.clone()))
            .collect();
        let changes = gone
            .into_iter()
            .filter_map(|(ns, info)| Self::pod_deleted(&mut inner, &ns, info, now, now_ms))
            .collect();
        if inner.listed.len() >= self.pod_scopes.load(Ordering::Acquire).max(1) {
            self.pods_synced.store(true, Ordering::Release);
        }
        changes
    }

    /// A resource's compiled registration (`None`: it no longer selects pods). Pods it reads
    /// annotations from are re-listed when it needs keys the projections lack.
    pub fn register(&self, namespace: &str, name: &str, reg: Option<Arc<Registration>>) {
        let mut inner = self.write();
        let inner = &mut *inner;
        let routes = &mut inner.routes;
        let in_ns = routes
            .registrations
            .entry(namespace.to_string())
            .or_default();
        let old = in_ns.get(name);
        if let (Some(old), Some(new)) = (old, &reg)
            && Arc::ptr_eq(old, new)
        {
            return;
        }
        let anchors = routes.anchors.entry(namespace.to_string()).or_default();
        let same_anchor = old
            .zip(reg.as_ref())
            .is_some_and(|(o, n)| o.anchor() == n.anchor());
        if !same_anchor {
            if let Some(old) = old {
                anchors.remove_resource(name, old.anchor());
            }
            if let Some(new) = &reg {
                let pods = inner.pods.get(namespace).into_iter().flatten();
                anchors.add_resource(name, new.anchor(), pods.map(|(n, e)| (n, &e.info.labels)));
            }
        }
        let Some(reg) = reg else {
            in_ns.remove(name);
            return;
        };
        let new_keys: Vec<String> = reg
            .annotation_keys()
            .filter(|k| !routes.annotation_keys.contains(*k))
            .map(str::to_string)
            .collect();
        in_ns.insert(name.to_string(), reg);
        if !new_keys.is_empty() {
            let mut keys = (*routes.annotation_keys).clone();
            keys.extend(new_keys);
            routes.annotation_keys = Arc::new(keys);
            self.relist.notify_waiters();
        }
    }

    /// Annotation keys worth keeping in pod projections (besides `podkeeper.io/*`).
    pub fn annotation_keys(&self) -> Arc<BTreeSet<String>> {
        self.inner
            .read()
            .expect("index lock")
            .routes
            .annotation_keys
            .clone()
    }

    /// Resolves when the annotation keys grew since the call: pod watchers then re-list.
    pub fn relist_wanted(&self) -> tokio::sync::futures::Notified<'_> {
        self.relist.notified()
    }

    /// Takes the pods changed since the resource's last reconcile.
    pub fn take_dirty(&self, key: &Key) -> HashSet<String> {
        self.inner
            .write()
            .expect("index lock")
            .routes
            .dirty
            .remove(key)
            .unwrap_or_default()
    }

    /// Marks a pod dirty for a resource, so its next reconcile looks at it again.
    pub fn touch(&self, key: &Key, pod: &str) {
        self.write()
            .routes
            .dirty
            .entry(key.clone())
            .or_default()
            .insert(pod.to_string());
    }

    /// Counts node changes: a resource whose records were built at another epoch rebuilds them.
    pub fn node_epoch(&self) -> u64 {
        self.inner.read().expect("index lock").routes.node_epoch
    }

    /// A node was added or modified; true if its projection changed.
    pub fn apply_node(&self, name: &str, info: NodeInfo) -> bool {
        let mut inner = self.inner.write().expect("index lock");
        if let Some(seen) = inner.node_relisting.as_mut() {
            seen.insert(name.to_string());
        }
        let changed = inner.nodes.insert(name.to_string(), info.clone()) != Some(info);
        inner.routes.node_epoch += u64::from(changed);
        changed
    }

    /// A node was deleted.
    pub fn delete_node(&self, name: &str) -> bool {
        let mut inner = self.inner.write().expect("index lock");
        let changed = inner.nodes.remove(name).is_some();
        inner.routes.node_epoch += u64::from(changed);
        changed
    }

    /// The node watcher starts a (re)list.
    pub fn nodes_relist_started(&self) {
        self.inner.write().expect("index lock").node_relisting = Some(HashSet::new());
    }

    /// The node (re)list finished.
    pub fn nodes_relist_done(&self) {
        let mut inner = self.inner.write().expect("index lock");
        let seen = inner.node_relisting.take().unwrap_or_default();
        inner.nodes.retain(|n, _| seen.contains(n));
        inner.routes.node_epoch += 1;
        drop(inner);
        self.nodes_synced.store(true, Ordering::Release);
    }

    /// A Service was added or modified (`Some`) or deleted (`None`). Returns the resources
    /// whose NodePort address reads it, when its projection changed.
    pub fn apply_service(
        &self,
        namespace: &str,
        name: &str,
        info: Option<ServiceInfo>,
    ) -> Vec<Key> {
        let mut inner = self.write();
        let key = (namespace.to_string(), name.to_string());
        for (scope, seen) in inner.service_relisting.iter_mut() {
            if scope.as_deref().is_none_or(|s| s == namespace) {
                seen.insert(key.clone());
            }
        }
        let changed = match info {
            Some(info) => inner.services.insert(key, info.clone()) != Some(info),
            None => inner.services.remove(&key).is_some(),
        };
        if !changed {
            return Vec::new();
        }
        Self::reading_service(&inner.routes, namespace, name)
    }

    fn reading_service(routes: &Routes, namespace: &str, name: &str) -> Vec<Key> {
        routes
            .registrations
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|(_, reg)| reg.node_port_service() == Some(name))
            .map(|(n, _)| (namespace.to_string(), n.clone()))
            .collect()
    }

    /// The Service watcher of `scope` (a namespace, or `None` for all) starts a (re)list.
    pub fn services_relist_started(&self, scope: Option<&str>) {
        self.write()
            .service_relisting
            .insert(scope.map(str::to_string), HashSet::new());
    }

    /// The Service (re)list of `scope` finished: its Services not seen are gone. Returns the
    /// resources that read one of those.
    pub fn services_relist_done(&self, scope: Option<&str>) -> Vec<Key> {
        let mut inner = self.write();
        let scope_key = scope.map(str::to_string);
        let seen = inner
            .service_relisting
            .remove(&scope_key)
            .unwrap_or_default();
        inner.services_listed.insert(scope_key);
        let gone: Vec<Key> = inner
            .services
            .keys()
            .filter(|k| scope.is_none_or(|s| s == k.0) && !seen.contains(*k))
            .cloned()
            .collect();
        let mut wake = Vec::new();
        for key in gone {
            inner.services.remove(&key);
            wake.extend(Self::reading_service(&inner.routes, &key.0, &key.1));
        }
        if inner.services_listed.len() >= self.pod_scopes.load(Ordering::Acquire).max(1) {
            self.services_synced.store(true, Ordering::Release);
        }
        wake
    }

    /// The projection of a Service.
    pub fn service(&self, namespace: &str, name: &str) -> Option<ServiceInfo> {
        let inner = self.inner.read().expect("index lock");
        inner
            .services
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The change-level view the routing is built on.
    impl Index {
        fn applied(&self, ns: &str, info: PodInfo, now: Instant) -> Option<PodChange> {
            Self::pod_applied(&mut self.write(), ns, info, now)
        }
        fn deleted(&self, ns: &str, info: PodInfo, now: Instant, ms: i64) -> Option<PodChange> {
            Self::pod_deleted(&mut self.write(), ns, info, now, ms)
        }
        fn take_purged(&self) -> Vec<PodChange> {
            std::mem::take(&mut self.write().purged)
        }
    }

    pub(super) fn info(name: &str, ready: bool, terminating: Option<i64>) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: Labels::default(),
            annotations: Labels::default(),
            ip: Some("10.0.0.1".into()),
            ports: [].into(),
            node: None,
            ready,
            registered: None,
            host_network: false,
            host_ports: Box::new([]),
            terminating_since_ms: terminating,
            ready_at_termination: false,
            ready_since_ms: 0,
        }
    }

    #[test]
    fn gated_pods_are_counted_per_namespace_while_they_live() {
        let idx = Index::default();
        let now = Instant::now();
        let gated = |name: &str, ready: bool, t: Option<i64>| PodInfo {
            registered: Some(false),
            ..info(name, ready, t)
        };
        assert!(!idx.has_gated_pods("ns"));
        idx.applied("ns", info("plain", true, None), now);
        assert!(!idx.has_gated_pods("ns"));
        idx.applied("ns", gated("g", true, None), now);
        idx.applied("ns", gated("g", false, None), now);
        assert!(idx.has_gated_pods("ns") && !idx.has_gated_pods("other"));
        idx.applied("ns", info("g", true, None), now);
        assert!(
            !idx.has_gated_pods("ns"),
            "the gate was dropped from the spec"
        );
        idx.applied("ns", gated("g", true, None), now);
        // Deleted while ready: it drains as a tombstone, which the gate pass skips.
        idx.deleted("ns", gated("g", true, Some(1_000)), now, 2_000);
        assert_eq!(idx.size().0, 2);
        assert!(!idx.has_gated_pods("ns"));
        // The same name again (a StatefulSet pod) counts anew.
        idx.applied("ns", gated("g", true, None), now);
        assert!(idx.has_gated_pods("ns"));
    }

    #[test]
    fn unchanged_projections_are_not_changes() {
        let idx = Index::default();
        let now = Instant::now();
        assert!(idx.applied("ns", info("a", true, None), now).is_some());
        assert!(idx.applied("ns", info("a", true, None), now).is_none());
        assert!(idx.applied("ns", info("a", false, None), now).is_some());
    }

    #[test]
    fn readiness_at_termination_is_carried_over_and_deleted_pods_drain_as_tombstones() {
        let idx = Index::default();
        let now = Instant::now();
        idx.applied("ns", info("a", true, None), now);
        // kubelet turns the terminating pod not ready; it still drains.
        let c = idx
            .applied("ns", info("a", false, Some(1_000)), now)
            .unwrap();
        assert!(c.new.unwrap().ready_at_termination);
        let c = idx
            .deleted("ns", info("a", false, Some(1_000)), now, 2_000)
            .unwrap();
        assert!(
            c.new.as_ref().unwrap().ready_at_termination,
            "tombstone kept for draining"
        );
        assert_eq!(idx.size().0, 1);
        // A pod that was never ready just goes.
        idx.applied("ns", info("b", false, None), now);
        let c = idx
            .deleted("ns", info("b", false, Some(1_000)), now, 2_000)
            .unwrap();
        assert!(c.new.is_none());
        // Tombstones are collected after the longest drain.
        idx.deleted("ns", info("zz", false, None), now, 1_000 + MAX_DRAIN_MS + 1);
        idx.applied("ns", info("c", true, None), now);
        idx.deleted("ns", info("c", true, None), now, 1_000 + MAX_DRAIN_MS + 1);
        assert_eq!(idx.size().0, 0);
        // The resources that counted the dropped tombstone hear of it.
        let purged = idx.take_purged();
        assert_eq!(purged.len(), 1);
        assert_eq!(&*purged[0].old.as_ref().unwrap().name, "a");
        assert!(purged[0].new.is_none());
        assert!(idx.take_purged().is_empty());
    }

    #[test]
    fn relist_removes_pods_that_disappeared_while_the_watch_was_down() {
        let idx = Index::default();
        let now = Instant::now();
        idx.applied("ns", info("a", true, None), now);
        idx.applied("ns", info("b", true, None), now);
        assert!(!idx.synced());
        idx.pods_relist_started(None);
        idx.applied("ns", info("a", true, None), now);
        let gone = idx.relist_done(None, now, 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].old.as_ref().unwrap().name, "b");
        idx.nodes_relist_started();
        idx.nodes_relist_done();
        assert!(!idx.synced(), "services not listed yet");
        idx.services_relist_started(None);
        idx.services_relist_done(None);
        assert!(idx.synced());
    }

    #[test]
    fn watchers_of_several_namespaces_relist_independently() {
        let idx = Index::default();
        idx.expect_pod_scopes(2);
        idx.nodes_relist_started();
        idx.nodes_relist_done();
        for ns in ["a", "b"] {
            idx.services_relist_started(Some(ns));
            idx.services_relist_done(Some(ns));
        }
        let now = Instant::now();
        // Both watchers list at once; "a" finishes first.
        idx.pods_relist_started(Some("a"));
        idx.pods_relist_started(Some("b"));
        idx.applied("a", info("a1", true, None), now);
        idx.applied("b", info("b1", true, None), now);
        assert!(idx.relist_done(Some("a"), now, 0).is_empty());
        assert!(!idx.synced(), "namespace b is not listed yet");
        idx.applied("b", info("b2", true, None), now);
        assert!(
            idx.relist_done(Some("b"), now, 0).is_empty(),
            "nothing is gone: each relist judges only its own namespace"
        );
        assert!(idx.synced());
        // Later "b" relists alone and "b1" vanished meanwhile; "a1" is untouched.
        idx.pods_relist_started(Some("b"));
        idx.applied("b", info("b2", true, None), now);
        let gone = idx.relist_done(Some("b"), now, 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].old.as_ref().unwrap().name, "b1");
        assert_eq!(idx.size().0, 2);
    }
}

#[cfg(test)]
mod routing_tests {
    use super::*;

    fn registration(app: &str, annotations: &[&str]) -> Arc<Registration> {
        let spec = serde_yaml::from_str(&format!(
            "selector: {{matchLabels: {{app: {app}}}}}\nport: 80\nmetadata: {{annotations: {annotations:?}}}"
        ))
        .unwrap();
        Arc::new(Registration::compile("ns", &spec).unwrap())
    }

    fn pod(name: &str, app: &str, ready: bool) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into_iter().collect(),
            annotations: Labels::default(),
            ip: Some("10.0.0.1".into()),
            ports: [].into(),
            node: None,
            ready,
            registered: None,
            host_network: false,
            host_ports: Box::new([]),
            terminating_since_ms: None,
            ready_at_termination: false,
            ready_since_ms: 0,
        }
    }

    fn key(name: &str) -> Key {
        ("ns".into(), name.into())
    }

    #[test]
    fn a_pod_change_wakes_exactly_the_resources_that_select_it_and_marks_it_dirty() {
        let idx = Index::default();
        idx.register("ns", "web", Some(registration("web", &[])));
        idx.register("ns", "api", Some(registration("api", &[])));
        let now = Instant::now();
        assert_eq!(
            idx.apply_pod("ns", pod("w1", "web", true), now),
            vec![key("web")]
        );
        assert_eq!(
            idx.apply_pod("other", pod("w1", "web", true), now),
            Vec::<Key>::new()
        );
        // Unchanged: nobody wakes.
        assert!(idx.apply_pod("ns", pod("w1", "web", true), now).is_empty());
        // Relabelled from web to api: both resources must look at it.
        assert_eq!(
            idx.apply_pod("ns", pod("w1", "api", true), now),
            vec![key("api"), key("web")]
        );
        assert_eq!(idx.take_dirty(&key("web")), ["w1".to_string()].into());
        assert!(idx.take_dirty(&key("web")).is_empty(), "taken once");
        assert_eq!(
            idx.delete_pod("ns", pod("w1", "api", false), now, 0),
            vec![key("api")]
        );
        // A removed registration no longer routes.
        idx.register("ns", "api", None);
        assert!(idx.apply_pod("ns", pod("a2", "api", true), now).is_empty());
    }

    #[test]
    fn new_annotation_keys_ask_for_a_relist_and_node_changes_move_the_epoch() {
        let idx = Index::default();
        let relist = idx.relist_wanted();
        tokio::pin!(relist);
        relist.as_mut().enable();
        idx.register("ns", "web", Some(registration("web", &["team"])));
        assert!(idx.annotation_keys().contains("team"));
        assert!(
            futures::FutureExt::now_or_never(relist).is_some(),
            "a new key wakes the pod watchers"
        );
        let again = idx.relist_wanted();
        tokio::pin!(again);
        again.as_mut().enable();
        idx.register("ns", "api", Some(registration("api", &["team"])));
        assert!(
            futures::FutureExt::now_or_never(again).is_none(),
            "known keys need no relist"
        );
        let e0 = idx.node_epoch();
        let node = NodeInfo {
            zone: None,
            ready: true,
            ..Default::default()
        };
        assert!(idx.apply_node("n1", node.clone()));
        assert!(!idx.apply_node("n1", node));
        assert_eq!(idx.node_epoch(), e0 + 1);
        assert!(idx.delete_node("n1"));
        assert_eq!(idx.node_epoch(), e0 + 2);
    }
}

#[cfg(test)]
mod anchor_tests {
    //! The anchors are an optimisation: routing through them and building from the pods they
    //! give must agree with testing every resource and visiting every pod.
    use super::*;
    use proptest::prelude::*;

    const SELECTORS: [&str; 6] = [
        "{matchLabels: {a: '1'}}",
        "{matchLabels: {a: '1', b: '2'}}",
        "{matchExpressions: [{key: a, operator: In, values: ['1', '2']}]}",
        "{matchExpressions: [{key: b, operator: In, values: ['2']}, {key: a, operator: NotIn, values: ['1']}]}",
        "{matchExpressions: [{key: a, operator: Exists}]}",
        "{matchExpressions: [{key: b, operator: DoesNotExist}]}",
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Register(u8, usize),
        Unregister(u8),
        Apply(u8, Vec<(u8, u8)>, bool),
        Delete(u8, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let labels = prop::collection::vec((0u8..3, 1u8..3), 0..3);
        prop_oneof![
            (0u8..4, 0..SELECTORS.len()).prop_map(|(r, s)| Op::Register(r, s)),
            (0u8..4).prop_map(Op::Unregister),
            (0u8..6, labels, any::<bool>()).prop_map(|(p, l, r)| Op::Apply(p, l, r)),
            (0u8..6, any::<bool>()).prop_map(|(p, t)| Op::Delete(p, t)),
        ]
    }

    fn registration(selector: usize) -> Arc<Registration> {
        let yaml = format!("selector: {}\nport: 80", SELECTORS[selector]);
        let spec = serde_yaml::from_str(&yaml).unwrap();
        Arc::new(Registration::compile("ns", &spec).unwrap())
    }

    fn pod(p: u8, labels: &[(u8, u8)], ready: bool, terminating: bool) -> PodInfo {
        let key = |k: u8| ["a", "b", "c"][k as usize].to_string();
        PodInfo {
            labels: labels
                .iter()
                .map(|(k, v)| (key(*k), v.to_string()))
                .collect(),
            ..super::tests::info(&format!("p{p}"), ready, terminating.then_some(1_000))
        }
    }

    fn registered(idx: &Index) -> Vec<(String, Arc<Registration>)> {
        let inner = idx.inner.read().unwrap();
        let in_ns = inner.routes.registrations.get("ns").into_iter().flatten();
        in_ns.map(|(n, r)| (n.clone(), r.clone())).collect()
    }

    /// The resources that select a pod of the changes (tombstones purged meanwhile included),
    /// by testing each one.
    fn selecting(idx: &Index, change: &Option<PodChange>) -> Vec<Key> {
        let purged = idx.inner.read().unwrap().purged.clone();
        let pods: Vec<PodInfo> = change
            .iter()
            .chain(&purged)
            .flat_map(|c| c.old.iter().chain(&c.new))
            .cloned()
            .collect();
        let mut v: Vec<Key> = registered(idx)
            .into_iter()
            .filter(|(_, r)| pods.iter().any(|p| r.selects(p)))
            .map(|(n, _)| ("ns".to_string(), n))
            .collect();
        v.sort();
        v
    }

    fn names(it: &mut dyn Iterator<Item = &PodEntry>, reg: &Registration) -> BTreeSet<String> {
        it.filter(|e| reg.selects(&e.info))
            .map(|e| e.info.name.to_string())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn anchors_agree_with_testing_everything(ops in prop::collection::vec(op(), 1..40)) {
            let idx = Index::default();
            let now = Instant::now();
            for op in ops {
                let change = match &op {
                    Op::Register(r, s) => {
                        idx.register("ns", &format!("r{r}"), Some(registration(*s)));
                        None
                    }
                    Op::Unregister(r) => {
                        idx.register("ns", &format!("r{r}"), None);
                        None
                    }
                    Op::Apply(p, labels, ready) => {
                        Index::pod_applied(&mut idx.write(), "ns", pod(*p, labels, *ready, false), now)
                    }
                    Op::Delete(p, drains) => {
                        // A ready pod deleted within its drain stays as a tombstone.
                        let info = pod(*p, &[], true, true);
                        let now_ms = if *drains { 2_000 } else { 1_000 + MAX_DRAIN_MS + 1 };
                        Index::pod_deleted(&mut idx.write(), "ns", info, now, now_ms)
                    }
                };
                let expected = selecting(&idx, &change);
                prop_assert_eq!(idx.route(change), expected, "routing after {:?}", op);
                for (name, reg) in registered(&idx) {
                    let anchored = idx.with_selectable("ns", &reg, |pods, _| names(pods, &reg));
                    let all = idx.with_namespace_map("ns", |pods, _| {
                        names(&mut pods.into_iter().flat_map(|p| p.values()).map(|e| &**e), &reg)
                    });
                    prop_assert_eq!(anchored, all, "pods of {} after {:?}", name, op);
                }
            }
        }
    }
}
