//! The pod store: slim pods applied, deleted, drained as tombstones and re-listed, each change
//! handed to the routing. Knows nothing of ZooKeeper or of the resources' specs.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::{Index, Inner, Key, MAX_DRAIN_MS, PodChange, PodEntry};
use crate::model::pod::PodInfo;

impl Index {
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

    pub(super) fn pod_applied(
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

    pub(super) fn pod_deleted(
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

    pub(super) fn count_gated(inner: &mut Inner, namespace: &str, was: bool, is: bool) {
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

    pub(super) fn gc_tombstones(inner: &mut Inner, now_ms: i64) {
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

    pub(super) fn relist_done(
        &self,
        scope: Option<&str>,
        now: Instant,
        now_ms: i64,
    ) -> Vec<PodChange> {
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
}
