//! The routing from a pod change to the resources that select it: the compiled registrations,
//! their anchors, the annotation keys they read and the pods each has not seen yet.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::super::anchors::Anchors;
use super::{Index, Key, PodChange};
use crate::model::registration::Registration;

/// Which resources select which pods, and what each has not seen yet.
#[derive(Default)]
pub(super) struct Routes {
    /// Compiled registrations by namespace and name.
    pub(super) registrations: HashMap<String, HashMap<String, Arc<Registration>>>,
    /// Per namespace: pods and registrations by the labels their selectors anchor on.
    pub(super) anchors: HashMap<String, Anchors>,
    /// Annotation keys some registration reads; the pod projection keeps only these.
    pub(super) annotation_keys: Arc<BTreeSet<String>>,
    /// Pods changed since each resource's last reconcile (only those records are rebuilt).
    pub(super) dirty: HashMap<Key, HashSet<String>>,
    /// Increases with every node change (zone or readiness): every record must be rebuilt.
    pub(super) node_epoch: u64,
}

impl Routes {
    /// Marks the pod dirty for every resource that selects it before or after the change, and
    /// returns those resources. Only the resources anchored on one of its labels are tested.
    pub(super) fn route(&mut self, change: &PodChange) -> Vec<Key> {
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

impl Index {
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
}
