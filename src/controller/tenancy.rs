//! The RegistryPolicies in force, kept from a watch: every change re-reconciles every resource
//! (a grant can admit a refused one, a revocation withdraw a published one). Until the first
//! list is complete nothing is reconciled: acting on no policies would withdraw what they grant.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use super::Context;
use crate::crd::{RegistryPolicy, RegistryPolicySpec};
use crate::model::pod::Labels;
use crate::model::tenancy::Tenancy;

/// Every RegistryPolicy, by name.
type Listed = Arc<Vec<(String, RegistryPolicySpec)>>;

/// The policies by name, once listed, and every namespace's labels (for their selectors).
#[derive(Default)]
pub struct Policies {
    listed: RwLock<Option<Listed>>,
    labels: RwLock<Option<HashMap<String, Labels>>>,
}

impl Policies {
    /// Whether the first lists of both are complete.
    pub fn synced(&self) -> bool {
        self.listed.read().expect("policies lock").is_some()
            && self.labels.read().expect("labels lock").is_some()
    }

    /// The labels of namespace `ns` (none while unknown).
    pub fn labels_of(&self, ns: &str) -> Labels {
        let labels = self.labels.read().expect("labels lock");
        labels
            .as_ref()
            .and_then(|l| l.get(ns).cloned())
            .unwrap_or_default()
    }

    /// What namespaces may publish under `settings` (`None` until listed).
    pub fn tenancy(&self, settings: &super::Settings) -> Option<Tenancy> {
        let listed = self.listed.read().expect("policies lock").clone()?;
        Some(Tenancy {
            home: settings.home_prefix().to_string(),
            cluster_domain: settings.cluster_domain.clone(),
            policies: listed.as_ref().clone(),
        })
    }

    /// Policies already listed (for tests).
    #[cfg(test)]
    pub fn listed(list: Vec<(String, RegistryPolicySpec)>) -> Policies {
        Policies {
            listed: RwLock::new(Some(Arc::new(list))),
            labels: RwLock::new(Some(HashMap::new())),
        }
    }

    fn set(&self, policies: &BTreeMap<String, RegistryPolicySpec>) {
        let list = policies
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        *self.listed.write().expect("policies lock") = Some(Arc::new(list));
    }
}

/// Watches RegistryPolicies until the process ends.
pub async fn watch(ctx: Arc<Context>, api: Api<RegistryPolicy>) {
    const NAME: &str = "registrypolicies";
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    let (mut listing, mut current) = (BTreeMap::new(), BTreeMap::new());
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(err) => {
                let why =
                    format!("{err} (is the RegistryPolicy CRD installed? kubectl apply -f crds/)");
                tracing::warn!(%why, "RegistryPolicy watch error; the watcher retries");
                ctx.set_watch_error(NAME, Some(why));
                continue;
            }
        };
        ctx.set_watch_error(NAME, None);
        match ev {
            Event::Init => listing.clear(),
            Event::InitApply(p) => {
                listing.insert(p.name_any(), p.spec);
            }
            Event::InitDone => {
                current = std::mem::take(&mut listing);
                publish(&ctx, &current);
            }
            Event::Apply(p) => {
                current.insert(p.name_any(), p.spec);
                publish(&ctx, &current);
            }
            Event::Delete(p) => {
                current.remove(&p.name_any());
                publish(&ctx, &current);
            }
        }
    }
}

/// Watches the namespaces' labels (metadata only) until the process ends. A change of a known
/// namespace's labels re-reconciles every resource (a selector may grant or revoke); a new
/// namespace has no resources yet.
pub async fn watch_namespaces(ctx: Arc<Context>, api: Api<PartialObjectMeta<Namespace>>) {
    const NAME: &str = "namespaces";
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    let mut listing: HashMap<String, Labels> = HashMap::new();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Ok(ev) => ev,
            Err(err) => {
                tracing::warn!(%err, "namespace watch error; the watcher retries");
                ctx.set_watch_error(NAME, Some(err.to_string()));
                continue;
            }
        };
        ctx.set_watch_error(NAME, None);
        let labels_of = |m: &PartialObjectMeta<Namespace>| -> Labels {
            // The kube-system namespace's uid marks this Kubernetes cluster on every ensemble.
            if m.name_any() == "kube-system"
                && let Some(uid) = m.uid()
            {
                ctx.fencer.set_marker(&uid);
            }
            m.labels()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        match ev {
            Event::Init => listing.clear(),
            Event::InitApply(m) => {
                listing.insert(m.name_any(), labels_of(&m));
            }
            Event::InitDone => {
                let all = std::mem::take(&mut listing);
                *ctx.policies.labels.write().expect("labels lock") = Some(all);
                ctx.reconcile_all();
            }
            Event::Apply(m) => {
                let labels = labels_of(&m);
                let mut known = ctx.policies.labels.write().expect("labels lock");
                let map = known.get_or_insert_with(HashMap::new);
                let before = map.insert(m.name_any(), labels.clone());
                drop(known);
                if before.is_some_and(|b| b != labels) {
                    ctx.reconcile_all();
                }
            }
            Event::Delete(m) => {
                if let Some(map) = ctx.policies.labels.write().expect("labels lock").as_mut() {
                    map.remove(&m.name_any());
                }
            }
        }
    }
}

fn publish(ctx: &Context, policies: &BTreeMap<String, RegistryPolicySpec>) {
    tracing::info!(
        policies = policies.len(),
        "RegistryPolicies changed; reconciling every resource"
    );
    ctx.policies.set(policies);
    ctx.reconcile_all();
}
