//! Pod, node and Service watches that feed the index and trigger the resources a change
//! concerns.
//! Event-driven: a readiness change becomes a reconcile trigger within microseconds.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};

use super::Context;
use crate::model::address::ServiceInfo;
use crate::model::pod::{NodeInfo, PodInfo};
use crate::model::pod_wire::PodWire;

/// Watches pods (all namespaces, or one) until the process ends; restarts the list when the
/// set of annotations worth keeping grows. Pods are read as [`PodWire`]: only the fields the
/// projection needs are parsed.
pub async fn pods(ctx: Arc<Context>, api: Api<PodWire>, scope: Option<String>) {
    // Each namespace's watcher reports its own health.
    let name = scope
        .as_deref()
        .map_or_else(|| "pods".to_string(), |ns| format!("pods in {ns}"));
    loop {
        let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
        let relist = ctx.index.relist_wanted();
        tokio::pin!(relist);
        loop {
            tokio::select! {
                _ = &mut relist => {
                    tracing::info!("annotation keys changed; re-listing pods");
                    break;
                }
                ev = stream.next() => match ev {
                    None => break,
                    Some(Err(err)) => {
                        ctx.set_watch_error(&name, Some(err.to_string()));
                        tracing::warn!(%err, "pod watch error; the watcher retries");
                        // The watcher's own backoff paces retries.
                    }
                    Some(Ok(ev)) => {
                        ctx.set_watch_error(&name, None);
                        handle_pod_event(&ctx, ev, scope.as_deref());
                    }
                }
            }
        }
    }
}

fn handle_pod_event(ctx: &Arc<Context>, ev: Event<PodWire>, scope: Option<&str>) {
    let now = Instant::now();
    let keys = ctx.index.annotation_keys();
    let filter = |k: &str| k.starts_with("podkeeper.io/") || keys.contains(k);
    let project = |pod: &PodWire| {
        (
            pod.namespace().unwrap_or_default(),
            PodInfo::from_pod(pod, &filter),
        )
    };
    let wake = match ev {
        Event::Init => {
            ctx.index.pods_relist_started(scope);
            Vec::new()
        }
        Event::InitApply(pod) | Event::Apply(pod) => {
            tracing::trace!(target: "podkeeper::timeline", pod = %pod.name_any(), "pod event");
            let (ns, info) = project(&pod);
            ctx.index.apply_pod(&ns, info, now)
        }
        Event::Delete(pod) => {
            let (ns, info) = project(&pod);
            ctx.index.delete_pod(&ns, info, now, crate::now_ms())
        }
        Event::InitDone => {
            let wake = ctx.index.pods_relist_done(scope, now, crate::now_ms());
            let pods = ctx.index.size().0;
            tracing::info!(pods, "pod list complete");
            crate::metrics::get().pod_lists_completed.inc();
            super::release::after_peak();
            ctx.reconcile_all();
            wake
        }
    };
    super::fast::wake(ctx, wake);
    let (n, bytes) = ctx.index.size();
    let m = crate::metrics::get();
    m.pods_indexed.set(n as i64);
    m.pod_index_bytes.set(bytes as i64);
}

/// Watches nodes for readiness and zone.
pub async fn nodes(ctx: Arc<Context>, api: Api<Node>) {
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Err(err) => {
                ctx.set_watch_error("nodes", Some(err.to_string()));
                tracing::warn!(%err, "node watch error; the watcher retries");
            }
            Ok(ev) => {
                ctx.set_watch_error("nodes", None);
                let changed = match ev {
                    Event::Init => {
                        ctx.index.nodes_relist_started();
                        false
                    }
                    Event::InitApply(n) | Event::Apply(n) => {
                        ctx.index.apply_node(&n.name_any(), NodeInfo::from_node(&n))
                    }
                    Event::Delete(n) => ctx.index.delete_node(&n.name_any()),
                    Event::InitDone => {
                        ctx.index.nodes_relist_done();
                        true
                    }
                };
                if changed {
                    // Every record may change (zone, node readiness); the index moved its epoch.
                    ctx.reconcile_all();
                }
            }
        }
    }
}

/// Watches Services for the node ports of NodePort addresses. Only the slim projection is
/// kept, and a change wakes only the resources whose `spec.address.service` names it.
pub async fn services(ctx: Arc<Context>, api: Api<Service>, scope: Option<String>) {
    let name = scope
        .as_deref()
        .map_or_else(|| "services".to_string(), |ns| format!("services in {ns}"));
    let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
    while let Some(ev) = stream.next().await {
        let ev = match ev {
            Err(err) => {
                ctx.set_watch_error(&name, Some(err.to_string()));
                tracing::warn!(%err, "service watch error; the watcher retries");
                continue;
            }
            Ok(ev) => ev,
        };
        ctx.set_watch_error(&name, None);
        let idx = &ctx.index;
        let wake = match ev {
            Event::Init => {
                idx.services_relist_started(scope.as_deref());
                Vec::new()
            }
            Event::InitApply(s) | Event::Apply(s) => {
                let info = Some(ServiceInfo::from_service(&s));
                idx.apply_service(&s.namespace().unwrap_or_default(), &s.name_any(), info)
            }
            Event::Delete(s) => {
                idx.apply_service(&s.namespace().unwrap_or_default(), &s.name_any(), None)
            }
            Event::InitDone => {
                let wake = idx.services_relist_done(scope.as_deref());
                ctx.reconcile_all();
                wake
            }
        };
        ctx.wake(&wake);
    }
}
