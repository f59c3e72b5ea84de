//! The comparison: Kubernetes Services selecting the same pods as each ServiceRegistration, and
//! a watch on their EndpointSlices (written by kube-controller-manager's EndpointSlice
//! controller), recording when each pod's `ready` condition changes in a slice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use crate::Shared;

/// The label each configuration gives its pods: `bench-r<R>=<resource index>`.
pub fn config_label(resources: usize) -> String {
    format!("bench-r{resources}")
}

/// A headless Service selecting resource `r` of configuration `resources` (no cluster IP to
/// allocate; the EndpointSlice controller manages its slices all the same).
pub async fn create_service(
    services: &Api<Service>,
    ns: &str,
    name: &str,
    resources: usize,
    r: usize,
) -> anyhow::Result<()> {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": "None",
            "selector": {config_label(resources): r.to_string()},
            "ports": [{"name": "http", "port": 8080, "targetPort": "http"}],
        },
    }))?;
    match services.create(&PostParams::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating Service {name}")),
    }
}

pub async fn delete_service(services: &Api<Service>, name: &str) -> anyhow::Result<()> {
    match services.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting Service {name}")),
    }
}

/// Watches every EndpointSlice of the namespace; records into `Seen::slice` each time a pod's
/// `ready` in a slice differs from what that slice said before (a pod new to a slice counts as
/// a change to its state).
pub fn watch_slices(slices: Api<EndpointSlice>, shared: Arc<Shared>) {
    tokio::spawn(async move {
        // slice name -> pod -> ready, as last seen.
        let mut last: HashMap<String, HashMap<String, bool>> = HashMap::new();
        let cfg = watcher::Config::default().labels("kubernetes.io/service-name");
        let mut stream = watcher::watcher(slices, cfg).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            let slice = match ev {
                Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) => s,
                Ok(Event::Delete(s)) => {
                    last.remove(&s.name_any());
                    continue;
                }
                Ok(_) => continue,
                Err(err) => {
                    eprintln!("EndpointSlice watch error (the watcher retries): {err}");
                    continue;
                }
            };
            let before = last.entry(slice.name_any()).or_default();
            let mut changed = Vec::new();
            let mut now_ready = HashMap::new();
            for ep in slice.endpoints.iter().flatten() {
                let Some(pod) = ep.target_ref.as_ref().and_then(|t| t.name.clone()) else {
                    continue;
                };
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if before.get(&pod) != Some(&ready) {
                    changed.push((pod.clone(), ready));
                }
                now_ready.insert(pod, ready);
            }
            *before = now_ready;
            if changed.is_empty() {
                continue;
            }
            let mut seen = shared.seen.lock().unwrap();
            for (pod, ready) in changed {
                seen.slice_now.insert(pod.clone(), ready);
                seen.slice.entry(pod).or_default().push((ready, now));
            }
            drop(seen);
            shared.changed.notify_waiters();
        }
    });
}
