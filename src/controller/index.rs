//! The in-memory index of slim pods and nodes, fed by watch events, read by reconciles.
//! Holds projections only (never full objects); knows nothing about ZooKeeper.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::model::pod::{NodeInfo, PodInfo};

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

#[derive(Default)]
struct Inner {
    pods: HashMap<String, HashMap<Box<str>, PodEntry>>,
    nodes: HashMap<String, NodeInfo>,
    /// Per watcher scope (`None`: all namespaces): pods seen since it (re)started listing;
    /// the rest of that scope are gone at InitDone.
    relisting: HashMap<Option<String>, HashSet<(String, Box<str>)>>,
    /// Scopes whose list completed at least once.
    listed: HashSet<Option<String>>,
    /// Tombstones dropped after their drain, not yet reported.
    purged: Vec<PodChange>,
    node_relisting: Option<HashSet<String>>,
    bytes: usize,
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

/// Pods by namespace and name, and nodes by name.
#[derive(Default)]
pub struct Index {
    inner: RwLock<Inner>,
    /// How many pod watchers (scopes) must list before the index counts as synced; 0 means 1.
    pod_scopes: std::sync::atomic::AtomicUsize,
    pods_synced: AtomicBool,
    nodes_synced: AtomicBool,
}

impl Index {
    /// Both the pod and node lists have completed at least once.
    pub fn synced(&self) -> bool {
        self.pods_synced.load(Ordering::Acquire) && self.nodes_synced.load(Ordering::Acquire)
    }

    /// The pods are watched by `n` watchers (one per namespace, or one for all).
    pub fn expect_pod_scopes(&self, n: usize) {
        self.pod_scopes.store(n, Ordering::Release);
    }

    /// A pod was added or modified. Returns the change if the projection differs.
    pub fn apply_pod(&self, namespace: &str, mut info: PodInfo, now: Instant) -> Option<PodChange> {
        let mut inner = self.inner.write().expect("index lock");
        for (scope, seen) in inner.relisting.iter_mut() {
            if scope.as_deref().is_none_or(|s| s == namespace) {
                seen.insert((namespace.to_string(), info.name.clone()));
            }
        }
        let ns = inner.pods.entry(namespace.to_string()).or_default();
        let old = ns.get(&info.name);
        if let Some(old) = old {
            // Readiness at the moment termination began decides whether the pod drains.
            let was_ready = old.info.ready_at_termination
                || (old.info.terminating_since_ms.is_none() && old.info.ready);
            if info.terminating_since_ms.is_some() && was_ready {
                info.ready_at_termination = true;
            }
            if old.info == info && !old.deleted {
                return None;
            }
        }
        let old_info = old.map(|e| e.info.clone());
        let delta = info.memory_bytes() as isize
            - old_info.as_ref().map_or(0, |o| o.memory_bytes() as isize);
        ns.insert(
            info.name.clone(),
            PodEntry {
                info: info.clone(),
                changed_at: now,
                deleted: false,
            },
        );
        inner.bytes = (inner.bytes as isize + delta).max(0) as usize;
        Some(PodChange {
            namespace: namespace.to_string(),
            old: old_info,
            new: Some(info),
        })
    }

    /// A pod was deleted. A pod that was ready when it began terminating stays as a tombstone
    /// until its drain ends.
    pub fn delete_pod(
        &self,
        namespace: &str,
        mut info: PodInfo,
        now: Instant,
        now_ms: i64,
    ) -> Option<PodChange> {
        let mut inner = self.inner.write().expect("index lock");
        let ns = inner.pods.entry(namespace.to_string()).or_default();
        let old = ns.remove(&info.name)?;
        let mut freed = old.info.memory_bytes();
        if old.info.ready_at_termination
            || (old.info.terminating_since_ms.is_none() && old.info.ready)
        {
            info.ready_at_termination = info.terminating_since_ms.is_some();
        }
        let change = if info.ready_at_termination
            && info
                .terminating_since_ms
                .is_some_and(|t| t + MAX_DRAIN_MS > now_ms)
        {
            freed = freed.saturating_sub(info.memory_bytes());
            ns.insert(
                info.name.clone(),
                PodEntry {
                    info: info.clone(),
                    changed_at: now,
                    deleted: true,
                },
            );
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
        Self::gc_tombstones(&mut inner, now_ms);
        Some(change)
    }

    fn gc_tombstones(inner: &mut Inner, now_ms: i64) {
        let mut freed = 0;
        let mut purged = Vec::new();
        for (namespace, ns) in inner.pods.iter_mut() {
            ns.retain(|_, e| {
                let keep = !e.deleted
                    || e.info
                        .terminating_since_ms
                        .is_some_and(|t| t + MAX_DRAIN_MS > now_ms);
                if !keep {
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

    /// Tombstones dropped since the last call (their drain ended long ago): the resources that
    /// counted them must forget them.
    pub fn take_purged(&self) -> Vec<PodChange> {
        std::mem::take(&mut self.inner.write().expect("index lock").purged)
    }

    /// The pod watcher of `scope` (a namespace, or `None` for all) starts a (re)list.
    pub fn pods_relist_started(&self, scope: Option<&str>) {
        self.inner
            .write()
            .expect("index lock")
            .relisting
            .insert(scope.map(str::to_string), HashSet::new());
    }

    /// The (re)list of `scope` finished: its pods not seen are gone. Returns their changes.
    pub fn pods_relist_done(
        &self,
        scope: Option<&str>,
        now: Instant,
        now_ms: i64,
    ) -> Vec<PodChange> {
        let gone: Vec<(String, PodInfo)> = {
            let mut inner = self.inner.write().expect("index lock");
            let key = scope.map(str::to_string);
            let seen = inner.relisting.remove(&key).unwrap_or_default();
            inner.listed.insert(key);
            inner
                .pods
                .iter()
                .filter(|(ns, _)| scope.is_none_or(|s| s == ns.as_str()))
                .flat_map(|(ns, pods)| pods.iter().map(move |(n, e)| (ns, n, e)))
                .filter(|(ns, n, e)| !e.deleted && !seen.contains(&((*ns).clone(), (*n).clone())))
                .map(|(ns, _, e)| (ns.clone(), e.info.clone()))
                .collect()
        };
        let changes = gone
            .into_iter()
            .filter_map(|(ns, info)| self.delete_pod(&ns, info, now, now_ms))
            .collect();
        let listed = self.inner.read().expect("index lock").listed.len();
        if listed >= self.pod_scopes.load(Ordering::Acquire).max(1) {
            self.pods_synced.store(true, Ordering::Release);
        }
        changes
    }

    /// A node was added or modified; true if its projection changed.
    pub fn apply_node(&self, name: &str, info: NodeInfo) -> bool {
        let mut inner = self.inner.write().expect("index lock");
        if let Some(seen) = inner.node_relisting.as_mut() {
            seen.insert(name.to_string());
        }
        inner.nodes.insert(name.to_string(), info.clone()) != Some(info)
    }

    /// A node was deleted.
    pub fn delete_node(&self, name: &str) -> bool {
        self.inner
            .write()
            .expect("index lock")
            .nodes
            .remove(name)
            .is_some()
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
        drop(inner);
        self.nodes_synced.store(true, Ordering::Release);
    }

    /// Runs `f` with the pods of a namespace by name and a node lookup, under the read lock.
    pub fn with_namespace_map<R>(
        &self,
        namespace: &str,
        f: impl FnOnce(Option<&HashMap<Box<str>, PodEntry>>, &HashMap<String, NodeInfo>) -> R,
    ) -> R {
        let inner = self.inner.read().expect("index lock");
        f(inner.pods.get(namespace), &inner.nodes)
    }

    /// (pods held, approximate bytes held).
    pub fn size(&self) -> (usize, usize) {
        let inner = self.inner.read().expect("index lock");
        (inner.pods.values().map(HashMap::len).sum(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::pod::Labels;

    fn info(name: &str, ready: bool, terminating: Option<i64>) -> PodInfo {
        PodInfo {
            name: name.into(),
            labels: Labels::default(),
            annotations: Labels::default(),
            ip: Some("10.0.0.1".into()),
            ports: Box::new([]),
            node: None,
            ready,
            terminating_since_ms: terminating,
            ready_at_termination: false,
        }
    }

    #[test]
    fn unchanged_projections_are_not_changes() {
        let idx = Index::default();
        let now = Instant::now();
        assert!(idx.apply_pod("ns", info("a", true, None), now).is_some());
        assert!(idx.apply_pod("ns", info("a", true, None), now).is_none());
        assert!(idx.apply_pod("ns", info("a", false, None), now).is_some());
    }

    #[test]
    fn readiness_at_termination_is_carried_over_and_deleted_pods_drain_as_tombstones() {
        let idx = Index::default();
        let now = Instant::now();
        idx.apply_pod("ns", info("a", true, None), now);
        // kubelet turns the terminating pod not ready; it still drains.
        let c = idx
            .apply_pod("ns", info("a", false, Some(1_000)), now)
            .unwrap();
        assert!(c.new.unwrap().ready_at_termination);
        let c = idx
            .delete_pod("ns", info("a", false, Some(1_000)), now, 2_000)
            .unwrap();
        assert!(
            c.new.as_ref().unwrap().ready_at_termination,
            "tombstone kept for draining"
        );
        assert_eq!(idx.size().0, 1);
        // A pod that was never ready just goes.
        idx.apply_pod("ns", info("b", false, None), now);
        let c = idx
            .delete_pod("ns", info("b", false, Some(1_000)), now, 2_000)
            .unwrap();
        assert!(c.new.is_none());
        // Tombstones are collected after the longest drain.
        idx.delete_pod("ns", info("zz", false, None), now, 1_000 + MAX_DRAIN_MS + 1);
        idx.apply_pod("ns", info("c", true, None), now);
        idx.delete_pod("ns", info("c", true, None), now, 1_000 + MAX_DRAIN_MS + 1);
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
        idx.apply_pod("ns", info("a", true, None), now);
        idx.apply_pod("ns", info("b", true, None), now);
        assert!(!idx.synced());
        idx.pods_relist_started(None);
        idx.apply_pod("ns", info("a", true, None), now);
        let gone = idx.pods_relist_done(None, now, 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].old.as_ref().unwrap().name, "b");
        idx.nodes_relist_started();
        idx.nodes_relist_done();
        assert!(idx.synced());
    }

    #[test]
    fn watchers_of_several_namespaces_relist_independently() {
        let idx = Index::default();
        idx.expect_pod_scopes(2);
        idx.nodes_relist_started();
        idx.nodes_relist_done();
        let now = Instant::now();
        // Both watchers list at once; "a" finishes first.
        idx.pods_relist_started(Some("a"));
        idx.pods_relist_started(Some("b"));
        idx.apply_pod("a", info("a1", true, None), now);
        idx.apply_pod("b", info("b1", true, None), now);
        assert!(idx.pods_relist_done(Some("a"), now, 0).is_empty());
        assert!(!idx.synced(), "namespace b is not listed yet");
        idx.apply_pod("b", info("b2", true, None), now);
        assert!(
            idx.pods_relist_done(Some("b"), now, 0).is_empty(),
            "nothing is gone: each relist judges only its own namespace"
        );
        assert!(idx.synced());
        // Later "b" relists alone and "b1" vanished meanwhile; "a1" is untouched.
        idx.pods_relist_started(Some("b"));
        idx.apply_pod("b", info("b2", true, None), now);
        let gone = idx.pods_relist_done(Some("b"), now, 0);
        assert_eq!(gone.len(), 1);
        assert_eq!(&*gone[0].old.as_ref().unwrap().name, "b1");
        assert_eq!(idx.size().0, 2);
    }
}
