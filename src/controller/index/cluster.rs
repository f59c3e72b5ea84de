//! Nodes and Services, the two other objects a record is built from: a node change moves the
//! node epoch, a Service change wakes the resources that read its node ports.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::routes::Routes;
use super::{Index, Key};
use crate::model::address::ServiceInfo;
use crate::model::pod::NodeInfo;

impl Index {
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

    pub(super) fn reading_service(routes: &Routes, namespace: &str, name: &str) -> Vec<Key> {
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
}
