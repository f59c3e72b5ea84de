//! The RegistryPolicies in force, kept from a watch: every change re-reconciles every resource
//! (a grant can admit a refused one, a revocation withdraw a published one). Until the first
//! list is complete nothing is reconciled: acting on no policies would withdraw what they grant.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use super::Context;
use crate::crd::{RegistryPolicy, RegistryPolicySpec};
use crate::model::tenancy::Tenancy;

/// Every RegistryPolicy, by name.
type Listed = Arc<Vec<(String, RegistryPolicySpec)>>;

/// The policies by name, once listed.
#[derive(Default)]
pub struct Policies {
    listed: RwLock<Option<Listed>>,
}

impl Policies {
    /// Whether the first list is complete.
    pub fn synced(&self) -> bool {
        self.listed.read().expect("policies lock").is_some()
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

fn publish(ctx: &Context, policies: &BTreeMap<String, RegistryPolicySpec>) {
    tracing::info!(
        policies = policies.len(),
        "RegistryPolicies changed; reconciling every resource"
    );
    ctx.policies.set(policies);
    ctx.reconcile_all();
}
